"""Interrupted training: SIGKILL and resume gives the same weights; SIGTERM and Ctrl-C save and
exit non-zero (a second Ctrl-C stops at once); a NaN loss stops with the step named and keeps the
last good checkpoint. Damaged or untrusted checkpoints: test_checkpoint_integrity.py."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from processes import PATIENCE
from processes import run as run_command
from safetensors.torch import load_file

from amber_repro.errors import NonFiniteLossError

COMMON = [
    "--max-length",
    "128",
    "--max-prompt-length",
    "64",
    "--warmup-steps",
    "3",
    "--lr",
    "1e-3",
    "--checkpoint-every",
    "4",
    "--gradient-accumulation-steps",
    "2",
]


def stage_command(stage: str, built, out: Path) -> list[str]:
    """The stage's command line on a finished run's data and models (`built`, a Workdir)."""
    root = built.path / "results"
    data = root / "ambersafe/data"
    if stage == "sft":
        args = [
            "sft",
            "--data",
            data / "sft-train.parquet",
            "--model",
            root / "base_model",
            "--batch-size",
            "8",
            "--n-epochs",
            "2",
        ]
    else:
        args = [
            "dpo",
            "--model",
            root / "ambersafe/sft",
            "--pairs",
            data / "pairs-train.parquet",
            "--ref-logps",
            root / "ambersafe/ref_logps/train.parquet",
            "--eval-pairs",
            data / "pairs-test.parquet",
            "--eval-ref-logps",
            root / "ambersafe/ref_logps/test.parquet",
            "--batch-size",
            "8",
            "--n-epochs",
            "1",
            "--max-steps",
            "48",
            "--eval-every",
            "160",  # examples: every 20 steps of 8
            "--eval-examples",
            "32",
            "--precision",
            "float32",
            # Length-grouped forward passes of packed pairs (as the embedded preset runs them)
            # resume exactly too.
            "--length-group-min-saving",
            "128",
            "--share-prompt",
        ]
    return [
        sys.executable,
        "-m",
        "amber_repro",
        *map(str, args),
        *COMMON,
        "--out-dir",
        str(out / "model"),
        "--state-dir",
        str(out / "state"),
    ]


def run_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = run_command(command, env=run_env())
    assert result.returncode == 0, result.stderr
    return result


def start_and_signal_after_first_checkpoint(
    command: list[str],
    state: Path,
    signum: int,
    wait_for: str = "checkpoint/trainer_state.pt",
    wait: bool = True,
) -> subprocess.Popen:
    """Send `signum` once `state / wait_for` exists (by default: once a checkpoint does), then
    wait for the process to end unless told not to."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env()
    )
    deadline = time.monotonic() + PATIENCE
    while not (state / wait_for).exists():
        assert process.poll() is None, (
            f"finished before its first checkpoint: {process.communicate()[1]}"
        )
        assert time.monotonic() < deadline, f"no checkpoint within {PATIENCE} s"
        time.sleep(0.01)
    process.send_signal(signum)
    if wait:
        process.wait()
    return process


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(quick_pipeline, tmp_path_factory):
    """Final weights of an uninterrupted run per stage, computed once per stage on first use."""
    runs = {}

    def folder(stage: str) -> Path:
        if stage not in runs:
            runs[stage] = tmp_path_factory.mktemp(f"{stage}-uninterrupted")
            run(stage_command(stage, quick_pipeline, runs[stage]))
        return runs[stage]

    return folder


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_sigkill_then_rerun_gives_the_uninterrupted_weights_bit_for_bit(
    stage, uninterrupted, quick_pipeline, tmp_path
):
    reference = uninterrupted(stage)
    command = stage_command(stage, quick_pipeline, tmp_path)
    killed = start_and_signal_after_first_checkpoint(command, tmp_path / "state", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "model").exists()
    resumed = run(command)
    assert "resuming from" in resumed.stdout
    step = int(resumed.stdout.split("at optimizer step ")[1].split()[0])
    assert step >= 4
    assert same_weights(tmp_path / "model", reference / "model")
    # The resumed run's log has every step exactly once (DPO's from step 0, its evaluation before
    # the first step; this SFT command has no held-out data).
    steps = [
        int(line.split('"step": ')[1].split(",")[0].rstrip("}"))
        for line in (tmp_path / "model" / "metrics.jsonl").read_text().splitlines()
    ]
    first = 0 if stage == "dpo" else 1
    assert steps == list(range(first, first + len(steps)))


