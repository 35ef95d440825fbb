"""Running the commands a test starts (Snakemake, a stage, torchrun, make) so that a slow machine
only makes them slower.

No command has a time limit of its own: a CI runner under load may take several times as long as a
quiet machine. A hang is caught by the whole-test limit (pytest-timeout, `timeout` in
pyproject.toml). Whatever ends a command early (that limit, Ctrl-C, a failing assertion in a
thread) kills its whole process group, so no Snakemake or job it started lives on, clears the
lock of a Snakemake working directory, so no later test fails with "Directory cannot be locked",
and names the command with the end of its output in the failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

TAIL = 3000  # characters of output shown when a command is cut short
# Seconds a test waits for something to happen in a background run (a job to start, a step to be
# logged) before it fails saying what it waited for: long enough for a loaded CI runner.
PATIENCE = 1800


def run(
    command: Sequence[str | os.PathLike],
    *,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    snakemake_dir: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """Run `command` to completion in a process group of its own and return its exit status and
    text output; `input`, if given, is its standard input. `snakemake_dir`: the Snakemake working
    directory whose lock is cleared if the run is cut short."""
    process = subprocess.Popen(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(input)
    except BaseException as interruption:
        stdout, stderr = stop(process)
        if snakemake_dir is not None:
            unlock(Path(snakemake_dir))
        if isinstance(interruption, KeyboardInterrupt):
            raise
        shown = " ".join(str(part) for part in command)
        pytest.fail(
            f"{interruption.__class__.__name__}: {interruption}\ncut short: {shown}\n"
            f"last output:\n{(stdout + stderr)[-TAIL:]}",
            pytrace=False,
        )
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def stop(process: subprocess.Popen) -> tuple[str, str]:
    """Kill the process and every process it started (its group); what it had written."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)
    stdout, stderr = process.communicate()
    return stdout or "", stderr or ""


def unlock(workdir: Path) -> None:
    """What `snakemake --unlock` does: remove the working directory's locks, which a killed
    Snakemake leaves behind."""
    shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)


def run_in_process(
    argv: Sequence[str | os.PathLike], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m amber_repro <argv>` in this process: the same argument parsing, settings checks,
    stage and error handling, with its exit status and what it printed. For tests where the
    process boundary is not what is tested: starting torch and transformers costs seconds per
    process on a 2-core CPU. `env`: variables set for the call only; its OMP_NUM_THREADS also
    sets torch's threads for the call, as it would in a new process (results compared bit for bit
    with a stage process depend on it)."""
    import torch

    from amber_repro.__main__ import main

    arguments = [str(part) for part in argv]
    stdout, stderr = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        if env and "OMP_NUM_THREADS" in env:
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        try:
            code = main(arguments)
        except SystemExit as exit:  # what the interpreter would do with it (argparse, --help)
            code = exit_status(exit)
        finally:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(arguments, code, stdout.getvalue(), stderr.getvalue())


def exit_status(exit: SystemExit) -> int:
    """The exit status a process ending with `exit` has; a message is printed to stderr, as the
    interpreter does."""
    if exit.code is None or isinstance(exit.code, int):
        return exit.code or 0
    print(exit.code, file=sys.stderr)
    return 1
