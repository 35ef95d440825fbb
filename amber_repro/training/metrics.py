"""Per-step training metrics: JSONL and TensorBoard events that survive a kill."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from amber_repro.storage import disk_full_errors


class MetricsLog:
    """Per-step metrics as JSONL and TensorBoard events in the state folder (they survive a
    kill)."""

    def __init__(self, state_dir: Path, start_step: int, enabled: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.enabled = enabled
        self.path = state_dir / "metrics.jsonl"
        if not enabled:
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in self._read() if r[1] <= start_step]  # drop steps after the checkpoint
        self.path.write_text("".join(line + "\n" for line, _ in kept))
        if start_step == 0:
            shutil.rmtree(state_dir / "tensorboard", ignore_errors=True)
        self.writer = SummaryWriter(str(state_dir / "tensorboard"), purge_step=start_step + 1)

    def _read(self) -> list[tuple[str, int]]:
        """(line, step) of each readable line; a kill mid-write leaves a torn last line, which is
        dropped (and any other unreadable line), saying so."""
        text = self.path.read_text(errors="replace") if self.path.exists() else ""
        lines = text.splitlines()
        readable, torn = [], []
        for number, line in enumerate(lines, 1):
            try:
                readable.append((line, int(json.loads(line)["step"])))
            except (ValueError, KeyError, TypeError):
                torn.append(number)
        if torn:
            where = "its torn last line" if torn == [len(lines)] else f"unreadable lines {torn}"
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
        line = json.dumps({"step": step, **values}, sort_keys=True) + "\n"
        with disk_full_errors(self.path, needed_bytes=len(line)), self.path.open("a") as handle:
            handle.write(line)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
