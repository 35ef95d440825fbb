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
from amber_repro.batching import longest_first, token_budget_batches
from amber_repro.configuration import add_settings_arguments
from amber_repro.errors import NonFiniteLossError
from amber_repro.logprobs import batch_logps
from amber_repro.pairs import (
    ON_MALFORMED,
    PAIR_TEXT,
    drop_or_refuse_eos,
    tokenize_pairs,
)
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
    add_settings_arguments(parser, ReferenceSettings, Tokenization, Reproducibility, ON_MALFORMED)


SIDES = ("chosen", "rejected")


def token_budget(args: argparse.Namespace) -> int:
    """Padded tokens per forward pass: --max-tokens, or the old worst case of --batch-size pairs
    of --max-length tokens (so a config sized for that keeps its memory bound)."""
    return args.max_tokens or 2 * args.batch_size * args.max_length


def deal(lengths: list[int], rank: int, world_size: int) -> list[int]:
    """This process's items: all items longest first, dealt in turn, so that every process gets
    as many (within one) and as long ones; the hands of all processes cover each item once."""
    return longest_first(lengths)[rank::world_size]


def run_batches(
    model, sequences: list[dict], batches: list[list[int]], n_passes: int, stand_in, pad_id, procs
) -> list[float]:
    """`batch_logps` of sequences[i] for every i in `batches`, in `n_passes` forward passes.

    Under FSDP every process joins every forward pass, so all run the same number; a process out
    of batches runs `stand_in` (a sequence) and drops its result.
    Returns one log-prob per sequence, in the order of `sequences`.
    """
    out = [float("nan")] * len(sequences)
    progress = tqdm(
        range(n_passes), desc="ref-logps", unit="batch", mininterval=5, disable=not procs.is_main
    )
    for step in progress:
        batch = batches[step] if step < len(batches) else []
        inputs = [sequences[i] for i in batch] or [stand_in]
        logps = batch_logps(model, inputs, pad_id, procs.device).cpu().tolist()
        for i, value in zip(batch, logps, strict=False):  # a stand-in's batch is empty
            out[i] = value
    return out


@torch.inference_mode()
def compute(
    model, tokenizer, pairs: pl.DataFrame, limits: Limits, max_tokens: int, procs: T.Processes
) -> tuple[pl.DataFrame, list[int]]:
    """Log-probs of every pair, each computed by exactly one process; returns them and the
    per-process counts.

    Each process runs its pairs' chosen and rejected sequences longest first, in batches of at
    most max_tokens padded tokens; the results go back in the order of `pairs`.
    """
    tokenized = tokenize_pairs(tokenizer, pairs, limits)
    mine = deal([longest_sequence(p) for p in tokenized], procs.rank, procs.world_size)
    counts = distributed.gather(len(mine))
    # Sequences are batched on their own: pairing chosen with rejected would pad both to the longer.
    sequences = [tokenized[i][side] for i in mine for side in SIDES]
    batches = token_budget_batches([len(s["input_ids"]) for s in sequences], max_tokens)
    n_passes = max(distributed.gather(len(batches)))
    everyone = [p[side] for p in tokenized for side in SIDES]  # a process may have no pairs
    stand_in = min(everyone, key=lambda s: len(s["input_ids"]), default=None)
    logps = run_batches(
        model, sequences, batches, n_passes, stand_in, tokenizer.pad_token_id, procs
    )
    local = [(i, logps[2 * k], logps[2 * k + 1]) for k, i in enumerate(mine)]
    rows = sorted(row for part in distributed.gather(local) for row in part)
    if [i for i, _, _ in rows] != list(range(len(tokenized))):
        raise RuntimeError(
            "reference log-probs: the processes did not cover every pair exactly once"
        )
    return reference_frame(pairs, rows), counts


def longest_sequence(pair: dict) -> int:
    return max(len(pair[side]["input_ids"]) for side in SIDES)


def reference_frame(pairs: pl.DataFrame, rows: list[tuple[int, float, float]]) -> pl.DataFrame:
    """The output rows, in the order of `pairs`, from (pair index, chosen, rejected) in that
    order; refuses a non-finite log-prob, naming its source_row."""
    chosen_t = torch.tensor([c for _, c, _ in rows], dtype=torch.float64)
    rejected_t = torch.tensor([r for _, _, r in rows], dtype=torch.float64)
    bad = ~(torch.isfinite(chosen_t) & torch.isfinite(rejected_t))
    if bad.any():
        row = pairs["source_row"][int(bad.nonzero()[0])]
        raise NonFiniteLossError(
            f"non-finite reference log-prob for source_row {row} ({int(bad.sum())} pair(s))"
        )
    return pl.DataFrame(
        {
            "source_row": pairs["source_row"],
            "reference_chosen_logps": chosen_t.numpy(),
            "reference_rejected_logps": rejected_t.numpy(),
        }
    )


def main(args: argparse.Namespace) -> None:
    T.set_determinism(args.deterministic)
    procs = T.processes()
    # The data is checked before the model loads: a text holding EOS stops (or is dropped) first.
    tokenizer = T.load_tokenizer(args.model)
    pairs, dropped = drop_or_refuse_eos(
        pl.read_parquet(args.pairs), tokenizer, args.pairs, PAIR_TEXT, args.on_malformed
    )
    model = T.load_model(args.model, T.PRECISIONS[args.precision], procs.device).eval()
    model = distributed.shard(model, "float32")
    limits = T.Limits(args.max_length, args.max_prompt_length)
    result, counts = compute(model, tokenizer, pairs, limits, token_budget(args), procs)
    if procs.is_main:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out, needed_bytes=result.estimated_size()) as tmp:
            result.write_parquet(tmp)
        write_json(
            args.out.with_suffix(".json"),
            {
                "stage": "ref-logps",
                "settings": {
                    k: v
                    for k, v in vars(args).items()
                    if k
                    in {
                        "batch_size",
                        "max_tokens",
                        "precision",
                        "max_length",
                        "max_prompt_length",
                        "on_malformed",
                    }
                }
                | {"max_tokens_applied": token_budget(args)},
                "inputs": {
                    str(args.pairs): sha256_file(args.pairs),
                    str(args.model): sha256_model(args.model),
                },
                "outputs": {str(args.out): sha256_file(args.out)},
                "pairs": result.height,
                "pairs_dropped": {"text contains EOS": dropped},
                "pairs_per_process": counts,
                "software": software_versions(),
                "run": run_context(),
                "command": command_line(),
            },
        )
        print(
            f"ref-logps: {result.height} pairs from {args.pairs} ({dropped} dropped: text "
            f"contains EOS) on {procs.world_size} process(es) -> {args.out}"
        )
    distributed.shutdown()
