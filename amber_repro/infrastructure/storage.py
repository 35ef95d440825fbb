"""A full disk, named: which file system, which file, how much was free and about how much was
needed.

Libraries report a full disk in their own words: Python raises OSError ENOSPC, polars "No space
left on device (os error 28)", torch's zip writer "[enforce fail at inline_container.cc] ...
unexpected pos 704 vs 598" (the write after the one that failed). `disk_full_errors` turns each of
these into one DiskFullError a user can act on.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amber_repro.infrastructure.errors import DiskFullError

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
