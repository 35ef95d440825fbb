"""Writing a bundle (amber_repro/provenance/archive.py): its name, and the gzipped tar with the
manifest first, the members in a fixed order, owners and times normalised, so that archiving one
run twice gives the same bytes."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from amber_repro.provenance.bundle_checks import MANIFEST
from amber_repro.provenance.git_tree import git
from amber_repro.provenance.hashing import sha256_file
from amber_repro.storage import atomic_path


class Bundle:
    """The members in order: (tar header, bytes or a file to read)."""

    def __init__(self, mtime: int):
        self.mtime = mtime
        self.members: list[tuple[tarfile.TarInfo, bytes | Path | None]] = []
        self.sha256: dict[str, str] = {}

    def _info(self, name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, self.mtime
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self.members.append((self._info(name, len(data)), data))
        self.sha256[name] = hashlib.sha256(data).hexdigest()

    def add_file(self, name: str, path: Path) -> None:
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        self.members.append((self._info(name, path.stat().st_size, mode), path))
        self.sha256[name] = sha256_file(path)

    def add_tree(self, prefix: str, folder: Path) -> None:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.add_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path)

    def add_git_archive(self, repo: Path, commit: str) -> None:
        """`git archive` of the commit under code/, as git writes it (its order, its modes)."""
        data = git(repo, "archive", "--format=tar", "--prefix=code/", commit)
        with tarfile.open(fileobj=io.BytesIO(data)) as source:
            for info in source:
                content = source.extractfile(info).read() if info.isfile() else None
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = self.mtime
                info.pax_headers = {}
                self.members.append((info, content))
                if info.issym():  # a symlink's "content" is its target
                    content = info.linkname.encode()
                if content is not None:
                    self.sha256[info.name] = hashlib.sha256(content).hexdigest()

    def write(self, path: Path, manifest: dict) -> None:
        """The tar.gz: the manifest first, then the members in the order added."""
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        with (
            atomic_path(path) as tmp,
            open(tmp, "wb") as raw,
            gzip.GzipFile(
                filename="", fileobj=raw, mode="wb", mtime=self.mtime, compresslevel=6
            ) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(self._info(MANIFEST, len(data)), io.BytesIO(data))
            for info, content in self.members:
                if isinstance(content, Path):
                    with open(content, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info, io.BytesIO(content) if content is not None else None)


def bundle_name(state: dict, args: argparse.Namespace) -> str:
    """amber-repro-<commit12>[-dirty-<diff8>][-wheels][-image][-results].tar.gz, from the tree's
    state and the archive's --with-* flags: bundles of one commit but another tree or other parts
    never share a name."""
    parts = ["amber-repro", state["commit"][:12]]
    if state["dirty"]:
        parts += ["dirty", state["diff_sha256"][:8]]
    parts += [kind for kind in ("wheels", "image", "results") if getattr(args, f"with_{kind}")]
    return "-".join(parts) + ".tar.gz"
