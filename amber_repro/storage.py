"""A full disk, named: which file system, which file, how much was free and about how much was
needed.

Libraries report a full disk in their own words: Python raises OSError ENOSPC, polars "No space
left on device (os error 28)", torch's zip writer "[enforce fail at inline_container.cc] ...
unexpected pos 704 vs 598" (the write after the one that failed). `disk_full_errors` turns each of
these into one DiskFullError a user can act on.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from amber_repro.errors import DiskFullError

FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How libraries that do not raise OSError word it (polars/Rust, torch's PyTorchStreamWriter).
FULL_DISK_TEXTS = ("no space left on device", "os error 28", "unexpected pos", "file write failed")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, an error it was raised from, or (torch's distributed checkpoint) one of the
    processes' errors it collects, says that a write found no space."""
    pending, seen = [error], set()
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL_DISK_ERRNOS:
            return True
        if any(text in str(error).lower() for text in FULL_DISK_TEXTS):
            return True
        pending += [error.__cause__, error.__context__]
        # CheckpointException.failures: rank -> (the exception that process raised, its stack)
        failures = getattr(error, "failures", None)
        if isinstance(failures, dict):
            for failure in failures.values():
                pending += failure if isinstance(failure, tuple) else [failure]
    return False


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds `path` (or would, once created)."""
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path):
        path = path.parent
    return path


def file_system(path: Path) -> str:
    """'<mount point> (<type>)', e.g. '/scratch (lustre)'; the type when /proc/mounts says it."""
    mount = mount_point(path)
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1] == str(mount):
                return f"{mount} ({fields[2]})"
    except OSError:
        pass
    return str(mount)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(mount_point(path)).free


def disk_full_message(path: Path, needed_bytes: int | None) -> str:
    needed = "" if needed_bytes is None else f", about {human_bytes(needed_bytes)} needed"
    return (
        f"no space left on {file_system(path)} writing {path} "
        f"({human_bytes(free_bytes(path))} free{needed})"
    )


@contextmanager
def disk_full_errors(path: str | Path, needed_bytes: int | None = None) -> Iterator[None]:
    """Re-raise a full-disk error inside the block as DiskFullError naming `path`. The caller
    removes what it had half-written (atomic_path does); free space is read after that."""
    try:
        yield
    except BaseException as error:  # torch's CheckpointException is a BaseException
        if isinstance(error, DiskFullError) or not is_disk_full(error):
            raise
        raise DiskFullError(disk_full_message(Path(path), needed_bytes)) from error


def tensor_bytes(tensors) -> int:
    """Bytes of the tensors in a (possibly nested) state dict: what saving it will write, about."""
    import torch

    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(tensor_bytes(v) for v in tensors.values())
    if isinstance(tensors, list | tuple):
        return sum(tensor_bytes(v) for v in tensors)
    return 0


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
