"""Resumable checkpoints are verified before use: a damaged or untrusted one falls back to the
previous one or a fresh start, in one line, never a traceback; a planted pickle never runs; a
non-finite state is never saved, and a divergence stops a rerun with the same settings at once.

One interrupted SFT run (two checkpoints kept) is made once; each case damages a copy of its state
folder and reruns the real stage command.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from processes import run_in_process
from test_resume import (
    run,
    run_env,
    same_weights,
    stage_command,
    start_and_signal_after_first_checkpoint,
)

from amber_repro.errors import NonFiniteLossError
from amber_repro.training.checkpoint_trust import Rejected, load_key, verify_folder
from amber_repro.training.checkpointing import save_checkpoint
from amber_repro.training.runtime import Processes
from amber_repro.training.schedule import build_optimizer, build_scheduler


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def reference(quick_pipeline, tmp_path_factory) -> Path:
    """The weights of an uninterrupted SFT run."""
    out = tmp_path_factory.mktemp("sft-uninterrupted")
    run(stage_command("sft", quick_pipeline, out))
    return out / "model"


@pytest.fixture(scope="module")
def interrupted(quick_pipeline, tmp_path_factory) -> Path:
    """The state folder of an SFT run killed once it had written two checkpoints."""
    out = tmp_path_factory.mktemp("sft-interrupted")
    killed = start_and_signal_after_first_checkpoint(
        stage_command("sft", quick_pipeline, out),
        out / "state",
        signal.SIGKILL,
        wait_for="checkpoint.old/manifest.json",
    )
    assert killed.returncode == -signal.SIGKILL
    return out / "state"


def copy_state(interrupted: Path, tmp_path: Path) -> tuple[Path, int, int]:
    """A copy to damage, and the steps of its current and previous checkpoints."""
    state = tmp_path / "state"
    shutil.copytree(interrupted, state)
    current, previous = manifest(state / "checkpoint"), manifest(state / "checkpoint.old")
    assert previous["step"] < current["step"]
    return state, current["step"], previous["step"]


def in_process(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """A stage_command (`python -m amber_repro ...`) run in this process: what these tests check is
    how a stage treats its state folder, not the process around it."""
    return run_in_process(command[3:], env=env or run_env())


def rerun(built, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The SFT command again; it must end normally and without a traceback."""
    result = in_process(stage_command("sft", built, tmp_path), env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("name", ["trainer_state.pt", "__0_0.distcp", "rng-0.pt", ".metadata"])
def test_a_truncated_file_falls_back_to_the_previous_checkpoint(
    name, interrupted, quick_pipeline, reference, tmp_path
):
    state, _, previous_step = copy_state(interrupted, tmp_path)
    truncate(state / "checkpoint" / name)
    result = rerun(quick_pipeline, tmp_path)
    assert f"not resuming from {state / 'checkpoint'}: {name} has " in result.stdout
    assert f"resuming from {state / 'checkpoint.old'} at optimizer step {previous_step} " in (
        result.stdout
    )
    assert same_weights(tmp_path / "model", reference)
    # The finished stage removed its state folder; the set-aside checkpoint is kept beside it.
    assert not state.exists()
    kept = tmp_path / "state.rejected" / "checkpoint"
    assert f"set aside as {kept}, falling back" in result.stdout
    assert (kept / name).stat().st_size < (interrupted / "checkpoint" / name).stat().st_size


def test_bytes_overwritten_inside_a_shard_are_caught(interrupted, quick_pipeline, tmp_path):
    """Same size, other bytes: only the sha256 tells."""
    state, _, previous_step = copy_state(interrupted, tmp_path)
    with (state / "checkpoint/__0_0.distcp").open("r+b") as shard:
        shard.seek(shard.seek(0, os.SEEK_END) // 2)
        shard.write(b"\x7f" * 64)
    result = rerun(quick_pipeline, tmp_path)
    assert "__0_0.distcp does not match its sha256 in the manifest" in result.stdout
    assert f"at optimizer step {previous_step} " in result.stdout


def test_both_checkpoints_damaged_start_afresh_saying_so_in_one_line(
    interrupted, quick_pipeline, reference, tmp_path
):
    state, _, _ = copy_state(interrupted, tmp_path)
    truncate(state / "checkpoint/trainer_state.pt")
    (state / "checkpoint.old/stray.bin").write_bytes(b"not written by the run")
    result = rerun(quick_pipeline, tmp_path)
    [line] = [line for line in result.stdout.splitlines() if str(state) in line]
    assert line.startswith(f"starting afresh: no usable checkpoint in {state} ")
    assert "trainer_state.pt has " in line and "unexpected file stray.bin" in line
    assert same_weights(tmp_path / "model", reference)


def test_a_torn_last_metrics_line_is_dropped_and_said(interrupted, quick_pipeline, tmp_path):
    state, current_step, _ = copy_state(interrupted, tmp_path)
    metrics = state / "metrics.jsonl"
    with metrics.open("a") as log:  # a kill in the middle of writing a later step's line
        log.write(f'{{"examples": 80, "grad_norm": 1.5, "loss": 20{current_step + 1}.')
    result = rerun(quick_pipeline, tmp_path)
    assert f"dropped its torn last line from {metrics}" in result.stdout
    assert f"at optimizer step {current_step} " in result.stdout
    lines = (tmp_path / "model/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, len(lines) + 1))


def test_a_changed_byte_in_the_state_metrics_log_never_reaches_the_final_log(
    interrupted, quick_pipeline, tmp_path
):
    state, current_step, _ = copy_state(interrupted, tmp_path)
    metrics = state / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    second = json.loads(lines[1])
    lines[1] = json.dumps({**second, "loss": second["loss"] + 1000}, sort_keys=True)
    metrics.write_text("".join(f"{line}\n" for line in lines))
    result = rerun(quick_pipeline, tmp_path)
    assert f"{metrics} differs from the copy signed with checkpoint {state / 'checkpoint'} at " in (
        result.stdout
    )
    assert f"line 2: restored from the checkpoint (steps up to {current_step})" in result.stdout
    final = (tmp_path / "model/metrics.jsonl").read_text().splitlines()
    assert json.loads(final[1]) == second


class Planted:
    """What another user could leave as `.metadata`: unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def plant(folder: Path, marker: Path, fix_manifest: bool) -> None:
    data = pickle.dumps(Planted(marker))
    (folder / ".metadata").write_bytes(data)
    if fix_manifest:  # the sha256 and size match now; only the signature can tell
        body = manifest(folder)
        body["files"][".metadata"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (folder / "manifest.json").write_text(json.dumps(body))


def test_a_planted_metadata_pickle_never_runs(interrupted, quick_pipeline, tmp_path):
    state, _, _ = copy_state(interrupted, tmp_path)
    marker = tmp_path / "code-ran"
    plant(state / "checkpoint", marker, fix_manifest=False)
    plant(state / "checkpoint.old", marker, fix_manifest=True)
    result = rerun(quick_pipeline, tmp_path)
    assert not marker.exists()
    [line] = [line for line in result.stdout.splitlines() if str(state) in line]
    assert line.startswith("starting afresh: no usable checkpoint")
    assert "checkpoint: .metadata has " in line
    assert "checkpoint.old: manifest.json is not signed with this user's key" in line


def test_without_the_key_a_new_private_one_is_made_and_old_checkpoints_are_not_trusted(
    interrupted, quick_pipeline, tmp_path
):
    state, _, _ = copy_state(interrupted, tmp_path)
    key = tmp_path / "config/amber-repro/checkpoint.key"
    result = rerun(quick_pipeline, tmp_path, env={**run_env(), "AMBER_REPRO_KEY_FILE": str(key)})
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    assert len(key.read_bytes()) == 32
    assert f"created checkpoint key {key} (mode 0600)" in result.stdout
    assert f"starting afresh: no usable checkpoint in {state} " in result.stdout
    assert "not signed with this user's key" in result.stdout
    assert "resuming from" not in result.stdout


def test_verification_names_a_missing_file_an_unexpected_one_and_no_manifest(interrupted, tmp_path):
    key = load_key()
    verify_folder(interrupted / "checkpoint", key)
    cases = {
        "missing file rng-0.pt": lambda folder: (folder / "rng-0.pt").unlink(),
        "unexpected file extra": lambda folder: (folder / "extra").mkdir(),
        "no manifest.json": lambda folder: (folder / "manifest.json").unlink(),
    }
    for number, (reason, damage) in enumerate(cases.items()):
        folder = shutil.copytree(interrupted / "checkpoint", tmp_path / str(number))
        damage(folder)
        with pytest.raises(Rejected, match=reason):
            verify_folder(folder, key)


def tiny_run():
    model = torch.nn.Linear(4, 2)
    optimizer = build_optimizer(model, 1e-3)
    scheduler = build_scheduler(optimizer, 0)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


@pytest.mark.parametrize("where", ["weights", "optimizer state"])
def test_a_non_finite_state_is_never_saved(where, tmp_path):
    model, optimizer, scheduler = tiny_run()
    procs = Processes(0, 1, torch.device("cpu"))
    save_checkpoint(tmp_path, "fp", 1, model, optimizer, scheduler, procs)
    with torch.no_grad():
        if where == "weights":
            model.weight[0, 0] = float("nan")
        else:
            optimizer.state[model.bias]["square_avg"][0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="not finite after optimizer step 2"):
        save_checkpoint(tmp_path, "fp", 2, model, optimizer, scheduler, procs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert verify_folder(tmp_path / "checkpoint", load_key())["step"] == 1


def test_a_divergence_stops_a_rerun_with_the_same_settings_at_once(quick_pipeline, tmp_path):
    """DPO at lr 1e12, a checkpoint every step: the loss is NaN at step 2 and the step-1
    checkpoint holds diverged (yet finite) weights, which a rerun must not train from again."""
    base = stage_command("dpo", quick_pipeline, tmp_path)
    command = [*base[:-4], "--lr", "1e12", "--checkpoint-every", "1", *base[-4:]]
    state = tmp_path / "state"
    first = in_process(command)
    assert first.returncode == 2
    message = first.stderr.split("error: ", 1)[1].splitlines()[0]
    assert message.startswith(
        "loss is nan at optimizer step 2; stopped. Kept the last checkpoint, "
    )
    assert f"{state / 'checkpoint'} at optimizer step 1" in message
    assert "lower lr (now 1e+12)" in message
    assert json.loads((state / "diverged.json").read_text())["step"] == 2
    before = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}

    again = in_process(command)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "an earlier run with these same settings diverged" in again.stderr
    assert message in again.stderr
    assert "resuming from" not in again.stdout  # stopped before loading or training
    assert {p: p.read_bytes() for p in state.rglob("*") if p.is_file()} == before

    changed = [*base[:-4], "--lr", "1e-4", "--max-steps", "2", *base[-4:]]
    other = in_process(changed)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "ignoring checkpoint" in other.stdout
