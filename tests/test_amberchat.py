"""AmberChat (Amber -> AmberChat): the Trainer's schedule, optimizer and loss, resume after SIGKILL,
the embedded chain end to end, and the one DAG Amber -> AmberChat -> AmberSafe."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import Workdir, scheduled_jobs
from test_resume import run, same_weights, start_and_signal_after_first_checkpoint

from amber_repro.training.chat_sft import (
    build_optimizer,
    build_scheduler,
    token_mean_loss,
    warmup_steps,
)

LR = 2e-5


def learning_rates(total: int, ratio: float) -> list[float]:
    """The learning rate of every optimizer step 0..total, as the loop applies it."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=LR)
    scheduler = build_scheduler(optimizer, total, ratio)
    rates = []
    for _ in range(total + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_schedule_with_warmup_ratio_matches_hand_values():
    # 100 steps, ratio 0.04: 4 warmup steps from 0, then a half cosine to 0 over 96 steps.
    rates = learning_rates(100, 0.04)
    assert rates[0] == 0.0  # the Trainer's first update has lr 0
    assert rates[2] == pytest.approx(LR * 2 / 4)
    assert rates[4] == pytest.approx(LR)
    assert rates[4 + 48] == pytest.approx(LR * 0.5)  # halfway through the decay
    assert rates[4 + 24] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert rates[100] == pytest.approx(0.0, abs=1e-15)


def test_warmup_steps_round_up_as_the_trainer_does():
    # 0.04 x 30 = 1.2 warmup steps: the Trainer takes ceil (2), not int (1).
    assert warmup_steps(30, 0.04) == 2
    # The recipe: 233k pieces / 256 = 910 steps an epoch, x 3 = 2730; ceil(109.2) = 110.
    assert warmup_steps(2730, 0.04) == 110
    rates = learning_rates(30, 0.04)
    assert rates[1] == pytest.approx(LR / 2)
    assert rates[2] == pytest.approx(LR)


def test_adamw_has_the_trainers_settings_and_no_weight_decay():
    args = argparse.Namespace(
        lr=LR, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0
    )
    optimizer = build_optimizer(torch.nn.Linear(2, 2), args)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    # torch's AdamW decays by 0.01 unless told otherwise: the recipe's 0 must be passed.
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
        LR,
        (0.9, 0.999),
        1e-8,
        0.0,
    )


