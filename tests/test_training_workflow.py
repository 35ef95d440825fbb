"""The training stages as Snakemake builds them on the embedded default."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

CHECKPOINTS = ["results/base_model", "results/ambersafe/sft", "results/ambersafe/dpo"]


@pytest.mark.parametrize("folder", CHECKPOINTS)
def test_each_checkpoint_loads_as_saved(pipeline, folder):
    path = pipeline.path / folder
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert model.config.model_type == "llama" and tokenizer.eos_token == "</s>"
    assert (path / "model.safetensors").exists() and not list(path.glob("*.bin"))
    assert (path / "generation_config.json").exists()
    card = (path / "README.md").read_text()
    assert card.startswith("---\n") and "base_model:" in card
    record = json.loads((path / "amber_repro.json").read_text())
    assert record["software"]["torch"].startswith("2.13.0") and record["weights_sha256"]


def held_out_steps(config: dict, stage: str, last: int) -> list[int]:
    """The steps the reference evaluates at (before step 1, every eval_every examples), and ours
    after the last step."""
    every = config[stage]["eval_every"] // config[stage]["batch_size"]
    return sorted({0, *range(every, last + 1, every), last})


def test_sft_logs_per_step_metrics_held_out_loss_and_tensorboard(pipeline):
    sft = pipeline.path / "results/ambersafe/sft"
    rows = [json.loads(line) for line in (sft / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(len(rows)))
    # Step 0: the held-out evaluation before the first step (the reference's do_first_eval).
    assert set(rows[0]) == {"step", "eval/loss", "eval/logps"}
    assert {"loss", "grad_norm", "lr"} <= set(rows[1])
    assert rows[-1]["loss"] < rows[1]["loss"]
    evaluated = [r["step"] for r in rows if "eval/loss" in r]
    assert evaluated == held_out_steps(pipeline.config, "sft", rows[-1]["step"])
    assert rows[-1]["eval/loss"] < rows[0]["eval/loss"]  # it learnt something that generalises
    assert list((sft / "tensorboard").glob("events.out.tfevents.*"))
    card = (sft / "README.md").read_text()
    assert "sft-train.parquet" in card and "| lr |" in card and "| n_epochs |" in card
    assert "eval/loss" in card  # the final weights' held-out loss


def test_dpo_logs_the_reference_metrics_and_learns_the_held_out_preference(pipeline):
    dpo = pipeline.path / "results/ambersafe/dpo"
    rows = [json.loads(line) for line in (dpo / "metrics.jsonl").read_text().splitlines()]
    expected = {
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "lr",
    }
    assert expected <= set(rows[1])
    # Before the first step the policy is the reference: loss log 2, rewards 0.
    first = rows[0]
    assert first["step"] == 0 and "loss" not in first
    assert first["eval/loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert abs(first["eval/rewards/margins"]) < 1e-4
    evaluated = [r["step"] for r in rows if "eval/rewards/accuracies" in r]
    assert evaluated == held_out_steps(pipeline.config, "dpo", rows[-1]["step"])
    assert {f"eval/{k}" for k in ("loss", "rewards/accuracies", "rewards/margins")} <= set(rows[-1])
    assert rows[-1]["eval/rewards/accuracies"] > 0.8
    assert rows[-1]["eval/rewards/margins"] > 0


def test_reference_logps_cover_every_pair_once(pipeline):
    for split in ("train", "test"):
        pairs = pl.read_parquet(pipeline.path / f"results/ambersafe/data/pairs-{split}.parquet")
        ref = pl.read_parquet(pipeline.path / f"results/ambersafe/ref_logps/{split}.parquet")
        assert ref["source_row"].to_list() == pairs["source_row"].to_list()
        assert (
            ref["reference_chosen_logps"].is_finite().all()
            and (ref["reference_chosen_logps"] < 0).all()
        )


def test_finished_runs_leave_no_resumable_state(pipeline):
    state = pipeline.path / "results/ambersafe/.state"
    assert not (state / "sft").exists() and not (state / "dpo").exists()
