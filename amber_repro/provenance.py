"""Hashes, atomic writes and the "how it was made" record every output carries."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the whole new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