def test_sigterm_saves_a_checkpoint_and_exits_non_zero(uninterrupted, quick_pipeline, tmp_path):
    """SFT only: SIGTERM handling is the shared checkpointing.RunCheckpoints, the same in DPO."""
    reference = uninterrupted("sft")
    command = stage_command("sft", quick_pipeline, tmp_path)
    stopped = start_and_signal_after_first_checkpoint(command, tmp_path / "state", signal.SIGTERM)
    assert stopped.returncode == 143
    assert "SIGTERM: saved a checkpoint at optimizer step" in stopped.stderr.read()
    saved = torch.load(tmp_path / "state/checkpoint/trainer_state.pt", weights_only=True)
    assert saved["step"] >= 4
    run(command)
    assert same_weights(tmp_path / "model", reference / "model")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def test_ctrl_c_saves_a_checkpoint_exits_130_in_one_line_and_resumes_bit_for_bit(
    uninterrupted, quick_pipeline, tmp_path
):
    """SIGINT is handled like SIGTERM: the loop saves after its optimizer step and stops."""
    reference = uninterrupted("sft")
    command = stage_command("sft", quick_pipeline, tmp_path)
    stopped = start_and_signal_after_first_checkpoint(command, tmp_path / "state", signal.SIGINT)
    stderr = stopped.stderr.read()
    assert stopped.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    [line] = error_lines(stderr)
    assert "SIGINT: saved a checkpoint at optimizer step" in line
    step = int(line.split("optimizer step ")[1].split()[0])
    manifest = json.loads((tmp_path / "state/checkpoint/manifest.json").read_text())
    assert manifest["step"] == step
    resumed = run(command)
    assert f"resuming from {tmp_path / 'state/checkpoint'} at optimizer step {step} " in (
        resumed.stdout
    )
    assert same_weights(tmp_path / "model", reference / "model")


def test_a_second_ctrl_c_stops_at_once_and_nothing_half_written_is_resumed(
    uninterrupted, quick_pipeline, tmp_path
):
    from amber_repro.training.checkpoint_trust import load_key, verify_folder

    reference = uninterrupted("sft")
    command = stage_command("sft", quick_pipeline, tmp_path)
    process = start_and_signal_after_first_checkpoint(
        command, tmp_path / "state", signal.SIGINT, wait=False
    )
    seen = ""
    while "Ctrl-C again stops at once" not in seen:  # the first one has been handled
        seen += process.stderr.readline()
        assert process.poll() is None, seen
    process.send_signal(signal.SIGINT)
    stderr = seen + process.communicate()[1]
    assert process.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    [line] = error_lines(stderr)
    assert "interrupted (Ctrl-C): stopped at once" in line
    # Whatever the second Ctrl-C cut short is not in the rotation: what is there verifies.
    state = tmp_path / "state"
    for name in ("checkpoint", "checkpoint.old"):
        if (state / name).exists():
            verify_folder(state / name, load_key())
    step = json.loads((state / "checkpoint/manifest.json").read_text())["step"]
    resumed = run(command)
    assert f"at optimizer step {step} " in resumed.stdout
    assert same_weights(tmp_path / "model", reference / "model")


def test_changed_settings_do_not_resume_another_runs_checkpoint(quick_pipeline, tmp_path):
    command = stage_command("sft", quick_pipeline, tmp_path)
    start_and_signal_after_first_checkpoint(command, tmp_path / "state", signal.SIGKILL)
    changed = [*command[:-4], "--lr", "5e-4", *command[-4:]]
    result = run(changed)
    assert "ignoring checkpoint" in result.stdout and "resuming from" not in result.stdout


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    quick_pipeline, tmp_path, monkeypatch
):
    from amber_repro import __main__ as cli
    from amber_repro.config.cli import check_settings
    from amber_repro.training import sft

    calls = {"n": 0}
    real_loss = sft.sft_loss

    def loss_turning_nan(logps):
        calls["n"] += 1
        loss = real_loss(logps)
        return (
            loss * float("nan") if calls["n"] > 10 else loss
        )  # 2 micro-batches a step: step 6 is NaN

    monkeypatch.setattr(sft, "sft_loss", loss_turning_nan)
    argv = [str(a) for a in stage_command("sft", quick_pipeline, tmp_path)[3:]]
    args = cli.build_parser("sft").parse_args(argv)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at optimizer step 6") as stop:
        sft.main(args, *check_settings(args))
    saved = torch.load(tmp_path / "state/checkpoint/trainer_state.pt", weights_only=True)
    assert saved["step"] == 4
    assert f"Kept the last checkpoint, {tmp_path / 'state/checkpoint'} at optimizer step 4" in str(
        stop.value
    )
    assert json.loads((tmp_path / "state/diverged.json").read_text())["step"] == 6
    assert not (tmp_path / "model").exists()
    assert isinstance(args, argparse.Namespace)
