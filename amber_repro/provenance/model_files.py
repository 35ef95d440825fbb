"""A model folder's record of its own files, and the check of it where the folder is loaded.

Snakemake sees an output folder, not the files in it: after `rm .../dpo/model.safetensors` or junk
written over `sft/model.safetensors`, `snakemake -n` says "Nothing to be done" and the next stage
reading the folder failed in a transformers or safetensors traceback, or ran on the junk.

write_model_dir (models/export.py) records in amber_repro.json, under `files`, the size and sha256
of every file a load reads (FILE_PATTERNS: weights and their index, configs, tokenizer files);
folders written before that record `weights_sha256` only, which is checked then. check_model_dir,
called by training.runtime.load_model and load_tokenizer, checks them first: a missing or changed
file raises DamagedOutputError, one line naming the file and the command that rebuilds the folder.
A folder without amber_repro.json loads as before: a hub download (its amber_repro_source.json
records the repository and commit, not the files) or a folder made elsewhere.

Cost: sha256_file hashed 1 GiB in 0.8 s (2-core VM, OpenSSL's SHA-256 with SHA-NI, file in the page
cache), so 13 GB of 7B weights add about 10 s to a load, which then reads them from the warm cache.
Sizes are compared first (a stat each: a deleted or truncated file fails at once); hashes always
when recorded, since only a hash catches junk of the same size and ~10 s is little next to loading
and running a 7B stage. Each file is hashed once per process (cached by path, size, mtime and
inode): DPO loads the SFT folder twice.
"""

from __future__ import annotations

from pathlib import Path

from amber_repro.errors import AmberError
from amber_repro.provenance.hashing import MODEL_FILE_PATTERNS, sha256_file
from amber_repro.storage import read_json

RECORD_NAME = "amber_repro.json"
# What loading a model or its tokenizer reads (sharded weights have an index).
FILE_PATTERNS = (
    *MODEL_FILE_PATTERNS,
    "*.safetensors.index.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
)

_hashes: dict[tuple, str] = {}


class DamagedOutputError(AmberError):
    """A file of a finished output is missing or differs from its record; exit status 1."""

    exit_code = 1


def file_record(folder: Path) -> dict[str, dict]:
    """{name: {"bytes", "sha256"}} of the files in `folder` that a load reads."""
    files = {f for pattern in FILE_PATTERNS for f in Path(folder).glob(pattern) if f.is_file()}
    return {
        f.name: {"bytes": f.stat().st_size, "sha256": cached_sha256(f)}
        for f in sorted(files, key=lambda f: f.name)
    }


def cached_sha256(path: Path) -> str:
    """sha256_file, once per process for a file whose path, size, mtime and inode are unchanged."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)
    if key not in _hashes:
        _hashes[key] = sha256_file(path)
    return _hashes[key]


def _recorded(expected: dict) -> str:
    facts = []
    if expected.get("sha256"):
        facts.append(f"sha256 {expected['sha256'][:12]}")
    if expected.get("bytes") is not None:
        facts.append(f"{int(expected['bytes']):,} bytes")
    return "recorded " + ", ".join(facts) if facts else "recorded"


def problem(path: Path, expected: dict, hashes: bool = True) -> str | None:
    """What is wrong with one file against its record ({"sha256", "bytes"}, either may be absent):
    None when it matches. Without `hashes`, only whether it exists and its size."""
    if not path.is_file():
        return f"missing ({_recorded(expected)})"
    size, want_size = path.stat().st_size, expected.get("bytes")
    if want_size is not None and size != int(want_size):
        return f"changed: {size:,} bytes ({_recorded(expected)})"
    want = expected.get("sha256")
    if hashes and want and (got := cached_sha256(path)) != want:
        return f"changed: sha256 {got[:12]} ({_recorded(expected)})"
    return None


def snakemake_target(path: Path) -> str:
    """`path` as a Snakemake target: relative to the working directory (Snakemake finds no rule
    for an absolute path), unchanged when outside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def rebuild_hint(folder: Path, stage: str | None) -> str:
    made_by = f" (made by `python -m amber_repro {stage}`)" if stage else ""
    return f"rebuild it: snakemake --cores N --force {snakemake_target(folder)}{made_by}"


def recorded_files(folder: Path) -> tuple[dict[str, dict], str | None] | None:
    """The files amber_repro.json records ({name: {"sha256", "bytes"}}) and the stage that wrote
    the folder; None for a folder without the record."""
    path = folder / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (UnicodeDecodeError, ValueError) as error:
        raise DamagedOutputError(
            f"{path}: not readable JSON ({error}); {rebuild_hint(folder, None)}"
        ) from None
    if not isinstance(record, dict):
        raise DamagedOutputError(f"{path}: not a JSON object; {rebuild_hint(folder, None)}")
    stage = record.get("stage") if isinstance(record.get("stage"), str) else None
    files = record.get("files")
    if not isinstance(files, dict):  # written before `files` was recorded
        weights = record.get("weights_sha256")
        files = {
            n: {"sha256": h} for n, h in (weights if isinstance(weights, dict) else {}).items()
        }
    return {n: e for n, e in files.items() if isinstance(e, dict)}, stage


def check_model_dir(folder: str | Path) -> None:
    """Raise DamagedOutputError if a file the folder's amber_repro.json records is missing or
    differs from it (sizes of all first, then hashes); nothing to check without that record."""
    folder = Path(folder)
    found = recorded_files(folder)
    if found is None:
        return
    files, stage = found
    for hashes in (False, True):
        damaged = [
            (name, what)
            for name, expected in files.items()
            if (what := problem(folder / name, expected, hashes))
        ]
        if damaged:
            (name, what), more = damaged[0], [name for name, _ in damaged[1:]]
            also = f"; also damaged: {', '.join(more)}" if more else ""
            raise DamagedOutputError(
                f"{folder / name}: {what}{also}; {rebuild_hint(folder, stage)}"
            )
