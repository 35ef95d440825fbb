"""Time the polars filter against a plain-Python copy of the original's row loop on a 330k-row raw
set.

    python bench/filter_throughput.py [--rows 330000] [--repeats 3]

Prints rows/s for both, and their ratio (goal: polars at least 20x the row loop). Both sides start
from the parquet file on disk and end with pairs and SFT targets in memory; the loop's result is
checked against the filter's so the comparison is of equal work.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from amber_repro.data.filtering import filter_split, read_raw
from amber_repro.data.synthetic import generate_split

# polars' thread pool does not survive fork(): start measuring processes fresh.
SPAWN = get_context("spawn")


def _new_entry():
    return defaultdict(list)


def original_row_loop(path: Path):
    """get_saferlhf's loop (LLM360's fork of the DPO reference), minus the hub download and tqdm."""
    rows = pq.read_table(path).to_pylist()
    data = defaultdict(_new_entry)
    for row in rows:
        if row["is_response_0_safe"] != row["is_response_1_safe"]:
            prompt = row["prompt"]
            if row["is_response_0_safe"]:
                chosen, rejected = row["response_0"], row["response_1"]
            else:
                chosen, rejected = row["response_1"], row["response_0"]
            n = len(data[prompt]["responses"])
            data[prompt]["pairs"].append((n, n + 1))
            data[prompt]["responses"].extend([chosen, rejected])
            data[prompt]["sft_target"] = chosen
    return {prompt: dict(entry) for prompt, entry in data.items()}  # picklable, to return it


def polars_filter(path: Path):
    return filter_split(read_raw(path), path, "error")


def best_time(function, path: Path, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(path)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=330_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        # Many distinct prompts, as in the real set (~ rows / 2 unique prompts before filtering).
        frame = generate_split(random.Random(0), "train", args.rows, seed=0)
        cases = args.rows // (2 * frame["prompt"].n_unique()) + 1
        case = (pl.int_range(pl.len()) % cases).cast(pl.String)
        frame.with_columns(pl.col("prompt") + " (case " + case + ")").drop(
            "_topic", "_template"
        ).write_parquet(path)

        # Each side runs in a fresh process: the loop's large heap of Python objects would
        # otherwise slow whatever runs after it in the same process.
        with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as pool:
            polars_s, (pairs, sft, _counts) = pool.submit(
                best_time, polars_filter, path, args.repeats
            ).result()
        with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as pool:
            loop_s, loop_data = pool.submit(
                best_time, original_row_loop, path, args.repeats
            ).result()

    assert pairs.height == sum(len(d["pairs"]) for d in loop_data.values())
    assert dict(sft.select("prompt", "response").iter_rows()) == {
        p: d["sft_target"] for p, d in loop_data.items()
    }
    print(f"rows: {args.rows}, kept pairs: {pairs.height}, unique prompts: {sft.height}")
    print(f"row loop (original): {loop_s:.3f} s, {args.rows / loop_s:,.0f} rows/s")
    print(f"polars filter:       {polars_s:.3f} s, {args.rows / polars_s:,.0f} rows/s")
    print(f"speed-up: {loop_s / polars_s:.1f}x (best of {args.repeats})")


if __name__ == "__main__":
    main()
