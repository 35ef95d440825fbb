"""Resumable training state, written atomically, verified before use, and only resumed by the
run that wrote it.

A checkpoint folder holds the model and optimizer state as a torch distributed checkpoint (each
process writes its own shards; loading reshards, so a run can resume on another number of
processes), `trainer_state.pt` (scheduler, the optimizer step reached, the fingerprint), one RNG
file per process and, written last, a signed manifest of them all (checkpoint_trust.py). It lives
outside the stage's Snakemake output, which Snakemake deletes before a job starts, and carries a
fingerprint of the run's settings and inputs: a changed setting (say a new learning rate) starts
afresh instead of resuming someone else's run. The process count is not part of the fingerprint:
the effective batch does not depend on it.

Each checkpoint also holds a copy of the run's `metrics.jsonl` up to its step, under the signed
manifest; resuming checks the log against it (metrics.reconcile). The newest two checkpoints are
kept: a damaged or untrusted one is set aside, outside the state folder that the finished stage
removes (`<state folder>.rejected/<name>`, replacing an older one of that name), and the run
resumes from the other, or starts afresh saying why. Non-finite weights are never saved, and a
divergence is recorded (`diverged.json`) so that a rerun with the same settings stops at once
instead of training into NaN again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from amber_repro.errors import CheckpointError, NonFiniteLossError
from amber_repro.storage import disk_full_errors, tensor_bytes
from amber_repro.training import distributed, metrics
from amber_repro.training.checkpoint_trust import (
    Rejected,
    VerifiedReader,
    WeightsOnlyPlanner,
    file_digest,
    folder_files,
    load_key,
    verify_folder,
    write_manifest,
)
from amber_repro.training.runtime import Processes
from amber_repro.training.signals import SigtermFlag

# One process needs no process group; torch says so on every save and load.
warnings.filterwarnings(
    "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
)

CURRENT = "checkpoint"
PREVIOUS = "checkpoint.old"
TEMPORARY = ".checkpoint.tmp"
REJECTED = ".rejected"  # <state folder>.rejected/: checkpoints set aside as damaged or untrusted
DIVERGED = "diverged.json"


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


def _local_tensors(model, optimizer):
    """This process's floating-point weights and optimizer state (its shards under FSDP)."""
    tensors = list(model.parameters())
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    for tensor in tensors:
        tensor = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if tensor.is_floating_point():
            yield tensor.detach()


def state_is_finite(model, optimizer) -> bool:
    """True on every process when no process holds a NaN or infinity in weights or optimizer."""
    finite = all(bool(torch.isfinite(t).all()) for t in _local_tensors(model, optimizer))
    return not distributed.any_process(not finite)


def _written_by(name: str, rank: int) -> bool:
    return name == f"rng-{rank}.pt" or (name.startswith(f"__{rank}_") and name.endswith(".distcp"))


def save_checkpoint(
    state_dir: Path, fingerprint: str, step: int, model, optimizer, scheduler, procs: Processes
) -> None:
    """Every process writes and hashes its shards next to the current checkpoint; rank 0 hashes
    the rest, signs the manifest last and swaps the folder in, keeping the one before."""
    if not state_is_finite(model, optimizer):
        raise NonFiniteLossError(
            f"the weights or optimizer state are not finite after optimizer step {step}, so no "
            "checkpoint of them was written"
        )
    tmp = state_dir / TEMPORARY
    if procs.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    # A failed write (a full disk, above all) leaves no half-written folder behind.
    needed = tensor_bytes([model_state, optimizer_state])
    with disk_full_errors(tmp, needed_bytes=needed), _removed_on_failure(tmp):
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
            _copy_metrics(state_dir / metrics.METRICS, tmp / metrics.METRICS)
    own = {n: file_digest(tmp / n) for n in folder_files(tmp) if _written_by(n, procs.rank)}
    hashed = distributed.gather(own)  # also waits until every process has written its files
    if procs.is_main:
        files = {name: digest for part in hashed for name, digest in part.items()}
        files.update({n: file_digest(tmp / n) for n in folder_files(tmp) if n not in files})
        write_manifest(tmp, files, fingerprint, step)
        current, previous = state_dir / CURRENT, state_dir / PREVIOUS
        if current.exists():
            shutil.rmtree(previous, ignore_errors=True)
            current.rename(previous)
        tmp.rename(current)
    distributed.barrier()