def test_loss_is_the_mean_over_the_micro_batchs_trained_tokens():
    """Not the mean of per-sequence means: a sequence with more trained tokens weighs more."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 3, 4, 5, 6], [-100, -100, -100, 2, -100]])
    logps = logits.log_softmax(-1)
    token_nll = [-logps[0, 0, 3], -logps[0, 1, 4], -logps[0, 2, 5], -logps[0, 3, 6]]
    token_nll.append(-logps[1, 2, 2])
    expected = torch.stack(token_nll).mean()
    assert token_mean_loss(logits, labels) == pytest.approx(float(expected), rel=1e-6)
    # Every token masked (FastChat's mismatch rule on each example): 0, not NaN.
    assert token_mean_loss(logits, torch.full_like(labels, -100)) == 0


# --- the embedded chain -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_pipeline(tmp_path_factory) -> Workdir:
    """`snakemake results/amberchat/eval.json` on the embedded default, once for this module."""
    built = Workdir(tmp_path_factory.mktemp("amberchat"), whole_workflow=True)
    built.snakemake("results/amberchat/eval.json")
    return built


def test_embedded_chain_trains_amberchat_below_ambers_heldout_loss(chat_pipeline):
    results = chat_pipeline.path / "results/amberchat"
    report = json.loads((results / "eval.json").read_text())
    amber, chat = (report["models"][name]["heldout"] for name in ("amber", "amberchat"))
    assert amber["tokens"] == chat["tokens"] > 0  # the same held-out assistant tokens
    assert chat["loss"] < amber["loss"] - 1.0
    assert chat["perplexity"] == pytest.approx(math.exp(chat["loss"]))
    generations = report["generations"]
    assert generations["template"] == "vicuna_v1.1"
    assert len(generations["items"]) == 4
    for item in generations["items"]:
        assert item["prompt"].startswith("A chat between a curious user")
        assert item["prompt"].endswith("ASSISTANT:")
        assert set(item["answers"]) == {"amber", "amberchat"}
    record = json.loads((results / "model/amber_repro.json").read_text())
    assert record["template"] == "vicuna_v1.1"
    assert record["conversations"]["masked out by the mismatch rule"] == len(record["mismatched"])
    # Two epochs of full global batches of 8 over the training pieces, nothing more.
    pieces = record["conversations"]["conversations"]
    assert record["results"]["optimizer steps"] == 2 * (pieces // 8)
    assert (results / "model/README.md").read_text().startswith("---")


def chat_sft_command(pipeline: Workdir, out: Path) -> list[str]:
    results = pipeline.path / "results/amberchat"
    return [
        sys.executable,
        "-m",
        "amber_repro",
        "chat-sft",
        "--data",
        str(results / "data/conversations-train.parquet"),
        "--model",
        str(results / "amber"),
        "--batch-size",
        "4",
        "--gradient-accumulation-steps",
        "2",
        "--lr",
        "1e-3",
        "--model-max-length",
        "128",
        "--precision",
        "float32",
        "--no-gradient-checkpointing",
        "--checkpoint-every",
        "4",
        "--max-steps",
        "16",
        "--out-dir",
        str(out / "model"),
        "--state-dir",
        str(out / "state"),
    ]


def test_sigkill_then_rerun_gives_the_uninterrupted_weights_bit_for_bit(chat_pipeline, tmp_path):
    reference = tmp_path / "uninterrupted"
    run(chat_sft_command(chat_pipeline, reference))
    command = chat_sft_command(chat_pipeline, tmp_path / "killed")
    killed = start_and_signal_after_first_checkpoint(
        command, tmp_path / "killed/state", signal.SIGKILL
    )
    assert killed.returncode == -signal.SIGKILL
    resumed = run(command)
    assert "resuming from" in resumed.stdout
    assert same_weights(tmp_path / "killed/model", reference / "model")
    # AdamW's moments were restored too: the last steps' learning rates and losses match.
    lines = [
        (tmp_path / run_dir / "model/metrics.jsonl").read_text().splitlines()
        for run_dir in ("killed", "uninterrupted")
    ]
    assert lines[0] == lines[1]


# --- one DAG: Amber -> AmberChat -> AmberSafe ----------------------------------------------------


def test_base_model_amberchat_puts_amberchat_before_sft(workdir):
    workdir.write_config({"preset": "embedded", "base_model": {"source": "amberchat"}})
    dry = workdir.snakemake("-n", "results/ambersafe/eval.json")
    jobs = scheduled_jobs(dry.stdout)
    assert {"build_tiny_amber", "chat_data", "amberchat", "sft"} <= set(jobs)
    assert "build_tiny_model" not in jobs  # AmberSafe starts from our AmberChat instead
    sft_job = dry.stdout.split("rule sft:")[1].split("rule ")[0]
    assert "results/amberchat/model" in sft_job.split("output:")[0]


def test_7b_plan_downloads_amber_and_trains_on_8_gpus(workdir):
    overlay = workdir.path / "chat-7b.yaml"
    overlay.write_text("base_model: {source: amberchat}\n")
    dry = workdir.snakemake(
        "-n",
        "-p",
        "results/ambersafe/sft",
        "--configfile",  # one flag, both files: the overlay applies on top of the 7B recipe
        "config/ambersafe-7b.yaml",
        str(overlay),
    )
    jobs = scheduled_jobs(dry.stdout)
    assert {"download_amber", "download_chat_data", "chat_data", "amberchat", "sft"} <= set(jobs)
    command = dry.stdout.split("rule amberchat:")[1].split("rule ")[0]
    assert "--nproc-per-node 8" in command
    assert "--batch-size 256 --gradient-accumulation-steps 16" in command
    assert "--lr 2e-05" in command and "--warmup-ratio 0.04" in command
    assert "--precision bf16 --gradient-checkpointing" in command
    assert " --tf32" in command and "--no-deterministic" in command  # reproducibility.*
    assert "slurm_extra=--signal=TERM@600" in command  # resumable: SIGTERM before the limit
