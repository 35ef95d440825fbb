"""`chat-download`: one data file of a hub dataset at a pinned revision, byte for byte, on the
submit host.

The file is fetched as stored (no `load_dataset` conversion), at the commit the revision resolves to
today, and its sha256 is checked against `amberchat.data.<source>.sha256` when that is set; the
record beside it holds the dataset, revision, commit and sha256. The token, if any, comes from the
environment (HF_TOKEN) through huggingface_hub and is never written.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pydantic import ValidationError

from amber_repro.config.chat_sections import ChatSource
from amber_repro.errors import ConfigError, DataError
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.run_context import command_line, run_context, software_versions
from amber_repro.storage import atomic_path, write_json


def check_sha256(path: Path, expected: str | None, what: str) -> str:
    """The file's sha256; a mismatch with `expected` (when set) is an error naming both."""
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise DataError(
            f"{what}: sha256 {actual} does not match the pinned {expected} "
            "(the file changed at this revision, or the pin is wrong)"
        )
    return actual


def download_file(source: ChatSource, out: Path, record: Path) -> dict:
    """Fetch `source.file` into `out` and write its provenance record to `record`."""
    from huggingface_hub import HfApi, hf_hub_download

    commit = HfApi().dataset_info(source.dataset, revision=source.revision).sha
    cached = hf_hub_download(
        repo_id=source.dataset, filename=source.file, repo_type="dataset", revision=commit
    )
    what = f"{source.dataset}@{commit}/{source.file}"
    sha256 = check_sha256(Path(cached), source.sha256, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        shutil.copyfile(cached, tmp)
    details = {
        "kind": "hub",
        **source.model_dump(),
        "commit": commit,
        "sha256": sha256,
        "software": software_versions(),
        "command": command_line(),
        "run": run_context(),
    }
    write_json(record, details)
    return details


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="Hugging Face dataset id")
    parser.add_argument("--revision", required=True, help="tag, branch or commit sha")
    parser.add_argument("--file", required=True, help="the data file in the repository")
    parser.add_argument("--sha256", default=None, help="expected sha256 (checked when given)")
    parser.add_argument("--out", type=Path, required=True, help="where the file is written")
    parser.add_argument("--record", type=Path, required=True, help="its source record (JSON)")


def source_from_args(args: argparse.Namespace) -> ChatSource:
    values = {key: getattr(args, key) for key in ChatSource.model_fields}
    try:
        return ChatSource(**values)
    except ValidationError as error:
        raise ConfigError(
            "\n".join(f"--{p['loc'][0]}: {p['msg']} (got {p['input']!r})" for p in error.errors())
        ) from None


def main(args: argparse.Namespace) -> None:
    details = download_file(source_from_args(args), args.out, args.record)
    print(f"downloaded {details['dataset']}@{details['commit']}/{details['file']} to {args.out}")