@contextmanager
def _removed_on_failure(folder: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _copy_metrics(log: Path, copy: Path) -> None:
    """The metrics log as it is at this step (empty before the first line), for the manifest."""
    if log.exists():
        shutil.copyfile(log, copy)
    else:
        copy.write_bytes(b"")


def rejected_dir(state_dir: Path) -> Path:
    """Where set-aside checkpoints go: beside the state folder, which the finished stage removes."""
    return state_dir.with_name(state_dir.name + REJECTED)


def _set_aside(folder: Path) -> Path:
    """Move a rejected checkpoint out of the rotation and out of the state folder (kept for a
    look, replacing an older one of the same name)."""
    target = rejected_dir(folder.parent) / folder.name
    try:
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(target)
    except OSError as error:
        raise CheckpointError(f"cannot set aside unusable checkpoint {folder}: {error}") from None
    return target


def choose_checkpoint(state_dir: Path, fingerprint: str) -> tuple[Path, dict] | None:
    """Rank 0: the newest verified checkpoint folder and its manifest, if it is this run's. Says in
    one line what it set aside, and why."""
    key = load_key(announce=True)
    rejected = []
    for name in (CURRENT, PREVIOUS):
        folder = state_dir / name
        if not folder.exists():
            continue
        try:
            manifest = verify_folder(folder, key)
        except Rejected as why:
            rejected.append(f"{name}: {why}")
            _set_aside(folder)
            continue
        if rejected:  # only the current one can have been rejected before this one
            print(
                f"not resuming from {state_dir / CURRENT}: {rejected[0].split(': ', 1)[1]}; set "
                f"aside as {rejected_dir(state_dir) / CURRENT}, falling back to the previous "
                "checkpoint"
            )
        if manifest["fingerprint"] != fingerprint:
            print(f"ignoring checkpoint {folder}: written by a run with other settings or inputs")
            return None
        restore_metrics(state_dir, folder, manifest)
        return folder, manifest
    if rejected:
        print(
            f"starting afresh: no usable checkpoint in {state_dir} ({'; '.join(rejected)}); "
            f"set aside in {rejected_dir(state_dir)}"
        )
    return None


def restore_metrics(state_dir: Path, folder: Path, manifest: dict) -> None:
    """The metrics log up to the checkpoint's step must be its signed copy (read once, and used
    only if those bytes are the ones the manifest names), or is restored from it."""
    signed = (folder / metrics.METRICS).read_bytes()
    if hashlib.sha256(signed).hexdigest() != manifest["files"][metrics.METRICS]["sha256"]:
        raise CheckpointError(f"{folder / metrics.METRICS} changed after it was verified")
    metrics.reconcile(state_dir / metrics.METRICS, signed, manifest["step"], folder)


def load_checkpoint(folder: Path, manifest: dict, model, optimizer, scheduler, procs) -> int:
    """Restore a verified checkpoint into the objects; return its step. Only `.metadata`, matched
    to the signed manifest, is unpickled; everything else is read with weights_only=True."""
    try:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.load(
            {"model": model_state, "optimizer": optimizer_state},
            storage_reader=VerifiedReader(folder, manifest["files"][".metadata"]["sha256"]),
            planner=WeightsOnlyPlanner(),
        )
        set_state_dict(
            model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state
        )
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        scheduler.load_state_dict(state["scheduler"])
        rng = folder / f"rng-{procs.rank}.pt"
        rng = rng if rng.exists() else folder / "rng-0.pt"
        restore_rng_states(torch.load(rng, weights_only=True))
    except Exception as error:  # after verification: a file changed since, or another torch
        raise CheckpointError(
            f"cannot load the verified checkpoint {folder} ({type(error).__name__}: {error}); "
            "delete it to start afresh"
        ) from error
    if procs.is_main:
        print(
            f"resuming from {folder} at optimizer step {state['step']} "
            f"(written by {state['world_size']} process(es), now {procs.world_size})"
        )
    return state["step"]


def record_divergence(state_dir: Path, fingerprint: str, step: int, message: str) -> None:
    """diverged.json (JSON only, replaced atomically): these settings went non-finite here."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{DIVERGED}.{os.getpid()}.tmp"
    record = {"fingerprint": fingerprint, "step": step, "message": message}
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, state_dir / DIVERGED)


def recorded_divergence(state_dir: Path, fingerprint: str) -> str | None:
    """The message of an earlier divergence of these same settings, if one was recorded."""
    path = state_dir / DIVERGED
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        print(f"ignoring unreadable {path} ({error})")
        return None
    if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
        return str(record.get("message"))
    return None


class RunCheckpoints:
    """One training run's checkpoints in `state_dir`, for the loop to call at its start, on each
    loss and after each optimizer step. SIGTERM (what SLURM sends before a time limit) and SIGINT
    (Ctrl-C) are caught from construction on."""

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
        self.settings = settings
        self.state_dir, self.every = state_dir, every
        self.training_state = (model, optimizer, scheduler, procs)
        self.kept: tuple[Path, int] | None = None  # the last good checkpoint: folder, step
        self.sigterm = SigtermFlag()

    def resume(self) -> int:
        """Load this run's newest good checkpoint, if any; the optimizer step to continue from.
        Rank 0 verifies and chooses; every process loads what it chose."""
        earlier = recorded_divergence(self.state_dir, self.fingerprint)
        if earlier is not None:
            raise NonFiniteLossError(
                f"an earlier run with these same settings diverged, so this one does not train: "
                f"{earlier}"
            )
        procs = self.training_state[3]
        chosen = choose_checkpoint(self.state_dir, self.fingerprint) if procs.is_main else None
        chosen = distributed.gather(chosen)[0]
        if chosen is None:
            return 0
        step = load_checkpoint(*chosen, *self.training_state)
        self.kept = (chosen[0], step)
        return step

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        """Stop on a NaN or infinite loss at (0-based) optimizer step `step`."""
        if not torch.isfinite(loss).all():
            self.diverged(f"loss is {loss.item()} at optimizer step {step + 1}", step + 1)

    def diverged(self, what: str, step: int) -> None:
        """Record the divergence and stop, naming the checkpoint kept and what to change."""
        kept = (
            f"Kept the last checkpoint, {self.kept[0]} at optimizer step {self.kept[1]}"
            if self.kept
            else "No checkpoint was written before it"
        )
        lr, norm = (self.settings.get(k) for k in ("lr", "max_grad_norm"))
        message = (
            f"{what}; stopped. {kept}. To go on, lower lr (now {lr:g}) or max_grad_norm (now "
            f"{norm:g}): other settings start afresh. A rerun with these settings stops here "
            f"(recorded in {DIVERGED}; delete {self.state_dir} to try them again)"
        )
        record_divergence(self.state_dir, self.fingerprint, step, message)
        raise NonFiniteLossError(message)

    def after_step(self, steps_done: int) -> None:
        """Save every `every` steps; once any process has had SIGTERM or SIGINT, all save together
        and stop (StopRequested, exit 143 or 130), so the checkpoint has every rank's part."""
        stop = distributed.any_process(self.sigterm.requested)
        if steps_done % self.every == 0 or stop:
            try:
                save_checkpoint(self.state_dir, self.fingerprint, steps_done, *self.training_state)
            except NonFiniteLossError as error:
                self.diverged(str(error), steps_done)
            self.kept = (self.state_dir / CURRENT, steps_done)
        if stop:
            self.sigterm.stop(self.state_dir, steps_done)
