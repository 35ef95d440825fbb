"""Hashes, atomic writes and the "how it was made" record every output carries."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from amber_repro import __version__


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(path: str | Path) -> dict[str, str]:
    """sha256 of every file under a directory (or of the file itself), keyed by relative path."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)}
    return {
        str(f.relative_to(path)): sha256_file(f) for f in sorted(path.rglob("*")) if f.is_file()
    }


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
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` for the block to write (a file, or a folder it creates);
    move it into place when the block succeeds, so readers see the old `path` or the whole new one.

    A file replaces the old one with one `os.replace`. A folder cannot replace a folder in one
    step: the old one is renamed aside, the new one renamed in, then the old one deleted. On any
    exception (KeyboardInterrupt and SystemExit included) the temporary is removed and `path` is
    left as it was. Temporaries that a killed earlier write of the same `path` left behind (a
    SIGKILL runs no clean-up) are removed first.
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
    except BaseException:
        _remove(tmp)
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


def command_line() -> list[str]:
    """The command that made an output, as typed (argv), for the record."""
    return [Path(sys.executable).name, "-m", "amber_repro", *sys.argv[1:]]
