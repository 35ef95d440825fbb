"""The metrics log is covered by the signed checkpoint manifest: each checkpoint keeps a copy of
metrics.jsonl up to its step; on resume a changed byte or a forged line in the log is restored
from that copy (one line says so), a changed copy rejects the checkpoint, and a log changed while
the run writes it is rewritten from the run's own record when it closes. Checkpoints set aside
as damaged are kept outside the state folder, which the finished stage removes (loop.finish).

A tiny model and the checkpoint functions themselves: no pipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_checkpoint_integrity import tiny_run

from amber_repro.training.checkpoint_trust import Rejected, load_key, verify_folder
from amber_repro.training.checkpointing import choose_checkpoint, save_checkpoint
from amber_repro.training.metrics import MetricsLog
from amber_repro.training.runtime import Processes

FINGERPRINT = "fp"


def training_state():
    return (*tiny_run(), Processes(0, 1, torch.device("cpu")))


def logged_run(state: Path, steps: int, checkpoints: tuple[int, ...]) -> list[str]:
    """A run that logs `steps` steps and checkpoints at `checkpoints`; the log's lines."""
    log, trained = MetricsLog(state, 0), training_state()
    for step in range(1, steps + 1):
        log.log(step, {"loss": 1.0 / step})
        if step in checkpoints:
            save_checkpoint(state, FINGERPRINT, step, *trained)
    log.close()
    return (state / "metrics.jsonl").read_text().splitlines()


def resumed_log(state: Path) -> list[str]:
    """What a resumed run's log holds once it starts: choose the checkpoint, open the log."""
    chosen = choose_checkpoint(state, FINGERPRINT)
    assert chosen is not None
    MetricsLog(state, chosen[1]["step"]).close()
    return (state / "metrics.jsonl").read_text().splitlines()


def flip(path: Path, line: int) -> None:
    """One byte changed inside a number of the line (its JSON still reads)."""
    lines = path.read_text().splitlines()
    lines[line - 1] = lines[line - 1].replace('"loss": 0.', '"loss": 9.')
    path.write_text("".join(f"{x}\n" for x in lines))


def test_a_flipped_byte_in_the_log_is_restored_from_the_checkpoint_on_resume(tmp_path, capsys):
    state = tmp_path / "state"
    lines = logged_run(state, 6, (4,))
    flip(state / "metrics.jsonl", 2)
    assert (state / "metrics.jsonl").read_text().splitlines()[1] != lines[1]
    assert resumed_log(state) == lines[:4]
    said = capsys.readouterr().out
    assert f"{state / 'metrics.jsonl'} differs from the copy signed with checkpoint " in said
    assert f"{state / 'checkpoint'} at line 2: restored from the checkpoint" in said


def test_a_forged_line_appended_for_an_earlier_step_is_dropped_on_resume(tmp_path, capsys):
    state = tmp_path / "state"
    lines = logged_run(state, 4, (4,))
    with (state / "metrics.jsonl").open("a") as log:
        log.write(json.dumps({"step": 3, "loss": 0.0}) + "\n")
    assert resumed_log(state) == lines
    assert "at line 5: restored from the checkpoint" in capsys.readouterr().out


def test_an_untouched_log_resumes_silently_without_the_steps_after_the_checkpoint(tmp_path, capsys):
    state = tmp_path / "state"
    lines = logged_run(state, 6, (4,))
    capsys.readouterr()
    assert resumed_log(state) == lines[:4]
    assert "metrics.jsonl" not in capsys.readouterr().out


def test_a_changed_copy_in_the_checkpoint_rejects_it(tmp_path):
    state = tmp_path / "state"
    logged_run(state, 4, (4,))
    verify_folder(state / "checkpoint", load_key())
    flip(state / "checkpoint" / "metrics.jsonl", 2)
    with pytest.raises(Rejected, match=r"metrics\.jsonl does not match its sha256"):
        verify_folder(state / "checkpoint", load_key())


def test_a_log_changed_while_the_run_writes_it_is_rewritten_when_it_closes(tmp_path, capsys):
    state = tmp_path / "state"
    log = MetricsLog(state, 0)
    for step in (1, 2, 3):
        log.log(step, {"loss": 1.0 / step})
    written = (state / "metrics.jsonl").read_text()
    flip(state / "metrics.jsonl", 2)
    log.close()
    assert (state / "metrics.jsonl").read_text() == written
    said = capsys.readouterr().out
    assert f"{state / 'metrics.jsonl'} changed on disk while the run wrote it (line 2)" in said


def test_set_aside_checkpoints_outlive_the_finished_stage(tmp_path, capsys):
    state = tmp_path / "state"
    logged_run(state, 8, (4, 8))
    (state / "checkpoint" / "trainer_state.pt").write_bytes(b"damaged")
    (state / "checkpoint.old" / "stray.bin").write_bytes(b"not written by the run")
    assert choose_checkpoint(state, FINGERPRINT) is None
    kept = tmp_path / "state.rejected"
    said = capsys.readouterr().out
    assert f"starting afresh: no usable checkpoint in {state} " in said
    assert f"set aside in {kept}" in said
    shutil.rmtree(state)  # what loop.finish does once the stage's model folder is written
    assert (kept / "checkpoint" / "trainer_state.pt").read_bytes() == b"damaged"
    assert (kept / "checkpoint.old" / "stray.bin").exists()
    assert (kept / "checkpoint.old" / "manifest.json").exists()
