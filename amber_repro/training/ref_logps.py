"""The frozen SFT model's summed response log-probs for every pair: computed once, read by DPO.

DPO then needs no second model in memory, and changing a DPO setting (beta, loss, lr) never
recomputes them: they are their own DAG target. One process scores every split it is given
(`--pairs train test --out train test`), so the model loads once.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import polars as pl
import torch
from tqdm import tqdm

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.sections import (
    DataSettings,
    ReferenceSettings,
    Reproducibility,
    Tokenization,
)
from amber_repro.data.tokenization import Limits
from amber_repro.errors import NonFiniteLossError
from amber_repro.provenance.hashing import sha256_file, sha256_model
from amber_repro.provenance.run_context import (
    command_line,
    kernel_settings,
    run_context,
    software_versions,
)
from amber_repro.storage import atomic_path, write_json
from amber_repro.training import distributed
from amber_repro.training.batching import longest_first, token_budget_batches
from amber_repro.training.logprobs import batch_logps
from amber_repro.training.pairs import (
    ON_MALFORMED,
    PAIR_TEXT,
    drop_or_refuse_eos,
    tokenize_pairs,
)
from amber_repro.training.runtime import (
    PRECISIONS,
    Processes,
    load_model,
    load_tokenizer,
    processes,
    set_kernels,
)
from amber_repro.training.shared_prompt import pack_pair, packed_logps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the SFT save_pretrained folder")
    parser.add_argument(
        "--pairs", type=Path, nargs="+", required=True, help="pairs-{split}.parquet, one per split"
    )
    parser.add_argument(
        "--out",
        type=Path,
        nargs="+",
        required=True,
        help="{split}.parquet for each --pairs, in the same order; a .json record goes beside each",
    )
    add_settings_arguments(parser, ReferenceSettings, Tokenization, Reproducibility, ON_MALFORMED)


SIDES = ("chosen", "rejected")


def token_budget(reference: ReferenceSettings, tokens: Tokenization) -> int:
    """Padded tokens per forward pass: reference.max_tokens, or the old worst case of batch_size
    pairs of max_length tokens (so a config sized for that keeps its memory bound)."""
    return reference.max_tokens or 2 * reference.batch_size * tokens.max_length


def deal(lengths: list[int], rank: int, world_size: int) -> list[int]:
    """This process's items: all items longest first, dealt in turn, so that every process gets
    as many (within one) and as long ones; the hands of all processes cover each item once."""
    return longest_first(lengths)[rank::world_size]


def run_batches(score, units: list[dict], batches: list[list[int]], n_passes: int, stand_in, procs):
    """score(units[i] for i in a batch) for every batch, in `n_passes` forward passes.

    score takes a list of units (sequences or packed pair rows) and returns a tensor with one row
    per unit. Under FSDP every process joins every forward pass, so all run the same number; a
    process out of batches scores `stand_in` (a unit) and drops its result.
    Returns each unit's row as a Python value (a float, or [chosen, rejected] for a packed row), in
    the order of `units`.
    """
    out: list = [None] * len(units)
    progress = tqdm(
        range(n_passes), desc="ref-logps", unit="batch", mininterval=5, disable=not procs.is_main
    )
    for step in progress:
        batch = batches[step] if step < len(batches) else []
        logps = score([units[i] for i in batch] or [stand_in]).cpu().tolist()
        for i, value in zip(batch, logps, strict=False):  # a stand-in's batch is empty
            out[i] = value
    return out


@torch.inference_mode()
def compute(
    model,
    tokenizer,
    pairs: pl.DataFrame,
    limits: Limits,
    max_tokens: int,
    procs: Processes,
    share_prompt: bool = False,
) -> tuple[pl.DataFrame, list[int]]:
    """Log-probs of every pair, each computed by exactly one process; returns them and the
    per-process counts.

    Each process runs its pairs' units longest first, in batches of at most max_tokens padded
    tokens; the results go back in the order of `pairs`. A unit is a sequence (chosen and rejected
    apart: pairing them in one batch row would pad both to the longer), or with share_prompt a
    pair's packed row (`shared_prompt`).
    """
    tokenized = tokenize_pairs(tokenizer, pairs, limits)
    units_of = pair_packed_row if share_prompt else pair_sequences
    everyone = [units_of(p) for p in tokenized]
    mine = deal([longest(us) for us in everyone], procs.rank, procs.world_size)
    counts = distributed.gather(len(mine))
    units = [u for i in mine for u in everyone[i]]
    batches = token_budget_batches([len(u["input_ids"]) for u in units], max_tokens)
    n_passes = max(distributed.gather(len(batches)))
    # A process may have no pairs: it joins the passes with the shortest unit of all.
    stand_in = min(
        (u for us in everyone for u in us), key=lambda u: len(u["input_ids"]), default=None
    )
    pad_id, device = tokenizer.pad_token_id, procs.device
    if share_prompt:
        score = functools.partial(packed_logps, model, pad_token_id=pad_id, device=device)
    else:
        score = functools.partial(batch_logps, model, pad_token_id=pad_id, device=device)
    logps = run_batches(score, units, batches, n_passes, stand_in, procs)
    per_pair = logps if share_prompt else [logps[k : k + 2] for k in range(0, len(logps), 2)]
    local = [(i, chosen, rejected) for i, (chosen, rejected) in zip(mine, per_pair, strict=True)]
    rows = sorted(row for part in distributed.gather(local) for row in part)
    if [i for i, _, _ in rows] != list(range(len(tokenized))):
        raise RuntimeError(
            "reference log-probs: the processes did not cover every pair exactly once"
        )
    return reference_frame(pairs, rows), counts


def longest(units: list[dict]) -> int:
    """A pair's cost when dealing pairs to processes: its longest unit."""
    return max(len(u["input_ids"]) for u in units)


