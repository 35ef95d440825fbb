"""Hashes, atomic writes and the "how it was made" record every output carries."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from amber_repro import __version__
from amber_repro.infrastructure.errors import DiskFullError
from amber_repro.infrastructure.storage import disk_full_message, is_disk_full


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# The files of a save_pretrained folder that decide what the model computes (not its records:
# the card and amber_repro.json hold timings, TensorBoard files wall times and host names).
MODEL_FILE_PATTERNS = ("*.safetensors", "config.json", "generation_config.json", "tokenizer*")


def sha256_model(folder: str | Path) -> dict[str, str]:
    """sha256 of a model folder's weights, configs and tokenizer files, keyed by name."""
    folder = Path(folder)
    files = {f for pattern in MODEL_FILE_PATTERNS for f in folder.glob(pattern) if f.is_file()}
    return {f.name: sha256_file(f) for f in sorted(files)}


def _temporary_names(path: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(path.name)}\.tmp-[0-9a-f]{{8}}")


def _temporary_sibling(path: Path) -> Path:
    """A hidden, unused name beside `path` (same folder: a rename is atomic), .NAME.tmp-XXXXXXXX."""
    while True:
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        if not os.path.lexists(tmp):
            return tmp


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    if _is_folder(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of `path` for the block to write (a file, or a folder it creates);
    move it into place when the block succeeds, so readers see the old `path` or the whole new one.

    A file replaces the old one with one `os.replace`. A folder cannot replace a folder in one
    step: the old one is renamed aside, the new one renamed in, then the old one deleted. On any
    exception (KeyboardInterrupt and SystemExit included) the temporary is removed and `path` is
    left as it was. Temporaries that a killed earlier write of the same `path` left behind (a
    SIGKILL runs no clean-up) are removed first. A full disk is re-raised as DiskFullError naming
    the file system, `path` and the space free and (`needed_bytes`, an estimate) needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = _temporary_names(path)
    for leftover in path.parent.iterdir():
        if stale.fullmatch(leftover.name):
            _remove(leftover)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(f"{path}: nothing was written to its temporary {tmp}")
        if (_is_folder(tmp) or _is_folder(path)) and os.path.lexists(path):
            old = _temporary_sibling(path)
            path.rename(old)
            try:
                tmp.rename(path)
            except BaseException:
                old.rename(path)
                raise
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException as error:
        _remove(tmp)
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise DiskFullError(disk_full_message(path, needed_bytes)) from error
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the whole new one, never a partial one."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


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


# --- which code and config made an output ---------------------------------------------------------

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


def _git(*args: str, repo: Path) -> bytes | None:
    try:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def git_state(repo: Path = REPO_DIR) -> dict:
    """The commit checked out in `repo`, whether the tree differs from it (untracked files count),
    and the sha256 of `git diff HEAD` when it does; nulls outside a git checkout."""
    commit = _git("rev-parse", "HEAD", repo=repo)
    status = _git("status", "--porcelain", repo=repo)
    if commit is None or status is None:
        return {"git_commit": None, "git_dirty": None, "git_diff_sha256": None}
    dirty = bool(status.strip())
    diff = _git("diff", "HEAD", "--binary", repo=repo) if dirty else None
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


def dag_order(jobs: list[dict]) -> list[dict]:
    """The jobs (each with "inputs" and "outputs" paths) reordered so that every job comes after
    the jobs making its inputs, otherwise keeping their order: the crate lists them so. An input
    inside an output folder counts as that folder's. A cycle (impossible in a Snakemake DAG) is
    an error naming the jobs left."""
    maker = {Path(path): i for i, job in enumerate(jobs) for path in job["outputs"]}

    def makers(job: dict) -> set[int]:
        found = set()
        for path in map(Path, job["inputs"]):
            found |= {maker[p] for p in (path, *path.parents) if p in maker}
        return found

    needs = [makers(job) - {i} for i, job in enumerate(jobs)]
    placed: list[int] = []
    while len(placed) < len(jobs):
        ready = [i for i in range(len(jobs)) if i not in placed and needs[i] <= set(placed)]
        if not ready:
            left = [jobs[i]["job"] for i in range(len(jobs)) if i not in placed]
            raise ValueError(f"the jobs {left} depend on each other in a cycle")
        placed.append(ready[0])
    return [jobs[i] for i in placed]
