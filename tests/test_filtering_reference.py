"""The filter against the original get_saferlhf loop written out in plain Python, on random rows
with few prompts (so prompts repeat, and kept and dropped rows interleave) and some nulls (in
"drop" mode, so malformed rows interleave too)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from amber_repro.data.filtering import filter_split
from amber_repro.data.synthetic import V0_SCHEMA


def original_loop(rows: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """(pairs, sft targets) the way the original builds them: a dict keyed by prompt in order of
    its first kept row, every kept row appended to its prompt's pairs, and the prompt's SFT target
    overwritten by each kept row (the last one wins). Rows with a null (malformed, dropped in
    "drop" mode) are skipped first."""
    data: dict[str, dict] = {}
    for row_number, (prompt, r0, r1, safe0, safe1) in enumerate(rows):
        if None in (prompt, r0, r1, safe0, safe1) or safe0 == safe1:
            continue
        chosen, rejected = (r0, r1) if safe0 else (r1, r0)
        entry = data.setdefault(prompt, {"pairs": []})
        entry["pairs"].append((row_number, prompt, chosen, rejected))
        entry["sft_target"] = (row_number, prompt, chosen)
    pairs = [pair for entry in data.values() for pair in entry["pairs"]]
    return pairs, [entry["sft_target"] for entry in data.values()]


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C", "D", None]),
        st.text(alphabet="xyz", max_size=3) | st.none(),
        st.text(alphabet="xyz", max_size=3),
        st.booleans(),
        st.booleans() | st.none(),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy)
def test_filter_is_the_original_loop(rows):
    frame = pl.DataFrame(
        [
            dict(
                prompt=p,
                response_0=r0,
                response_1=r1,
                is_response_0_safe=s0,
                is_response_1_safe=s1,
                better_response_id=0,
                safer_response_id=0,
            )
            for p, r0, r1, s0, s1 in rows
        ],
        schema=V0_SCHEMA,
    )
    # What read_raw adds: the 0-based row number.
    frame = frame.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))
    pairs, sft, counts = filter_split(frame, Path("train.parquet"), "drop")
    want_pairs, want_sft = original_loop(rows)
    assert pairs.rows() == want_pairs
    assert sft.select("source_row", "prompt", "response").rows() == want_sft
    assert counts["rows_kept"] == len(want_pairs) and counts["unique_prompts"] == len(want_sft)
    well_formed = [row for row in rows if None not in row]
    dropped = counts["rows_dropped"]
    assert dropped["both_safe"] == sum(s0 and s1 for *_, s0, s1 in well_formed)
    assert dropped["both_unsafe"] == sum(not s0 and not s1 for *_, s0, s1 in well_formed)
    # Every row is kept or dropped for exactly one reason.
    assert sum(dropped.values()) + counts["rows_kept"] == counts["rows_read"] == len(rows)
