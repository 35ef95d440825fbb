"""Greedy answers of each model to harmful prompts: the `safety-answers` stage.

The prompts come from a parquet with a `prompt` column: the pinned BeaverTails-Evaluation prompts
(download-safety-prompts) or, on the embedded default, the held-out pairs. The first `--count`
unique prompts are answered, each model prompted as it was trained (the raw prompt, no template;
generations.generate). Writes a parquet of (model, path, prompt, answer) rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.eval_sections import SafetyPrompts, SafetySettings
from amber_repro.config.sections import Reproducibility
from amber_repro.errors import DataError
from amber_repro.evaluation.generations import generate
from amber_repro.provenance.run_context import write_job_record
from amber_repro.storage import atomic_path
from amber_repro.training.runtime import set_kernels


def read_prompts(path: Path, count: int | None) -> list[str]:
    """The first `count` unique non-empty prompts (all with None), in file order."""
    frame = pl.read_parquet(path)
    if "prompt" not in frame.columns:
        raise DataError(f"{path}: no `prompt` column (columns: {', '.join(frame.columns)})")
    prompts = frame["prompt"].drop_nulls()
    prompts = prompts.filter(prompts.str.strip_chars() != "").unique(maintain_order=True)
    if prompts.is_empty():
        raise DataError(f"{path}: no non-empty prompt")
    return (prompts if count is None else prompts.head(count)).to_list()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME=PATH", help="repeatable"
    )
    parser.add_argument("--prompts", type=Path, required=True, help="a parquet with `prompt`")
    add_settings_arguments(
        parser,
        (SafetyPrompts, ("count",)),
        (SafetySettings, ("max_new_tokens",)),
        Reproducibility,
    )
    parser.add_argument("--out", type=Path, required=True, help="answers parquet")
    parser.add_argument("--record", type=Path, help="where to write the job's record (JSON)")


def main(
    args: argparse.Namespace,
    prompts_settings: SafetyPrompts,
    safety: SafetySettings,
    repro: Reproducibility,
) -> None:
    set_kernels(repro.deterministic, repro.tf32)
    prompts = read_prompts(args.prompts, prompts_settings.count)
    rows = []
    for item in args.model:
        name, path = item.split("=", 1)
        answers = generate(Path(path), prompts, safety.max_new_tokens)
        rows += [
            {"model": name, "path": path, "prompt": p, "answer": a}
            for p, a in zip(prompts, answers, strict=True)
        ]
    frame = pl.DataFrame(
        rows, schema=dict.fromkeys(("model", "path", "prompt", "answer"), pl.String)
    )
    with atomic_path(args.out) as tmp:
        frame.write_parquet(tmp)
    if args.record:
        settings = {"count": prompts_settings.count, "max_new_tokens": safety.max_new_tokens}
        write_job_record(args.record, settings=settings)
    print(f"wrote {len(prompts)} prompts x {len(args.model)} models to {args.out}")
