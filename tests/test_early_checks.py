"""A text holding the tokenizer's EOS is found as each stage reads its file, before any model work:
real CLI runs of sft, ref-logps and dpo on a tiny model built by the base-model stage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from processes import run_in_process

pytestmark = pytest.mark.slow  # trains and scores with the stages

EOS_TEXT = "I'm not able to assist with that.</s> Sure, here is how."
PROMPTS = ["How do I pick a lock?", "Tell me a joke.", "How to cook rice?", "Where is Paris?"]
# Short settings: one optimizer step on a ~10k-parameter model.
SHORT = ["--max-length", "64", "--max-prompt-length", "32", "--n-epochs", "1", "--max-steps", "1"]
BATCH = ["--batch-size", "2", "--gradient-accumulation-steps", "1"]


def cli(*args) -> subprocess.CompletedProcess:
    """The command line, run in this process: what is tested is each stage's checks and messages,
    not the process around it."""
    return run_in_process(args)


def pairs_frame(eos_row: int | None) -> pl.DataFrame:
    """Six pairs (source_row 10..15); the chosen response of `eos_row` holds the EOS text."""
    rows = [
        (10 + i, PROMPTS[i % 4], f"I'm sorry, I can't help ({i}).", f"Sure, step {i} is easy.")
        for i in range(6)
    ]
    frame = pl.DataFrame(rows, schema=["source_row", "prompt", "chosen", "rejected"], orient="row")
    return frame.with_columns(
        pl.when(pl.col("source_row").is_in([] if eos_row is None else [eos_row]))
        .then(pl.lit(EOS_TEXT))
        .otherwise(pl.col("chosen"))
        .alias("chosen")
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Pairs and SFT targets with one EOS text each (source_row 13), clean pairs, a tiny model."""
    root = tmp_path_factory.mktemp("eos")
    paths = {name: root / f"{name}.parquet" for name in ("pairs", "clean", "sft")}
    pairs_frame(13).write_parquet(paths["pairs"])
    pairs_frame(None).write_parquet(paths["clean"])
    pairs_frame(13).select(
        "source_row", "prompt", pl.col("chosen").alias("response")
    ).write_parquet(paths["sft"])
    model = root / "model"
    tiny = ["--vocab-size", "300", "--hidden-size", "8", "--intermediate-size", "16"]
    tiny += ["--num-layers", "1", "--num-heads", "2", "--max-position-embeddings", "128"]
    built = cli("base-model", "--pairs", paths["pairs"], "--sft", paths["sft"], "--out-dir", model)
    assert built.returncode == 0, built.stderr
    return {**paths, "model": model, "root": root}


