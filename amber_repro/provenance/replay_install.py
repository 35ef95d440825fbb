"""The environment a replay runs in (amber_repro/provenance/replay.py): the run's minor Python
version, the lock installed (or an environment reused), offline, the archived commit claimed."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from amber_repro.errors import AmberError
from amber_repro.provenance.run_context import RUN_ENV

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
GIT_CONTEXT_KEYS = {key: RUN_ENV[key] for key in ("git_commit", "git_dirty", "git_diff_sha256")}
GIT_CONTEXT = set(GIT_CONTEXT_KEYS.values())


class ReplayError(AmberError):
    exit_code = 2


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_logged(command: list, log: Path, **kwargs) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        handle.write(f"$ {' '.join(map(str, command))}\n".encode())
        handle.flush()
        return subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, check=False, **kwargs
        ).returncode


def check_interpreter(python: str | Path, manifest: dict) -> None:
    """Refuse an interpreter of another minor version than the run's (BUNDLE.json `interpreter`;
    bundles without it are not checked): compiled wheels and float results may differ."""
    wanted = manifest.get("interpreter", {}).get("python")
    if not wanted:
        return
    try:
        found = subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise ReplayError(f"{python}: cannot run it to read its version ({error})") from None
    if found.split(".")[:2] != wanted.split(".")[:2]:
        minor = ".".join(wanted.split(".")[:2])
        raise ReplayError(
            f"the run used Python {wanted} ({manifest['interpreter'].get('platform')}), {python} "
            f"is Python {found}: replay with a Python {minor} interpreter (--python or --venv)"
        )


def install(args: argparse.Namespace, target: Path, manifest: dict) -> Path:
    """The Python of the replay's environment (of the run's minor version)."""
    code, log = target / "code", target / "replay-logs" / "install.log"
    if args.python or args.venv:
        python = Path(args.python) if args.python else Path(args.venv) / "bin" / "python"
        if not python.exists():
            raise ReplayError(f"{python}: no such interpreter")
        check_interpreter(python, manifest)
        say(f"environment: reusing {python}")
        return python.absolute()
    # The new environment's interpreter: this one (venv from the wheels) or make's python3.
    check_interpreter(
        sys.executable if (target / "wheels").is_dir() else shutil.which("python3") or "python3",
        manifest,
    )
    venv = code / ".venv"
    if (target / "wheels").is_dir():
        say(f"environment: {venv} from the bundled wheels (no package index; log {log})")
        wheels = str(target / "wheels")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--isolated", "install", "-q"]
        offline = ["--no-index", "--find-links", wheels]
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [*pip, *offline, "-r", str(target / "requirements.lock")],
            [*pip, *offline, "--no-deps", "-e", str(code)],
        ]
    else:
        say(f"environment: `make .venv/.installed` in {code} (from the package index; log {log})")
        steps = [["make", "-C", str(code), ".venv/.installed"]]
    for step in steps:
        if run_logged(step, log) != 0:
            raise ReplayError(f"installing failed: {' '.join(step)} (see {log})")
    return venv / "bin" / "python"


def environment(python: Path, target: Path, manifest: dict, claim: bool) -> dict[str, str]:
    """Offline, the replay's interpreter first, its code imported before any installed copy; with
    `claim`, the archived commit for the stages' run context (provenance.run_context), which a
    checkout would give them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and k not in GIT_CONTEXT}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(target / "code")
    env.update(OFFLINE)
    if claim:
        run = manifest.get("run", {})
        env.update({name: json.dumps(run.get(key)) for key, name in GIT_CONTEXT_KEYS.items()})
    return env
