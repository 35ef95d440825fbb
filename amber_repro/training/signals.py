"""Stopping a training loop cleanly on SIGTERM (SLURM's warning) or Ctrl-C."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from amber_repro.errors import StopRequested


class SigtermFlag:
    """Turns SIGTERM (what SLURM sends before a time limit) and a first SIGINT (Ctrl-C) into a
    flag the loop checks after each optimizer step, to save and stop there. A second Ctrl-C stops
    at once (KeyboardInterrupt; the CLI prints one line): what it cuts short has no manifest, so it
    is never resumed."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self.interrupts = 0
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # a third one ends the process
                raise KeyboardInterrupt
            # os.write, not print: a handler may run in the middle of another print.
            os.write(2, b"\nSIGINT: saving a checkpoint and stopping; Ctrl-C again stops at once\n")
        self.requested = True
        self.signum = self.signum or signum

    def stop(self, state_dir: Path, step: int):
        signum = self.signum or signal.SIGTERM  # another process had the signal
        raise StopRequested(
            f"{signal.Signals(signum).name}: saved a checkpoint at optimizer step {step} in "
            f"{state_dir}; rerun to resume",
            exit_code=128 + signum,
        )
