"""The report's evaluation table: rendered from eval.json with every name escaped."""

from __future__ import annotations

from lxml import html as lxml_html

from amber_repro.evaluation.plots import eval_table
from amber_repro.storage import write_json

SCRIPT = "<script>alert(1)</script>"


def test_names_from_the_config_come_out_escaped_and_the_numbers_stay(tmp_path):
    report = {
        "models": {
            "sft": {
                "tasks": {
                    SCRIPT: {"acc": 0.75, "acc_stderr": 0.0123, "num_fewshot": 0},
                    "gsm8k": {
                        "exact_match/strict-match": 0.0531,
                        "exact_match_stderr/strict-match": 0.0062,
                        "exact_match/flexible-extract": 0.06,
                        "num_fewshot": 5,
                    },
                }
            },
            "dpo & <b>co</b>": {
                "tasks": {
                    "arc_challenge": {
                        "acc": 0.5,
                        "acc_norm": 0.25,
                        "acc_norm_stderr": 0.01,
                        "num_fewshot": 25,
                    }
                }
            },
        },
        "dpo_rewards": {"rewards/accuracies": 0.875, f"rewards/{SCRIPT}": 1.0, "loss": 3.0},
    }
    write_json(tmp_path / "eval.json", report)
    eval_table(tmp_path / "eval.json", tmp_path / "eval_table.html")
    text = (tmp_path / "eval_table.html").read_text()
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "dpo &amp; &lt;b&gt;co&lt;/b&gt;" in text

    tree = lxml_html.fromstring(text)
    assert not tree.xpath("//script|//b")
    # (write_json sorts keys: the dpo model comes first)
    rows = [[cell.text_content() for cell in row.xpath("th|td")] for row in tree.xpath("//tr")]
    assert rows == [
        ["model", "task", "shots", "acc", "acc_norm", "exact_match/strict-match"],
        [
            "dpo & <b>co</b>",
            "arc_challenge",
            "25",
            "0.5000 \u00b1 0.0000",
            "0.2500 \u00b1 0.0100",
            "",
        ],
        ["sft", SCRIPT, "0", "0.7500 \u00b1 0.0123", "", ""],
        ["sft", "gsm8k", "5", "", "", "0.0531 \u00b1 0.0062"],
    ]
    rewards = tree.xpath("//p")[0].text_content()
    assert rewards == (
        f"DPO implicit rewards on the held-out pairs: rewards/{SCRIPT} 1.0000, "
        "rewards/accuracies 0.8750"
    )


def test_no_rewards_line_without_dpo_rewards(tmp_path):
    write_json(tmp_path / "eval.json", {"models": {"base": {"tasks": {"t": {"acc": 1.0}}}}})
    eval_table(tmp_path / "eval.json", tmp_path / "eval_table.html")
    text = (tmp_path / "eval_table.html").read_text()
    assert "<td>1.0000 &plusmn; 0.0000</td>" in text and "<p>" not in text
