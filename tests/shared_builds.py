"""Workflow runs built once per test session and shared by every pytest-xdist worker.

The embedded pipeline is the suite's most expensive input. Building it in each worker, or in each
test that needs a finished run, was most of `make test`'s time. Instead, as soon as a worker sees
that a collected test needs a build (`start_needed_builds`), the first worker to claim it starts
it in the background, in a folder all workers share; tests then wait for it (`SharedBuild.wait`)
and work on a private copy (`cp -a`, which keeps the mtimes Snakemake compares), so no test sees
another's edits and no two Snakemakes share a working directory.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from processes import PATIENCE, TAIL

# Test-only settings (on top of the embedded preset) for tests that check what a run does, not how
# well the tiny model learns: the whole DAG, every rule and every output kind, at a small fraction
# of the embedded default's cost. Tests that read training quality use the embedded default.
QUICK_SETTINGS = {
    "data": {"synthetic": {"train_rows": 400, "test_rows": 64}},
    "base_model": {
        "tiny": {
            "vocab_size": 512,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_layers": 2,
            "num_heads": 2,
        }
    },
    "sft": {"n_epochs": 2, "checkpoint_every": 4, "eval_every": 32, "eval_examples": 32},
    "dpo": {"checkpoint_every": 4, "eval_every": 64, "eval_examples": 32},
    "eval": {
        "bootstrap_iters": 100,
        "generations": {"prompts": 2, "max_new_tokens": 8},
        "safety": {"prompts": {"count": 4}, "max_new_tokens": 8},
    },
}


def quick_config() -> dict:
    """config/config.yaml for a quick run: the embedded preset and QUICK_SETTINGS."""
    return {"preset": "embedded", **QUICK_SETTINGS}


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder that every xdist worker sees (the basetemp itself without workers)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


class SharedBuild:
    """One workflow run (`snakemake` on rule all) in `<root>/<name>`, started by whichever worker
    claims it first. `make` prepares the working directory (copy the workflow, write its config)."""

    def __init__(self, root: Path, name: str, make):
        self.path = root / name
        self.make = make
        self.claim = root / f"{name}.claim"
        self.log = root / f"{name}.log"
        self.exit_file = root / f"{name}.exit"
        self.process: subprocess.Popen | None = None

    def start(self, snakemake_command: list[str], env: dict[str, str]) -> None:
        """Start the build unless another worker has (an exclusive create is the claim)."""
        try:
            os.close(os.open(self.claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        try:
            self.make(self.path)
        except BaseException:
            self.exit_file.write_text("preparing the working directory failed\n")
            raise
        # The exit status is written last, through a rename, so a waiter never reads half of it.
        script = (
            f"{shlex.join(snakemake_command)} > {shlex.quote(str(self.log))} 2>&1; "
            f"echo $? > {shlex.quote(str(self.exit_file))}.part && "
            f"mv {shlex.quote(str(self.exit_file))}.part {shlex.quote(str(self.exit_file))}"
        )
        self.process = subprocess.Popen(
            ["sh", "-c", script], cwd=self.path, env=env, start_new_session=True
        )

    def wait(self) -> Path:
        """The finished build's folder; fails naming the build and its last output if it failed."""
        deadline = time.monotonic() + PATIENCE
        while not self.exit_file.exists():
            if time.monotonic() > deadline or not self.claim.exists():
                pytest.fail(f"the shared build {self.path.name} never finished ({self.log})")
            time.sleep(1)
        status = self.exit_file.read_text().strip()
        if status != "0":
            tail = self.log.read_text()[-TAIL:] if self.log.exists() else ""
            pytest.fail(f"the shared build {self.path.name} failed ({status}):\n{tail}")
        return self.path

    def copy(self, destination: Path) -> Path:
        """A private copy of the finished build (mtimes kept: nothing in it is out of date)."""
        shutil.copytree(self.wait(), destination, symlinks=True)
        return destination

    def finish(self) -> None:
        """At the end of the starting worker's session: let a running build end (another worker may
        be waiting for it); on Ctrl-C, kill it with everything it started."""
        if self.process is None:
            return
        try:
            self.process.wait()
        except KeyboardInterrupt:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
