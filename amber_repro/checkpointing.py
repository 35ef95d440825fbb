"""Resumable training state, written atomically, and only resumed by the run that wrote it.

A checkpoint folder holds the weights (safetensors) and `trainer_state.pt` (optimizer, scheduler,
RNG states, the optimizer step reached): everything needed to continue so that the final weights
equal those of an uninterrupted run. It lives outside the stage's Snakemake output, which Snakemake
deletes before a job starts, and carries a fingerprint of the run's settings and inputs: a changed
setting (say a new learning rate) starts afresh instead of resuming someone else's run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CURRENT = "checkpoint"
PREVIOUS = "checkpoint.old"


def run_fingerprint(stage: str, settings: dict, inputs: list[Path]) -> str:
    """sha256 of the stage, its settings, and the identity (path, size, mtime) of each input file."""
    files = []
    for root in inputs:
        paths = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else [Path(root)]
        files += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    payload = json.dumps({"stage": stage, "settings": settings, "inputs": files}, sort_keys=True, default=str)
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


def save_checkpoint(state_dir: Path, fingerprint: str, step: int, model, optimizer, scheduler) -> Path:
    """Write a checkpoint next to the current one, then swap it in with renames."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{CURRENT}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(weights, tmp / "model.safetensors")
    torch.save(
        {
            "fingerprint": fingerprint,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_states(),
        },
        tmp / "trainer_state.pt",
    )
    current, previous = state_dir / CURRENT, state_dir / PREVIOUS
    if current.exists():
        shutil.rmtree(previous, ignore_errors=True)
        current.rename(previous)
    tmp.rename(current)
    shutil.rmtree(previous, ignore_errors=True)
    return current


def find_checkpoint(state_dir: Path) -> Path | None:
    """The newest complete checkpoint (the previous one if a kill fell between the two renames)."""
    for name in (CURRENT, PREVIOUS):
        folder = state_dir / name
        if (folder / "trainer_state.pt").exists() and (folder / "model.safetensors").exists():
            return folder
    return None


def load_checkpoint(state_dir: Path, fingerprint: str, model, optimizer, scheduler) -> int:
    """Restore the newest checkpoint of this same run into the objects; return its step (0 if none)."""
    folder = find_checkpoint(state_dir)
    if folder is None:
        return 0
    state = torch.load(folder / "trainer_state.pt", weights_only=True)
    if state["fingerprint"] != fingerprint:
        print(f"ignoring checkpoint {folder}: written by a run with other settings or inputs")
        return 0
    model.load_state_dict(load_file(folder / "model.safetensors"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng_states(state["rng"])
    print(f"resuming from {folder} at optimizer step {state['step']}")
    return state["step"]
