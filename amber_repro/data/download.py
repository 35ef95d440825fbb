"""Fetch pinned artefacts from the Hugging Face hub on the submit host (compute nodes may be
offline).

- `download-data`: PKU-SafeRLHF at a pinned revision, each split written unchanged to parquet.
- `download-model`: a model snapshot at a pinned revision into a local directory that jobs read
  with `local_files_only=True`.

The token, if any, comes from the environment (HF_TOKEN) through huggingface_hub; it is never
written to any output."""

from __future__ import annotations

import argparse
from pathlib import Path

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.sections import HubDataset
from amber_repro.provenance.run_context import command_line, run_context, software_versions
from amber_repro.storage import write_json


def resolve_dataset_commit(dataset: str, revision: str) -> str | None:
    """The commit sha a tag or branch points at today, recorded next to the data."""
    from huggingface_hub import HfApi

    return HfApi().dataset_info(dataset, revision=revision).sha


def download_dataset(dataset: str, revision: str, splits: dict[str, str], out_dir: Path) -> dict:
    """Write `{split}.parquet` for each of our split names, read from the hub split it maps to."""
    from datasets import load_dataset

    out_dir.mkdir(parents=True, exist_ok=True)
    commit = resolve_dataset_commit(dataset, revision)
    counts = {}
    for split, hub_split in sorted(splits.items()):
        # Load at the resolved commit, not the tag, so both splits come from the same snapshot.
        data = load_dataset(dataset, revision=commit or revision, split=hub_split)
        data.to_parquet(str(out_dir / f"{split}.parquet"))
        counts[split] = data.num_rows
    source = {
        "kind": "hub",
        "dataset": dataset,
        "revision": revision,
        "commit": commit,
        "splits": splits,
        "rows": counts,
        "software": software_versions(),
        "command": command_line(),
        "run": run_context(),
    }
    write_json(out_dir / "source.json", source)
    return source


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, (HubDataset, ("dataset", "revision")))
    parser.add_argument(
        "--split",
        action="append",
        default=None,
        metavar="OURS=HUB",
        help="our split name = the hub's split name (repeatable; default train=train test=test)",
    )
    parser.add_argument("--out-dir", type=Path, required=True)


def main_data(args: argparse.Namespace, hub: HubDataset) -> None:
    pairs = args.split or ["train=train", "test=test"]
    splits = dict(pair.split("=", 1) for pair in pairs)
    source = download_dataset(hub.dataset, hub.revision, splits, args.out_dir)
    print(f"downloaded {hub.dataset}@{source['commit']} rows {source['rows']} to {args.out_dir}")
