"""Raw PKU-SafeRLHF rows -> DPO preference pairs and SFT targets, with the original's semantics.

The original `get_saferlhf(split)` (LLM360's fork of the DPO reference) loops over rows and:
1. keeps a row only when `is_response_0_safe != is_response_1_safe`;
2. makes the safe response `chosen` and the unsafe one `rejected`;
3. groups pairs by prompt (in order of the prompt's first appearance); DPO trains on every pair;
4. sets the prompt's SFT target on every kept row, so the LAST kept row's chosen response wins.
This module does the same with polars expressions, and refuses to lose rows silently: every
dropped row is counted by reason, and malformed rows stop the run unless told to drop them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.sections import DataSettings
from amber_repro.errors import DataError
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.run_context import command_line, run_context, software_versions
from amber_repro.storage import atomic_path, read_json, write_json

TEXT_COLUMNS = ("prompt", "response_0", "response_1")
LABEL_COLUMNS = ("is_response_0_safe", "is_response_1_safe")
REQUIRED_COLUMNS = TEXT_COLUMNS + LABEL_COLUMNS
ROW = "source_row"


def read_raw(path: Path) -> pl.DataFrame:
    """Read one raw split, check its columns and types, and number its rows (0-based
    `source_row`)."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several types for a corrupt file
        raise DataError(f"{path}: not a readable parquet file ({error})") from error
    if frame.height == 0:
        raise DataError(f"{path}: no rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(frame.columns)})"
        )
    frame = frame.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
    for column in TEXT_COLUMNS:
        frame = _require_dtype(frame, path, column, pl.String, "text")
    for column in LABEL_COLUMNS:
        frame = _require_dtype(frame, path, column, pl.Boolean, "non-boolean safety label")
    return frame


def _require_dtype(frame: pl.DataFrame, path: Path, column: str, dtype, what: str) -> pl.DataFrame:
    """`frame` with `column` of `dtype`. A column of nulls only, whatever its type, has no value of
    the wrong type: it becomes nulls of `dtype`, reported (or dropped) as null values by
    filter_split."""
    if frame.schema[column] == dtype:
        return frame
    present = frame.filter(pl.col(column).is_not_null())
    if present.height == 0:
        return frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
    first = present.row(0, named=True)
    raise DataError(
        f"{path}: row {first[ROW]}, column {column}: {what} expected, got {first[column]!r} "
        f"(column type {frame.schema[column]})"
    )


def malformed_reason() -> pl.Expr:
    """Per row: why it is malformed ("null <column>"), or null when it is well formed."""
    reason = pl.lit(None, dtype=pl.String)
    for column in reversed(REQUIRED_COLUMNS):  # reversed so the first column's reason wins
        reason = pl.when(pl.col(column).is_null()).then(pl.lit(f"null {column}")).otherwise(reason)
    return reason


