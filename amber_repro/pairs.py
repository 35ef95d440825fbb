"""Preference pairs as model inputs: tokenized once, and run through the model in ONE forward pass.

Shared by the reference log-prob stage and DPO, so both see exactly the same tokens.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from amber_repro.errors import DataError
from amber_repro.logprobs import sequence_logps
from amber_repro.tokenization import Limits, collate, tokenize_pair

REFERENCE_COLUMNS = ("source_row", "reference_chosen_logps", "reference_rejected_logps")


def tokenize_pairs(tokenizer, frame: pl.DataFrame, limits: Limits) -> list[dict]:
    return [
        tokenize_pair(tokenizer, p, c, r, limits)
        for p, c, r in frame.select("prompt", "chosen", "rejected").iter_rows()
    ]


def concatenated_logps(
    model, pairs: list[dict], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of chosen and rejected for `pairs`, each (len(pairs),).

    Chosen and rejected sequences are padded to one length and stacked into a (2 * pairs, length)
    batch, so one forward pass serves both (as the reference's concatenated_forward does).
    """
    batch = collate([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], pad_token_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = sequence_logps(logits, batch["labels"])
    return logps[: len(pairs)], logps[len(pairs) :]


def read_reference_logps(path: Path, pairs: pl.DataFrame) -> pl.DataFrame:
    """Stored reference log-probs, in the order of `pairs`, checked to cover every pair."""
    if not path.exists():
        raise DataError(
            f"{path}: file not found (reference log-probs; build them with the ref-logps stage)"
        )
    reference = pl.read_parquet(path)
    missing = [c for c in REFERENCE_COLUMNS if c not in reference.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    joined = pairs.select("source_row").join(
        reference, on="source_row", how="left", maintain_order="left"
    )
    absent = joined.filter(
        pl.col("reference_chosen_logps").is_null() | pl.col("reference_rejected_logps").is_null()
    )
    if absent.height:
        raise DataError(
            f"{path}: no finite reference log-probs for source_row {absent['source_row'][0]} "
            f"({absent.height} pair(s) in all); were they computed from other pairs?"
        )
    return joined