def assert_refused(result: subprocess.CompletedProcess, path: Path, column: str) -> None:
    """Exit 2 and one error line naming file, source_row and column."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}: source_row 13, column {column}: text contains the EOS token '</s>': "
        f"{EOS_TEXT!r} (1 row(s) in this file; set data.on_malformed: drop to drop and count "
        "them instead)"
    ], result.stderr
    assert "Traceback" not in result.stderr


def sft(data, out: Path, *flags) -> subprocess.CompletedProcess:
    return cli(
        "sft", "--data", data["sft"], "--model", data["model"], "--out-dir", out / "sft",
        "--state-dir", out / "state", *SHORT, *BATCH, *flags,
    )  # fmt: skip


def ref_logps(data, pairs: Path, out: Path, *flags) -> subprocess.CompletedProcess:
    return cli(
        "ref-logps", "--model", data["model"], "--pairs", pairs, "--out", out,
        "--max-length", "64", "--max-prompt-length", "32", "--batch-size", "4", *flags,
    )  # fmt: skip


def test_sft_refuses_an_eos_text_before_training(data, tmp_path):
    assert_refused(sft(data, tmp_path), data["sft"], "response")
    assert not (tmp_path / "state").exists() and not (tmp_path / "sft").exists()


def test_sft_drops_and_counts_an_eos_text_when_told(data, tmp_path):
    result = sft(data, tmp_path, "--on-malformed", "drop")
    assert result.returncode == 0, result.stderr
    assert (
        f"{data['sft']}: dropped 1 row(s) whose text contains the EOS token '</s>' "
        "(data.on_malformed: drop): source_row 13"
    ) in result.stdout
    record = json.loads((tmp_path / "sft" / "amber_repro.json").read_text())
    assert record["settings"]["on_malformed"] == "drop"
    assert record["rows_dropped"] == {"text contains EOS": 1}


def test_ref_logps_refuses_an_eos_text_before_any_forward_pass(data, tmp_path):
    out = tmp_path / "train.parquet"
    assert_refused(ref_logps(data, data["pairs"], out), data["pairs"], "chosen")
    assert list(tmp_path.iterdir()) == []


def test_ref_logps_and_dpo_drop_the_same_pairs(data, tmp_path):
    """DPO joins the reference log-probs by source_row: both stages must drop row 13."""
    train, test = tmp_path / "ref-train.parquet", tmp_path / "ref-test.parquet"
    result = ref_logps(data, data["pairs"], train, "--on-malformed", "drop")
    assert result.returncode == 0, result.stderr
    assert f"5 pairs from {data['pairs']} (1 dropped: text contains EOS)" in result.stdout
    record = json.loads(train.with_suffix(".json").read_text())
    assert record["pairs_dropped"] == {"text contains EOS": 1} and record["pairs"] == 5
    assert pl.read_parquet(train)["source_row"].to_list() == [10, 11, 12, 14, 15]
    assert ref_logps(data, data["clean"], test).returncode == 0

    dpo = [
        "dpo", "--model", data["model"], "--pairs", data["pairs"], "--ref-logps", train,
        "--eval-pairs", data["clean"], "--eval-ref-logps", test, "--out-dir", tmp_path / "dpo",
        "--state-dir", tmp_path / "state", *SHORT, *BATCH, "--eval-examples", "2",
        "--eval-batch-size", "2",
    ]  # fmt: skip
    assert_refused(cli(*dpo), data["pairs"], "chosen")
    assert not (tmp_path / "state").exists()
    result = cli(*dpo, "--on-malformed", "drop")
    assert result.returncode == 0, result.stderr
    assert "dropped 1 row(s) whose text contains the EOS token" in result.stdout
    assert (tmp_path / "dpo" / "model.safetensors").exists()
    record = json.loads((tmp_path / "dpo" / "amber_repro.json").read_text())
    assert record["pairs_dropped"] == {str(data["pairs"]): 1, str(data["clean"]): 0}

    # The evaluation scores the same pairs: refused by default, dropped when told.
    evaluate = [
        "eval", f"--model=dpo={tmp_path / 'dpo'}", "--pairs", data["pairs"], "--ref-logps", train,
        "--max-length", "64", "--max-prompt-length", "32", "--bootstrap-iters", "0",
        "--work-dir", tmp_path / "eval_work", "--out", tmp_path / "eval.json",
    ]  # fmt: skip
    assert_refused(cli(*evaluate), data["pairs"], "chosen")
    result = cli(*evaluate, "--on-malformed", "drop")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["pairs_dropped"] == {"text contains EOS": 1}
    assert report["dpo_rewards"]["pairs"] == 5
    assert report["models"]["dpo"]["tasks"]["saferlhf_preference"]["samples"] == 5


def test_one_ref_logps_process_scores_several_splits_as_separate_runs_do(data, tmp_path):
    """The workflow scores train and test in one process (one model load): each output must equal
    a run on that split alone, with its own record; an EOS text in the second split stops the
    run before the first split's output is written."""
    alone = {name: tmp_path / f"alone-{name}.parquet" for name in ("clean", "pairs")}
    assert ref_logps(data, data["clean"], alone["clean"]).returncode == 0
    flags = ["--on-malformed", "drop"]
    assert ref_logps(data, data["pairs"], alone["pairs"], *flags).returncode == 0
    together = [tmp_path / "together-clean.parquet", tmp_path / "together-pairs.parquet"]
    result = cli(
        "ref-logps", "--model", data["model"], "--pairs", data["clean"], data["pairs"],
        "--out", *together, "--max-length", "64", "--max-prompt-length", "32",
        "--batch-size", "4", *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name, out in zip(("clean", "pairs"), together, strict=True):
        assert pl.read_parquet(out).equals(pl.read_parquet(alone[name])), name
        record = json.loads(out.with_suffix(".json").read_text())
        other = data["pairs" if name == "clean" else "clean"]
        assert str(data[name]) in record["inputs"] and str(other) not in record["inputs"]
        assert record["outputs"] == {str(out): record["outputs"][str(out)]}
    assert json.loads(together[1].with_suffix(".json").read_text())["pairs"] == 5

    refused = tmp_path / "refused"
    result = cli(
        "ref-logps", "--model", data["model"], "--pairs", data["clean"], data["pairs"],
        "--out", refused / "clean.parquet", refused / "pairs.parquet",
    )  # fmt: skip
    assert_refused(result, data["pairs"], "chosen")
    assert not refused.exists()

    mismatched = cli("ref-logps", "--model", data["model"], "--pairs", data["clean"], data["pairs"],
                     "--out", tmp_path / "one.parquet")  # fmt: skip
    assert mismatched.returncode != 0
    assert "2 --pairs file(s) but 1 --out file(s)" in mismatched.stderr
