"""Preference pairs as model inputs: tokenized once, and run through the model in ONE forward pass.

Shared by the reference log-prob stage and DPO, so both see exactly the same tokens.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from amber_repro.config.sections import DataSettings
from amber_repro.data.tokenization import Limits, encode_all, pair_of_ids
from amber_repro.errors import DataError
from amber_repro.training.logprobs import batch_logps
from amber_repro.training.shared_prompt import shared_prompt_logps

REFERENCE_COLUMNS = ("source_row", "reference_chosen_logps", "reference_rejected_logps")
PAIR_TEXT = ("prompt", "chosen", "rejected")  # the text columns of pairs-{split}.parquet
SFT_TEXT = ("prompt", "response")  # and of sft-train.parquet
# The `--on-malformed` flag of a stage that tokenizes (add_settings_arguments spec).
ON_MALFORMED = (DataSettings, ("on_malformed",))
POSITION = "_position"  # a frame's own row numbers, while dropping rows


def drop_or_refuse_eos(
    frame: pl.DataFrame, tokenizer, path: Path, columns: tuple[str, ...], on_malformed: str
) -> tuple[pl.DataFrame, int]:
    """`frame` without the rows whose text tokenizes to the EOS token, and how many those were.

    The reference asserts on such text (an EOS inside it would end the sequence early), and
    `tokenization.encode` refuses it mid-stage naming no row; checked here, as a stage reads its
    file, so "error" stops before any model work naming file, source_row and column, and "drop"
    drops them. ref-logps and DPO call this on the same pairs with the same tokenizer, so they drop
    the same rows (DPO joins reference log-probs by source_row).
    """
    eos = tokenizer.eos_token
    indexed = frame.with_row_index(POSITION)
    bad = _rows_with_eos(indexed, tokenizer, columns)
    if not bad:
        return frame, 0
    rows = [row.get("source_row") for row, _ in bad]
    if on_malformed == "error":
        row, column = bad[0]
        raise DataError(
            f"{path}: source_row {rows[0]}, column {column}: text contains the EOS token "
            f"{eos!r}: {row[column][:80]!r} ({len(bad)} row(s) in this file; set "
            "data.on_malformed: drop to drop and count them instead)"
        )
    print(
        f"{path}: dropped {len(bad)} row(s) whose text contains the EOS token {eos!r} "
        f"(data.on_malformed: drop): source_row {', '.join(map(str, rows[:20]))}"
        + (" ..." if len(rows) > 20 else ""),
        flush=True,
    )
    positions = [row[POSITION] for row, _ in bad]
    return indexed.filter(~pl.col(POSITION).is_in(positions)).drop(POSITION), len(bad)


def _rows_with_eos(frame: pl.DataFrame, tokenizer, columns: tuple[str, ...]) -> list:
    """(row, first column with EOS) of each offending row: candidates by the EOS text, then the
    tokenizer's verdict (encode's test) on those few."""
    if not tokenizer.eos_token or frame.height == 0:
        return []
    candidates = frame.filter(
        pl.any_horizontal(
            pl.col(c).str.contains(tokenizer.eos_token, literal=True) for c in columns
        )
    )
    return [
        (row, column)
        for row in candidates.iter_rows(named=True)
        if (column := _eos_column(tokenizer, row, columns))
    ]


def _eos_column(tokenizer, row: dict, columns: tuple[str, ...]) -> str | None:
    """The first of `columns` whose text holds the EOS token, as the stage would tokenize it."""
    for column in columns:
        text = row[column]
        if tokenizer.eos_token in text and tokenizer.eos_token_id in _ids(tokenizer, text):
            return column
    return None


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_pairs(tokenizer, frame: pl.DataFrame, limits: Limits) -> list[dict]:
    """`tokenize_pair` of every row of `frame`, each text column encoded in one tokenizer call."""
    prompts, chosen, rejected = (encode_all(tokenizer, frame[c].to_list()) for c in PAIR_TEXT)
    eos_id = tokenizer.eos_token_id
    return [
        pair_of_ids(p, c, r, eos_id, limits)
        for p, c, r in zip(prompts, chosen, rejected, strict=True)
    ]


def concatenated_logps(
    model,
    pairs: list[dict],
    pad_token_id: int,
    device: torch.device,
    min_saving: int = 0,
    share_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of chosen and rejected for `pairs`, each (len(pairs),).

    Chosen and rejected sequences are padded to one length and stacked into a (2 * pairs, length)
    batch, so one forward pass serves both (as the reference's concatenated_forward does); with
    min_saving > 0 the 2 * pairs sequences run in length groups instead (`batch_logps`). With
    share_prompt, each pair is one packed row whose prompt runs once (`shared_prompt`).
    """
    if share_prompt:
        return shared_prompt_logps(model, pairs, pad_token_id, device, min_saving)
    sequences = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    logps = batch_logps(model, sequences, pad_token_id, device, min_saving)
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
