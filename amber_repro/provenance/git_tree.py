"""The code's state in git, as an archive names it: the commit, whether the tree differs from it,
and the difference as a patch."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from amber_repro.errors import AmberError


class ArchiveError(AmberError):
    exit_code = 2


def git(repo: Path, *args: str, env: dict | None = None) -> bytes:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, env=env, check=False
        )
    except OSError as error:
        raise ArchiveError(f"git: {error}") from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise ArchiveError(f"git {' '.join(args)}: {message}")
    return result.stdout


def tree_state(repo: Path) -> dict:
    """The commit, whether the tree differs from it (untracked files count, as in the stages' run
    context), the sha256 of `git diff HEAD --binary` (the run context's diff hash) and the whole
    change as a patch that also creates the untracked files (made with a scratch index)."""
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    status = git(repo, "status", "--porcelain").decode().splitlines()
    state = {"commit": commit, "dirty": bool(status), "status": status}
    state["time"] = int(git(repo, "show", "-s", "--format=%ct", "HEAD").decode())
    state["diff_sha256"] = state["patch"] = None
    if status:
        state["diff_sha256"] = hashlib.sha256(git(repo, "diff", "HEAD", "--binary")).hexdigest()
        with tempfile.TemporaryDirectory() as scratch:
            env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
            git(repo, "read-tree", "HEAD", env=env)
            git(repo, "add", "-A", env=env)
            state["patch"] = git(repo, "diff", "--cached", "--binary", "HEAD", env=env)
    return state
