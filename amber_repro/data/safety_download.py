"""Fetch the safety evaluation's pinned artefacts on the submit host (compute nodes may be offline).

- `download-safety-prompts`: the harmful prompts (PKU-Alignment/BeaverTails-Evaluation) at a pinned
  revision, as prompts.parquet (the rows unchanged) and source.json.
- `download-judge`: the judge model (PKU-Alignment/beaver-dam-7b) at a pinned revision. Its weights
  are published only as PyTorch pickles (pytorch_model-*.bin); they are fetched into a temporary
  folder outside results/, loaded with `torch.load(weights_only=True)` (tensors only, no code) and
  written into the output folder as safetensors, so the judging job, like every job, reads no
  pickle."""

from __future__ import annotations

import argparse
from pathlib import Path

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.eval_sections import SafetyPrompts
from amber_repro.data.download import download_dataset


def add_prompts_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, (SafetyPrompts, ("dataset", "revision", "split")))
    parser.add_argument("--out-dir", type=Path, required=True)


def main_prompts(args: argparse.Namespace, prompts: SafetyPrompts) -> None:
    splits = {"prompts": prompts.split}
    source = download_dataset(prompts.dataset, prompts.revision, splits, args.out_dir)
    print(
        f"downloaded {prompts.dataset}@{source['commit']} rows {source['rows']} to {args.out_dir}"
    )
