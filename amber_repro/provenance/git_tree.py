"""The code's state in git, as an archive names it: the commit, whether the tree differs from it,
and the difference as a patch."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from amber_repro.errors import AmberError
from amber_repro.provenance.run_context import working_tree_patch


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
    context), and the difference as a patch that also creates the untracked files, with its sha256
    (the run context's git_diff_sha256: run_context.working_tree_patch)."""
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    status = git(repo, "status", "--porcelain").decode().splitlines()
    state = {"commit": commit, "dirty": bool(status), "status": status}
    state["time"] = int(git(repo, "show", "-s", "--format=%ct", "HEAD").decode())
    state["diff_sha256"] = state["patch"] = None
    if status:
        state["patch"] = working_tree_patch(repo)
        if state["patch"] is None:
            raise ArchiveError(f"{repo}: git could not diff the working tree against HEAD")
        state["diff_sha256"] = hashlib.sha256(state["patch"]).hexdigest()
    return state