def pair_sequences(pair: dict) -> list[dict]:
    """A pair's units without share_prompt: its chosen and its rejected sequence."""
    return [pair[side] for side in SIDES]


def pair_packed_row(pair: dict) -> list[dict]:
    """A pair's unit with share_prompt: its packed row."""
    return [pack_pair(pair)]


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


def main(
    args: argparse.Namespace,
    reference: ReferenceSettings,
    tokens: Tokenization,
    repro: Reproducibility,
    data: DataSettings,
) -> None:
    if len(args.pairs) != len(args.out):
        raise SystemExit(
            f"ref-logps: {len(args.pairs)} --pairs file(s) but {len(args.out)} --out file(s); "
            "give one output per pairs file, in the same order"
        )
    set_kernels(repro.deterministic, repro.tf32)
    procs = processes()
    # The data is checked before the model loads: a text holding EOS stops (or is dropped) first.
    tokenizer = load_tokenizer(args.model)
    splits = [
        (pairs_path, out, *checked_pairs(pairs_path, tokenizer, data.on_malformed))
        for pairs_path, out in zip(args.pairs, args.out, strict=True)
    ]
    model = load_model(args.model, PRECISIONS[reference.precision], procs.device).eval()
    model = distributed.shard(model, "float32")
    limits = Limits(tokens.max_length, tokens.max_prompt_length)
    budget = token_budget(reference, tokens)
    settings = {
        **reference.model_dump(),
        **tokens.model_dump(),
        "on_malformed": data.on_malformed,
        "max_tokens_applied": budget,
    }
    model_sha256 = sha256_model(args.model) if procs.is_main else None  # hashed once: 13 GB at 7B
    for pairs_path, out, pairs, dropped in splits:
        result, counts = compute(
            model, tokenizer, pairs, limits, budget, procs, reference.share_prompt
        )
        if procs.is_main:
            inputs = {str(pairs_path): sha256_file(pairs_path), str(args.model): model_sha256}
            write_split(settings, inputs, out, result, dropped, counts, procs.world_size)
    distributed.shutdown()


def checked_pairs(path: Path, tokenizer, on_malformed: str) -> tuple[pl.DataFrame, int]:
    """The pairs of `path`, less those data.on_malformed drops, and how many it dropped."""
    return drop_or_refuse_eos(pl.read_parquet(path), tokenizer, path, PAIR_TEXT, on_malformed)


def write_split(settings: dict, inputs: dict, out: Path, result, dropped, counts, world_size: int):
    """One split's parquet and, beside it, its JSON record; `inputs` maps the pairs file and the
    model to their sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, needed_bytes=result.estimated_size()) as tmp:
        result.write_parquet(tmp)
    write_json(
        out.with_suffix(".json"),
        {
            "stage": "ref-logps",
            "settings": settings,
            "inputs": inputs,
            "outputs": {str(out): sha256_file(out)},
            "pairs": result.height,
            "pairs_dropped": {"text contains EOS": dropped},
            "pairs_per_process": counts,
            "software": software_versions(),
            "kernels": kernel_settings(),
            "run": run_context(),
            "command": command_line(),
        },
    )
    pairs_path = next(iter(inputs))
    print(
        f"ref-logps: {result.height} pairs from {pairs_path} ({dropped} dropped: text contains "
        f"EOS) on {world_size} process(es) -> {out}"
    )
