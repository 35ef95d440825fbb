"""The frozen SFT model's summed response log-probs for every pair: computed once, read by DPO.

DPO then needs no second model in memory, and changing a DPO setting (beta, loss, lr) never
recomputes them: they are their own DAG target.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
import torch
from tqdm import tqdm

from amber_repro import distributed
from amber_repro import training as T
from amber_repro.configuration import add_settings_arguments
from amber_repro.errors import NonFiniteLossError
from amber_repro.pairs import concatenated_logps, tokenize_pairs
from amber_repro.provenance import (
    atomic_path,
    command_line,
    run_context,
    sha256_file,
    sha256_model,
    software_versions,
    write_json,
)
from amber_repro.settings import ReferenceSettings, Reproducibility, Tokenization
from amber_repro.tokenization import Limits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the SFT save_pretrained folder")
    parser.add_argument("--pairs", type=Path, required=True, help="pairs-{split}.parquet")
    parser.add_argument(
        "--out", type=Path, required=True, help="{split}.parquet; a .json record goes beside it"
    )
    add_settings_arguments(parser, ReferenceSettings, Tokenization, Reproducibility)


def shard(n_items: int, rank: int, world_size: int) -> range:
    """This process's contiguous block of items; the blocks of all processes cover each item
    once."""
    return range(n_items * rank // world_size, n_items * (rank + 1) // world_size)


@torch.no_grad()
def compute(
    model, tokenizer, pairs: pl.DataFrame, limits: Limits, batch_size: int, procs: T.Processes
) -> tuple[pl.DataFrame, list[int]]:
    """Log-probs of every pair, each computed by exactly one process; returns them and the
    per-process counts."""
    tokenized = tokenize_pairs(tokenizer, pairs, limits)
    mine = list(shard(len(tokenized), procs.rank, procs.world_size))
    counts = distributed.gather(len(mine))
    local = []
    # Under FSDP every process joins every forward pass, so all run the same number of batches; a
    # process whose block is used up runs a stand-in pair and drops the result.
    for start in tqdm(
        range(0, max(counts), batch_size),
        desc="ref-logps",
        unit="batch",
        mininterval=5,
        disable=not procs.is_main,
    ):
        indices = mine[start : start + batch_size]
        batch = [tokenized[i] for i in indices] or tokenized[:1]
        chosen, rejected = concatenated_logps(model, batch, tokenizer.pad_token_id, procs.device)
        # A stand-in batch is longer than `indices` (empty): zip drops its result.
        local += zip(indices, chosen.cpu().tolist(), rejected.cpu().tolist(), strict=False)
    rows = sorted(row for part in distributed.gather(local) for row in part)
    if [i for i, _, _ in rows] != list(range(len(tokenized))):
        raise RuntimeError(
            "reference log-probs: the processes did not cover every pair exactly once"
        )
    chosen_t = torch.tensor([c for _, c, _ in rows], dtype=torch.float64)
    rejected_t = torch.tensor([r for _, _, r in rows], dtype=torch.float64)
    bad = ~(torch.isfinite(chosen_t) & torch.isfinite(rejected_t))
    if bad.any():
        row = pairs["source_row"][int(bad.nonzero()[0])]
        raise NonFiniteLossError(
            f"non-finite reference log-prob for source_row {row} ({int(bad.sum())} pair(s))"
        )
    frame = pl.DataFrame(
        {
            "source_row": pairs["source_row"],
            "reference_chosen_logps": chosen_t.numpy(),
            "reference_rejected_logps": rejected_t.numpy(),
        }
    )
    return frame, counts


def main(args: argparse.Namespace) -> None:
    T.set_determinism(args.deterministic)
    procs = T.processes()
    model = T.load_model(args.model, T.PRECISIONS[args.precision], procs.device).eval()
    model = distributed.shard(model, "float32")
    tokenizer = T.load_tokenizer(args.model)
    pairs = pl.read_parquet(args.pairs)
    limits = T.Limits(args.max_length, args.max_prompt_length)
    result, counts = compute(model, tokenizer, pairs, limits, args.batch_size, procs)
    if procs.is_main:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            result.write_parquet(tmp)
        write_json(
            args.out.with_suffix(".json"),
            {
                "stage": "ref-logps",
                "settings": {
                    k: v
                    for k, v in vars(args).items()
                    if k in {"batch_size", "precision", "max_length", "max_prompt_length"}
                },
                "inputs": {
                    str(args.pairs): sha256_file(args.pairs),
                    str(args.model): sha256_model(args.model),
                },
                "outputs": {str(args.out): sha256_file(args.out)},
                "pairs": result.height,
                "pairs_per_process": counts,
                "software": software_versions(),
                "run": run_context(),
                "command": command_line(),
            },
        )
        print(
            f"ref-logps: {result.height} pairs from {args.pairs} on {procs.world_size} "
            f"process(es) -> {args.out}"
        )
    distributed.shutdown()
