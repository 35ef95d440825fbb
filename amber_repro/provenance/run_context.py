"""Hashes, atomic writes and the "how it was made" record every output carries."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amber_repro import __version__
from amber_repro.provenance.hashing import sha256_file


def software_versions() -> dict[str, str]:
    """Versions of the packages that decide an output's bytes."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"amber_repro": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "datasets", "polars", "pyarrow", "lm_eval"):
        try:
            versions[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            continue
    return versions


def kernel_settings() -> dict[str, bool] | None:
    """The GPU numerics a stage ran with, read from torch (training.set_kernels sets them): TF32
    matmuls and convolutions, deterministic kernels. None where torch was never imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return {
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def command_line() -> list[str]:
    """The command that made an output, as typed (argv), for the record."""
    return [Path(sys.executable).name, "-m", "amber_repro", *sys.argv[1:]]


REPO_DIR = Path(__file__).resolve().parents[2]


# Snakemake computes the run context once (rules/common.smk) and hands it to every job in these
# variables; a stage run by hand computes it itself.
RUN_ENV = {
    "git_commit": "AMBER_REPRO_GIT_COMMIT",
    "git_dirty": "AMBER_REPRO_GIT_DIRTY",
    "git_diff_sha256": "AMBER_REPRO_GIT_DIFF_SHA256",
    "config_sha256": "AMBER_REPRO_CONFIG_SHA256",
    "lock_sha256": "AMBER_REPRO_LOCK_SHA256",
}


def _git(*args: str, repo: Path, env: dict | None = None) -> bytes | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, timeout=30, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def working_tree_patch(repo: Path) -> bytes | None:
    """The tree's whole difference from HEAD as one binary patch: tracked changes and the
    untracked files that are not ignored, with their contents (`git diff HEAD` alone leaves those
    out). Made with a scratch index, so the repository's own index is not touched."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if _git("read-tree", "HEAD", repo=repo, env=env) is None:
            return None
        if _git("add", "-A", repo=repo, env=env) is None:
            return None
        return _git("diff", "--cached", "--binary", "HEAD", repo=repo, env=env)


def git_state(repo: Path = REPO_DIR) -> dict:
    """The commit checked out in `repo`, whether the tree differs from it (untracked files count),
    and the sha256 of that difference (working_tree_patch: untracked files' contents included)
    when it does; nulls outside a git checkout."""
    commit = _git("rev-parse", "HEAD", repo=repo)
    status = _git("status", "--porcelain", repo=repo)
    if commit is None or status is None:
        return {"git_commit": None, "git_dirty": None, "git_diff_sha256": None}
    dirty = bool(status.strip())
    diff = working_tree_patch(repo) if dirty else None
    return {
        "git_commit": commit.decode().strip(),
        "git_dirty": dirty,
        "git_diff_sha256": hashlib.sha256(diff).hexdigest() if diff is not None else None,
    }


def config_sha256(config: dict) -> str:
    """sha256 of a resolved config as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_context_env(config: dict, repo: Path = REPO_DIR) -> dict[str, str]:
    """The run context as environment variables, for Snakemake to hand to its jobs."""
    lock = repo / "requirements.lock"
    context = {
        **git_state(repo),
        "config_sha256": config_sha256(config),
        "lock_sha256": sha256_file(lock) if lock.is_file() else None,
    }
    return {RUN_ENV[key]: json.dumps(value) for key, value in context.items()}


def run_context() -> dict:
    """Which code and settings made an output: git commit, dirty flag, diff hash, config hash, lock
    hash. Every stage record carries it under "run"."""
    if RUN_ENV["config_sha256"] in os.environ:
        return {key: json.loads(os.environ.get(name, "null")) for key, name in RUN_ENV.items()}
    lock = REPO_DIR / "requirements.lock"
    return {
        **git_state(),
        "config_sha256": None,  # run by hand: the flags in "command" are the settings
        "lock_sha256": sha256_file(lock) if lock.is_file() else None,
    }


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def gpu_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    result = subprocess.run(query, capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0].strip() if result.stdout.strip() else None


def hardware() -> dict:
    """CPU model; GPU model, driver and CUDA version when a GPU is present."""
    found = {"cpu": cpu_model(), "cpus": os.cpu_count(), "gpus": []}
    try:
        import torch
    except ImportError:
        return found
    if torch.cuda.is_available():
        driver = gpu_driver()
        found["gpus"] = [
            {"model": torch.cuda.get_device_name(i), "driver": driver, "cuda": torch.version.cuda}
            for i in range(torch.cuda.device_count())
        ]
    return found


RECORD_SUFFIX = ".record.json"  # the record of a stage whose outputs cannot hold one


def write_job_record(path: Path, **facts) -> None:
    """The record of a stage whose outputs are for people (Markdown, figures) or plain data:
    its command line, software, GPU numerics and run context, what the provenance crate reads
    for its job (named <output>.record.json beside the output)."""
    from amber_repro.storage import write_json

    record = {
        "command": command_line(),
        "software": software_versions(),
        "kernels": kernel_settings(),
        "run": run_context(),
        **facts,
    }
    write_json(path, record)
