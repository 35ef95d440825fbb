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

from amber_repro import training as T
from amber_repro.errors import NonFiniteLossError
from amber_repro.pairs import concatenated_logps, tokenize_pairs
from amber_repro.provenance import command_line, sha256_file, sha256_tree, software_versions, write_json
from amber_repro.tokenization import Limits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the SFT save_pretrained folder")
    parser.add_argument("--pairs", type=Path, required=True, help="pairs-{split}.parquet")
    parser.add_argument("--out", type=Path, required=True, help="{split}.parquet; a .json record goes beside it")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per forward pass")
    parser.add_argument("--precision", choices=["float32", "float16", "bf16"], default="float16",
                        help="the reference model's dtype (the recipe: float16)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-prompt-length", type=int, default=256)


@torch.no_grad()
def compute(model, tokenizer, pairs: pl.DataFrame, limits: Limits, batch_size: int, device) -> pl.DataFrame:
    tokenized = tokenize_pairs(tokenizer, pairs, limits)
    chosen, rejected = [], []
    for start in tqdm(range(0, len(tokenized), batch_size), desc="ref-logps", unit="batch", mininterval=5):
        c, r = concatenated_logps(model, tokenized[start : start + batch_size], tokenizer.pad_token_id, device)
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    chosen_t, rejected_t = torch.cat(chosen), torch.cat(rejected)
    bad = ~(torch.isfinite(chosen_t) & torch.isfinite(rejected_t))
    if bad.any():
        row = pairs["source_row"][int(bad.nonzero()[0])]
        raise NonFiniteLossError(f"non-finite reference log-prob for source_row {row} ({int(bad.sum())} pair(s))")
    return pl.DataFrame({
        "source_row": pairs["source_row"],
        "reference_chosen_logps": chosen_t.double().numpy(),
        "reference_rejected_logps": rejected_t.double().numpy(),
    })


def main(args: argparse.Namespace) -> None:
    procs = T.processes()
    model = T.load_model(args.model, T.PRECISIONS[args.precision], procs.device).eval()
    tokenizer = T.load_tokenizer(args.model)
    pairs = pl.read_parquet(args.pairs)
    result = compute(model, tokenizer, pairs, T.Limits(args.max_length, args.max_prompt_length), args.batch_size, procs.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    result.write_parquet(tmp)
    tmp.replace(args.out)
    write_json(args.out.with_suffix(".json"), {
        "stage": "ref-logps",
        "settings": {k: v for k, v in vars(args).items() if k in {"batch_size", "precision", "max_length", "max_prompt_length"}},
        "inputs": {str(args.pairs): sha256_file(args.pairs), str(args.model): sha256_tree(args.model)},
        "outputs": {str(args.out): sha256_file(args.out)},
        "pairs": result.height,
        "software": software_versions(),
        "command": command_line(),
    })
    print(f"ref-logps: {result.height} pairs from {args.pairs} -> {args.out}")