def filter_split(
    frame: pl.DataFrame, path: Path, on_malformed: str
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Return (pairs, sft targets, counts) for one split read by `read_raw`."""
    frame = frame.with_columns(malformed_reason().alias("_malformed"))
    malformed = frame.filter(pl.col("_malformed").is_not_null())
    if malformed.height and on_malformed == "error":
        first = malformed.row(0, named=True)
        column = first["_malformed"].removeprefix("null ")
        raise DataError(
            f"{path}: row {first[ROW]}, column {column}: null value "
            f"({malformed.height} malformed row(s) in this file; set data.on_malformed: drop "
            f"to drop and count them instead)"
        )
    is_valid = pl.col("_malformed").is_null()
    safe0, safe1 = pl.col("is_response_0_safe"), pl.col("is_response_1_safe")
    kept = frame.filter(is_valid & (safe0 != safe1)).select(
        ROW,
        "prompt",
        pl.when(safe0).then("response_0").otherwise("response_1").alias("chosen"),
        pl.when(safe0).then("response_1").otherwise("response_0").alias("rejected"),
    )
    # One grouping gives both outputs: prompts in order of first appearance (the original's dict),
    # each prompt's kept rows in source order; the SFT target is the last of them.
    by_prompt = kept.group_by("prompt", maintain_order=True).agg(ROW, "chosen", "rejected")
    pairs = by_prompt.explode([ROW, "chosen", "rejected"]).select(
        ROW, "prompt", "chosen", "rejected"
    )
    sft = by_prompt.select(
        pl.col(ROW).list.last(), "prompt", pl.col("chosen").list.last().alias("response")
    )
    dropped = frame.select(
        both_safe=(is_valid & safe0 & safe1).sum(),
        both_unsafe=(is_valid & ~safe0 & ~safe1).sum(),
    ).row(0, named=True)
    reasons = malformed.group_by("_malformed").len().sort("_malformed").iter_rows()
    counts = {
        "rows_read": frame.height,
        "rows_kept": pairs.height,
        "rows_dropped": {**dropped, **{f"malformed: {reason}": n for reason, n in reasons}},
        "unique_prompts": sft.height,
    }
    return pairs, sft, counts


def require_some_kept(path: Path, pairs: pl.DataFrame, sft: pl.DataFrame, counts: dict) -> None:
    """A split that keeps nothing stops here, not stages later with an empty batch: every split
    feeds DPO (train) or its held-out evaluation (test), and SFT trains on the train split's
    targets (which come from its pairs, so no pairs means no targets)."""
    if pairs.height and sft.height:
        return
    dropped = ", ".join(f"{reason} {n}" for reason, n in counts["rows_dropped"].items() if n)
    raise DataError(
        f"{path}: kept {pairs.height} pairs and {sft.height} SFT targets of "
        f"{counts['rows_read']} rows (dropped: {dropped or 'none'}); a pair needs one safe and one "
        "unsafe response"
    )


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path, needed_bytes=frame.estimated_size()) as tmp:
        frame.write_parquet(tmp)


def run_filter(raw_paths: list[Path], source_path: Path, out_dir: Path, on_malformed: str) -> dict:
    """Filter every raw split (named by its file stem), then write pairs-/sft-{split}.parquet and
    manifest.json into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not source_path.exists():
        raise DataError(f"{source_path}: file not found (the raw data's provenance record)")
    source = read_json(source_path)
    results = {}
    for raw_path in raw_paths:
        results[raw_path.stem] = (
            raw_path,
            *filter_split(read_raw(raw_path), raw_path, on_malformed),
        )
        require_some_kept(*results[raw_path.stem])
    # Write only after every split passed, so a bad test split cannot leave a half-updated set.
    manifest = {
        "source": {k: source.get(k) for k in ("kind", "dataset", "revision", "commit", "seed")},
        # The synthetic data's overlap and length statistics (absent for the hub's data).
        **({"statistics": source["statistics"]} if "statistics" in source else {}),
        "on_malformed": on_malformed,
        "splits": {},
        "inputs": {str(source_path): sha256_file(source_path)},
        "outputs": {},
        "software": software_versions(),
        "command": command_line(),
        "run": run_context(),
    }
    for split, (raw_path, pairs, sft, counts) in results.items():
        manifest["inputs"][str(raw_path)] = sha256_file(raw_path)
        for name, frame in (("pairs", pairs), ("sft", sft)):
            path = out_dir / f"{name}-{split}.parquet"
            write_parquet(frame, path)
            manifest["outputs"][str(path)] = sha256_file(path)
        manifest["splits"][split] = counts
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--raw",
        type=Path,
        nargs="+",
        required=True,
        help="raw {split}.parquet files; the file stem names the split",
    )
    parser.add_argument(
        "--source", type=Path, required=True, help="the raw data's source.json (revision, seed)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="pairs-/sft-{split}.parquet and manifest.json go here",
    )
    add_settings_arguments(parser, (DataSettings, ("on_malformed",)))


def main(args: argparse.Namespace, data: DataSettings) -> None:
    manifest = run_filter(args.raw, args.source, args.out_dir, data.on_malformed)
    for split, counts in manifest["splits"].items():
        print(
            f"{split}: read {counts['rows_read']}, kept {counts['rows_kept']} pairs, "
            f"{counts['unique_prompts']} unique prompts, dropped {counts['rows_dropped']}"
        )
