"""Resumable training state, written atomically, and only resumed by the run that wrote it.

A checkpoint folder holds the model and optimizer state as a torch distributed checkpoint (each
process writes its own shards; loading reshards, so a run can resume on another number of
processes), `trainer_state.pt` (scheduler, the optimizer step reached, the fingerprint) and one RNG
file per process. It lives outside the stage's Snakemake output, which Snakemake deletes before a
job starts, and carries a fingerprint of the run's settings and inputs: a changed setting (say a new
learning rate) starts afresh instead of resuming someone else's run. The process count is not part
of the fingerprint: the effective batch does not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from amber_repro import distributed
from amber_repro.training import Processes, SigtermFlag

# One process needs no process group; torch says so on every save and load.
warnings.filterwarnings(
    "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
)

CURRENT = "checkpoint"
PREVIOUS = "checkpoint.old"
TEMPORARY = ".checkpoint.tmp"


def run_fingerprint(stage: str, settings: dict, inputs: list[Path]) -> str:
    """sha256 of the stage, its settings, and the identity (path, size, mtime) of each input
    file."""
    files = []
    for root in inputs:
        paths = (
            sorted(p for p in Path(root).rglob("*") if p.is_file())
            if Path(root).is_dir()
            else [Path(root)]
        )
        files += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    payload = json.dumps(
        {"stage": stage, "settings": settings, "inputs": files}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    state_dir: Path, fingerprint: str, step: int, model, optimizer, scheduler, procs: Processes
) -> None:
    """Every process writes its shards next to the current checkpoint; rank 0 then swaps it in."""
    tmp = state_dir / TEMPORARY
    if procs.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
    torch.save(rng_states(), tmp / f"rng-{procs.rank}.pt")
    if procs.is_main:
        torch.save(
            {
                "fingerprint": fingerprint,
                "step": step,
                "scheduler": scheduler.state_dict(),
                "world_size": procs.world_size,
            },
            tmp / "trainer_state.pt",
        )
    distributed.barrier()
    if procs.is_main:
        current, previous = state_dir / CURRENT, state_dir / PREVIOUS
        if current.exists():
            shutil.rmtree(previous, ignore_errors=True)
            current.rename(previous)
        tmp.rename(current)
        shutil.rmtree(previous, ignore_errors=True)
    distributed.barrier()


def find_checkpoint(state_dir: Path) -> Path | None:
    """The newest complete checkpoint (the previous one if a kill fell between the two renames)."""
    for name in (CURRENT, PREVIOUS):
        folder = state_dir / name
        if (folder / "trainer_state.pt").exists() and (folder / ".metadata").exists():
            return folder
    return None


def load_checkpoint(
    state_dir: Path, fingerprint: str, model, optimizer, scheduler, procs: Processes
) -> int:
    """Restore the newest checkpoint of this same run into the objects; return its step (0 if
    none)."""
    folder = find_checkpoint(state_dir)
    if folder is None:
        return 0
    state = torch.load(folder / "trainer_state.pt", weights_only=True)
    if state["fingerprint"] != fingerprint:
        if procs.is_main:
            print(f"ignoring checkpoint {folder}: written by a run with other settings or inputs")
        return 0
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder)
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)
    scheduler.load_state_dict(state["scheduler"])
    rng = folder / f"rng-{procs.rank}.pt"
    restore_rng_states(torch.load(rng if rng.exists() else folder / "rng-0.pt", weights_only=True))
    if procs.is_main:
        print(
            f"resuming from {folder} at optimizer step {state['step']} "
            f"(written by {state['world_size']} process(es), now {procs.world_size})"
        )
    return state["step"]


class RunCheckpoints:
    """One training run's checkpoints in `state_dir`, for the loop to call at its start and after
    each optimizer step. SIGTERM (what SLURM sends before a time limit) is caught from construction
    on."""

    def __init__(
        self,
        stage: str,
        settings: dict,
        inputs: list[Path],
        state_dir: Path,
        every: int,
        model,
        optimizer,
        scheduler,
        procs: Processes,
    ):
        self.fingerprint = run_fingerprint(stage, settings, inputs)
        self.state_dir, self.every = state_dir, every
        self.training_state = (model, optimizer, scheduler, procs)
        self.sigterm = SigtermFlag()

    def resume(self) -> int:
        """Load this run's newest checkpoint, if any; the optimizer step to continue from."""
        return load_checkpoint(self.state_dir, self.fingerprint, *self.training_state)

    def after_step(self, steps_done: int) -> None:
        """Save every `every` steps; once any process has had SIGTERM, all save together and stop
        (StopRequested, exit 143), so the sharded checkpoint has every rank's part."""
        stop = distributed.any_process(self.sigterm.requested)
        if steps_done % self.every == 0 or stop:
            save_checkpoint(self.state_dir, self.fingerprint, steps_done, *self.training_state)
        if stop:
            self.sigterm.stop(self.state_dir, steps_done)
