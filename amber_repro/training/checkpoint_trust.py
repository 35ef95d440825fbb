"""What makes a resumable checkpoint trusted: a signed manifest of every file, checked before torch
reads anything in the folder.

results/ may sit on shared scratch that other users can write, and torch's distributed checkpoint
reader unpickles `.metadata`, so a replaced file could run code. Each checkpoint therefore ends with
`manifest.json` (written last, atomically): the size and sha256 of every file (the run's
metrics.jsonl up to the checkpoint's step included), the run's fingerprint and step, and an
HMAC-SHA256 over all of it keyed by a per-user secret kept outside results/ ($AMBER_REPRO_KEY_FILE,
default ${XDG_CONFIG_HOME:-~/.config}/amber-repro/checkpoint.key). A folder whose manifest is
missing, unsigned by this key, or disagrees with any file is not used. Loading then unpickles only
the `.metadata` bytes it has just matched to the manifest, and reads every other non-tensor value
with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import pickle
import secrets
from pathlib import Path

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from amber_repro.errors import CheckpointError

MANIFEST = "manifest.json"
FORMAT = "amber-repro checkpoint manifest 2"  # 2: metrics.jsonl is one of the files
KEY_BYTES = 32


class Rejected(Exception):
    """A checkpoint folder that must not be used; the message says why, in a few words."""


def key_file() -> Path:
    if os.environ.get("AMBER_REPRO_KEY_FILE"):
        return Path(os.environ["AMBER_REPRO_KEY_FILE"]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "amber-repro" / "checkpoint.key"


def load_key(announce: bool = False) -> bytes:
    """This user's checkpoint key, created (32 random bytes, mode 0600, folder 0700) if absent."""
    path = key_file()
    if not path.exists():
        _create_key(path)
        if announce:
            print(f"created checkpoint key {path} (mode 0600)")
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint key {path}: {error}") from None
    if mode & 0o077:
        raise CheckpointError(
            f"checkpoint key {path} is open to other users (mode {oct(mode & 0o777)}), who could "
            f"sign checkpoints with it: chmod 600 {path}"
        )
    if len(key) < KEY_BYTES:
        raise CheckpointError(f"checkpoint key {path} has {len(key)} bytes, not {KEY_BYTES}")
    return key


def _create_key(path: Path) -> None:
    """Written under a temporary name and hard-linked in, so a concurrent run never reads half a
    key and never replaces one another run has already signed with."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except OSError as error:
        raise CheckpointError(
            f"cannot create checkpoint key {path}: {error} (set AMBER_REPRO_KEY_FILE to a file "
            "only you can read)"
        ) from None


def file_digest(path: Path) -> dict:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def folder_files(folder: Path) -> list[str]:
    """The names of what the folder holds, the manifest excepted (anything but a plain file is
    listed too, and then fails the check)."""
    return sorted(e.name for e in os.scandir(folder) if e.name != MANIFEST)


def _signature(body: dict, key: bytes) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def write_manifest(folder: Path, files: dict[str, dict], fingerprint: str, step: int) -> None:
    """Sign and write the manifest; the last write of a checkpoint, so its presence means the
    folder is complete."""
    body = {"format": FORMAT, "fingerprint": fingerprint, "step": step, "files": files}
    manifest = {**body, "hmac_sha256": _signature(body, load_key())}
    tmp = folder / f".{MANIFEST}.tmp"
    with tmp.open("w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / MANIFEST)


def verify_folder(folder: Path, key: bytes) -> dict:
    """The folder's manifest once its signature and every file check out; Rejected otherwise."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise Rejected(f"no {MANIFEST} (its save did not finish)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Rejected(f"unreadable {MANIFEST} ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("hmac_sha256"), str):
        raise Rejected(f"{MANIFEST} is not a checkpoint manifest")
    body = {k: v for k, v in manifest.items() if k != "hmac_sha256"}
    if not hmac.compare_digest(_signature(body, key), manifest["hmac_sha256"]):
        raise Rejected(
            f"{MANIFEST} is not signed with this user's key {key_file()} (written with another "
            "key, or altered)"
        )
    if body.get("format") != FORMAT:
        raise Rejected(
            f"{MANIFEST} has format {body.get('format')!r}, not {FORMAT!r} (written by another "
            "amber_repro version)"
        )
    listed, present = set(manifest["files"]), set(folder_files(folder))
    if present - listed:
        raise Rejected(f"unexpected file {sorted(present - listed)[0]}")
    if listed - present:
        raise Rejected(f"missing file {sorted(listed - present)[0]}")
    for name in sorted(listed):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise Rejected(f"{name} is not a plain file")
        expected, size = manifest["files"][name], path.stat().st_size
        if size != expected["size"]:
            raise Rejected(f"{name} has {size} bytes, the manifest says {expected['size']}")
        if file_digest(path)["sha256"] != expected["sha256"]:
            raise Rejected(f"{name} does not match its sha256 in the manifest")
    return manifest


class VerifiedReader(FileSystemReader):
    """Reads `.metadata` once into memory and unpickles it only if those very bytes have the
    sha256 the signed manifest gives, so a file swapped after the check is refused."""

    def __init__(self, folder: Path, metadata_sha256: str):
        super().__init__(folder)
        self.metadata_sha256 = metadata_sha256

    def read_metadata(self) -> Metadata:  # no rank argument: no fallback to other files
        data = (Path(self.path) / ".metadata").read_bytes()
        if hashlib.sha256(data).hexdigest() != self.metadata_sha256:
            raise CheckpointError(f"{self.path}/.metadata changed after it was verified")
        metadata = pickle.loads(data)  # authenticated above: written by this user's own run
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class WeightsOnlyPlanner(DefaultLoadPlanner):
    """DCP loads non-tensor values (the optimizer's param_groups) with weights_only=False; these
    are plain numbers, strings and lists, which weights_only=True reads without running code."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded
