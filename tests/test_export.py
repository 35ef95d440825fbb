"""The model card (huggingface_hub's ModelCard) and the final save_pretrained folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from amber_repro.models.export import model_card, write_model_dir
from amber_repro.storage import read_json

AWKWARD = {
    "lr": 1e-6,
    "n_epochs": 2,
    "pipe": "a|b",
    "tick": "x`y",
    "edge": "`start",
    "list": [1, 2],
    "multi\nline": "one\ntwo",
}


class FakeModel:
    def state_dict(self) -> dict:
        return {}

    def save_pretrained(self, folder: Path, state_dict=None) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"weights")
        (Path(folder) / "config.json").write_text("{}")


class FakeTokenizer:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "tokenizer.json").write_text("{}")


def card(base_model: str = "results/ambersafe/sft", settings: dict | None = None) -> str:
    return model_card(
        "AmberSafe DPO (amber-repro)",
        "A summary.",
        base_model,
        data={"pairs": Path("results/ambersafe/data/pairs-train.parquet"), "sha256": "ab12"},
        settings=AWKWARD if settings is None else settings,
        results={"final loss": 0.123456, "optimizer steps": 7, "none": None},
    )


def table(html: str, heading: str) -> list[list[str]]:
    """The rows (cells as rendered text) of the table after `heading` in the rendered Markdown."""
    from lxml import html as lxml_html

    tree = lxml_html.fromstring(html)
    rows = tree.xpath(f"//h2[text()='{heading}']/following-sibling::table[1]//tr")
    return [[cell.text_content() for cell in row.xpath("th|td")] for row in rows]


def test_the_written_card_loads_with_its_metadata(tmp_path):
    out = tmp_path / "dpo"
    write_model_dir(FakeModel(), FakeTokenizer(), out, card(), {"stage": "dpo"})
    loaded = ModelCard.load(out / "README.md")
    assert loaded.data.library_name == "transformers"
    assert loaded.data.pipeline_tag == "text-generation"
    assert loaded.data.tags == ["amber-repro", "llama"]
    # A local path is not a Hub model id: named in the body, kept out of the metadata.
    assert loaded.data.base_model is None
    assert "- base_model: `results/ambersafe/sft`" in loaded.text
    assert "# AmberSafe DPO (amber-repro)" in loaded.text and "A summary." in loaded.text
    assert "- pairs: `results/ambersafe/data/pairs-train.parquet`" in loaded.text
    assert "`amber_repro.json` beside this card" in loaded.text
    assert read_json(out / "amber_repro.json")["weights_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dpo"]


@pytest.mark.parametrize(
    "base_model, expected",
    [
        ("LLM360/AmberChat", "LLM360/AmberChat"),
        ("none (built from a LlamaConfig)", None),
        ("results/base_model (base-model)", None),
    ],
)
def test_base_model_metadata_only_for_hub_ids(base_model, expected):
    loaded = ModelCard(card(base_model))
    assert loaded.data.base_model == expected
    assert f"- base_model: `{base_model}`" in loaded.text


def test_an_existing_local_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("results/base_model").mkdir(parents=True)  # reads like "namespace/name", but is local
    assert ModelCard(card("results/base_model")).data.base_model is None


def test_pipes_and_backticks_do_not_break_the_settings_table():
    html = MarkdownIt("commonmark").enable("table").render(ModelCard(card()).text)
    rows = table(html, "Settings")
    assert rows[0] == ["setting", "value"]
    assert rows[1:] == [
        ["lr", "1e-06"],
        ["n_epochs", "2"],
        ["pipe", "a|b"],
        ["tick", "x`y"],
        ["edge", "`start"],
        ["list", "[1, 2]"],
        ["multi line", "one two"],
    ]
    assert table(html, "Results")[1:] == [
        ["final loss", "0.1235"],
        ["optimizer steps", "7"],
        ["none", "None"],
    ]
    text = ModelCard(card()).text
    assert "| lr |" in text and "| n_epochs |" in text  # what the workflow test looks for


def test_a_failed_write_keeps_the_previous_folder(tmp_path):
    out = tmp_path / "sft"
    write_model_dir(FakeModel(), FakeTokenizer(), out, card(), {"stage": "sft", "attempt": 1})
    with pytest.raises(FileNotFoundError):
        write_model_dir(
            FakeModel(),
            FakeTokenizer(),
            out,
            card(),
            {"stage": "sft", "attempt": 2},
            extra={"metrics.jsonl": tmp_path / "missing.jsonl"},
        )
    assert read_json(out / "amber_repro.json")["attempt"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]
    write_model_dir(FakeModel(), FakeTokenizer(), out, card(), {"stage": "sft", "attempt": 3})
    assert read_json(out / "amber_repro.json")["attempt"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]
