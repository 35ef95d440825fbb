"""Per-step training metrics: JSONL and TensorBoard events that survive a kill.

`metrics.jsonl` lives in the state folder beside the checkpoints, and each checkpoint keeps a copy
of it up to its step under its signed manifest (checkpointing.py). On resume the lines up to the
checkpoint's step must be that copy (`reconcile`: otherwise they are restored from it, said in one
line); the run keeps what it logs in memory too, and `close` rewrites a file changed on disk while
it ran. So a changed byte never reaches the final model folder's metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from amber_repro.storage import atomic_path, disk_full_errors

METRICS = "metrics.jsonl"


def read_lines(path: Path) -> tuple[list[tuple[str, int]], list[int], int]:
    """(line, step) of each readable line, the numbers of the unreadable ones, and the count."""
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    readable, unreadable = [], []
    for number, line in enumerate(lines, 1):
        try:
            readable.append((line, int(json.loads(line)["step"])))
        except (ValueError, KeyError, TypeError):
            unreadable.append(number)
    return readable, unreadable, len(lines)


def first_difference(a: list[str], b: list[str]) -> int:
    """The 1-based number of the first line where a and b differ."""
    pairs = enumerate(zip(a, b, strict=False), 1)
    return next((n for n, (x, y) in pairs if x != y), min(len(a), len(b)) + 1)


def write_lines(path: Path, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    with atomic_path(path, needed_bytes=len(text)) as tmp:
        tmp.write_text(text)


def reconcile(path: Path, signed: bytes, step: int, checkpoint: Path) -> None:
    """On resume from `checkpoint` (at optimizer `step`), whose verified copy of the log is
    `signed`: the log's lines up to `step` must be that copy; if not, it is restored from it."""
    copy = signed.decode().splitlines()
    kept = [line for line, at in read_lines(path)[0] if at <= step]
    if kept == copy:
        return
    print(
        f"{path} differs from the copy signed with checkpoint {checkpoint} at line "
        f"{first_difference(kept, copy)}: restored from the checkpoint (steps up to {step})"
    )
    write_lines(path, copy)


class MetricsLog:
    """Per-step metrics as JSONL and TensorBoard events in the state folder (they survive a
    kill)."""

    def __init__(self, state_dir: Path, start_step: int, enabled: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.enabled = enabled
        self.path = state_dir / METRICS
        if not enabled:
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        # Only the lines a checkpoint vouches for (reconcile): none on a fresh start.
        self.lines = [line for line, at in self._read() if at <= start_step] if start_step else []
        write_lines(self.path, self.lines)
        if start_step == 0:
            shutil.rmtree(state_dir / "tensorboard", ignore_errors=True)
        self.writer = SummaryWriter(str(state_dir / "tensorboard"), purge_step=start_step + 1)

    def _read(self) -> list[tuple[str, int]]:
        """(line, step) of each readable line; a kill mid-write leaves a torn last line, which is
        dropped (and any other unreadable line), saying so."""
        readable, torn, count = read_lines(self.path)
        if torn:
            where = "its torn last line" if torn == [count] else f"unreadable lines {torn}"
            print(f"dropped {where} from {self.path}")
        return readable

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                values[name] = str(value)
            else:
                self.writer.add_scalar(name, value, step)
        line = json.dumps({"step": step, **values}, sort_keys=True)
        self.lines.append(line)
        with disk_full_errors(self.path, needed_bytes=len(line) + 1), self.path.open("a") as out:
            out.write(line + "\n")

    def close(self) -> None:
        """Close the events; the log must hold what the run logged, or is rewritten from it."""
        if not self.enabled:
            return
        self.writer.close()
        found = self.path.read_bytes() if self.path.exists() else b""
        if found != "".join(line + "\n" for line in self.lines).encode():
            where = first_difference(found.decode(errors="replace").splitlines(), self.lines)
            print(
                f"{self.path} changed on disk while the run wrote it (line {where}): rewritten "
                "from the run's own record"
            )
            write_lines(self.path, self.lines)
