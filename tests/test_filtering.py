"""The filter's semantics (the original get_saferlhf) on hand-written rows, and its bad-input
errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from amber_repro.data.filtering import DataError, read_raw, run_filter
from amber_repro.data.synthetic import V0_SCHEMA
from amber_repro.provenance.hashing import sha256_file
from amber_repro.storage import read_json, write_json

# (prompt, response_0, response_1, is_response_0_safe, is_response_1_safe)
TRICKY_ROWS = [
    ("A", "a safe 1", "a unsafe 1", True, False),  # 0 kept, index 0 safe
    ("B", "b safe", "b safe too", True, True),  # 1 both safe: dropped
    ("C", "c bad", "c bad too", False, False),  # 2 both unsafe: dropped
    ("A", "a unsafe 2", "a safe 2", False, True),  # 3 kept, index 1 safe (duplicate prompt)
    ("D", "d unsafe", "d safe", False, True),  # 4 kept
    ("A", "a safe 3", "a unsafe 3", True, False),  # 5 kept: last kept row for A wins the SFT target
    ("A", "a safe 4", "a safe 5", True, True),  # 6 both safe: dropped, so it must NOT win
    ("é ü 中文 🙂", "no", "nein", False, True),  # 7 kept, non-ASCII survives byte for byte
]


def raw_frame(rows) -> pl.DataFrame:
    records = [
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
    ]
    return pl.DataFrame(records, schema=V0_SCHEMA)


def write_raw(raw_dir: Path, frames: dict[str, pl.DataFrame]) -> list[Path]:
    raw_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        raw_dir / "source.json", {"kind": "test", "dataset": "hand-written", "revision": "r1"}
    )
    paths = []
    for split, frame in frames.items():
        frame.write_parquet(raw_dir / f"{split}.parquet")
        paths.append(raw_dir / f"{split}.parquet")
    return paths


def filter_dir(tmp_path: Path, frames: dict[str, pl.DataFrame], on_malformed="error") -> dict:
    paths = write_raw(tmp_path / "raw", frames)
    return run_filter(paths, tmp_path / "raw" / "source.json", tmp_path / "out", on_malformed)


def test_pairs_follow_the_original_semantics(tmp_path):
    manifest = filter_dir(tmp_path, {"train": raw_frame(TRICKY_ROWS)})
    pairs = pl.read_parquet(tmp_path / "out" / "pairs-train.parquet")
    assert pairs.columns == ["source_row", "prompt", "chosen", "rejected"]
    # Grouped by prompt in order of first appearance, rows in source order within a prompt.
    assert pairs.rows() == [
        (0, "A", "a safe 1", "a unsafe 1"),
        (3, "A", "a safe 2", "a unsafe 2"),
        (5, "A", "a safe 3", "a unsafe 3"),
        (4, "D", "d safe", "d unsafe"),
        (7, "é ü 中文 🙂", "nein", "no"),
    ]
    counts = manifest["splits"]["train"]
    assert counts["rows_read"] == 8 and counts["rows_kept"] == 5 and counts["unique_prompts"] == 3
    assert counts["rows_dropped"] == {"both_safe": 2, "both_unsafe": 1}


def test_sft_target_is_the_chosen_response_of_the_last_kept_row(tmp_path):
    filter_dir(tmp_path, {"train": raw_frame(TRICKY_ROWS)})
    sft = pl.read_parquet(tmp_path / "out" / "sft-train.parquet")
    assert sft.select("prompt", "response").rows() == [
        ("A", "a safe 3"),
        ("D", "d safe"),
        ("é ü 中文 🙂", "nein"),
    ]
    assert sft["source_row"].to_list() == [5, 4, 7]


def test_manifest_records_revision_and_hashes_of_every_file(tmp_path):
    manifest = filter_dir(
        tmp_path, {"train": raw_frame(TRICKY_ROWS), "test": raw_frame(TRICKY_ROWS[:4])}
    )
    assert manifest["source"]["revision"] == "r1"
    assert set(manifest["splits"]) == {"train", "test"}
    for path, digest in {**manifest["inputs"], **manifest["outputs"]}.items():
        assert sha256_file(path) == digest
    assert len(manifest["outputs"]) == 4 and len(manifest["inputs"]) == 3
    assert read_json(tmp_path / "out" / "manifest.json") == manifest


@pytest.mark.parametrize("column", ["prompt", "response_0", "response_1", "is_response_1_safe"])
def test_a_null_value_is_fatal_by_default_naming_file_row_and_column(tmp_path, column):
    frame = raw_frame(TRICKY_ROWS).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col(column)).alias(column)
    )
    with pytest.raises(DataError, match=rf"train\.parquet: row 3, column {column}: null value"):
        filter_dir(tmp_path, {"train": frame})
    assert not (tmp_path / "out" / "pairs-train.parquet").exists()


def test_drop_mode_drops_malformed_rows_and_counts_them_by_reason(tmp_path):
    frame = raw_frame(TRICKY_ROWS).with_columns(
        pl.when(pl.int_range(pl.len()).is_in([0, 4]))
        .then(None)
        .otherwise(pl.col("prompt"))
        .alias("prompt"),
        pl.when(pl.int_range(pl.len()) == 5)
        .then(None)
        .otherwise(pl.col("response_1"))
        .alias("response_1"),
    )
    manifest = filter_dir(tmp_path, {"train": frame}, on_malformed="drop")
    counts = manifest["splits"]["train"]
    assert counts["rows_dropped"] == {
        "both_safe": 2,
        "both_unsafe": 1,
        "malformed: null prompt": 2,
        "malformed: null response_1": 1,
    }
    assert counts["rows_read"] == 8 and counts["rows_kept"] == 2
    assert sum(counts["rows_dropped"].values()) + counts["rows_kept"] == counts["rows_read"]


def test_missing_column_is_named(tmp_path):
    with pytest.raises(DataError, match=r"train\.parquet: missing column\(s\) is_response_1_safe"):
        filter_dir(tmp_path, {"train": raw_frame(TRICKY_ROWS).drop("is_response_1_safe")})


def test_non_boolean_safety_label_names_row_and_column(tmp_path):
    frame = raw_frame(TRICKY_ROWS).with_columns(
        pl.col("is_response_0_safe")
        .cast(pl.String)
        .replace({"true": "yes"})
        .alias("is_response_0_safe")
    )
    with pytest.raises(
        DataError,
        match=r"row 0, column is_response_0_safe: non-boolean safety label expected, got 'yes'",
    ):
        filter_dir(tmp_path, {"train": frame})


@pytest.mark.parametrize(
    "column, dtype",
    [
        ("is_response_0_safe", pl.String),
        ("is_response_0_safe", pl.Null),
        ("is_response_1_safe", pl.Int64),
        ("prompt", pl.Int64),
    ],
)
def test_an_all_null_column_of_any_type_is_a_null_value(tmp_path, column, dtype):
    """No value has the wrong type, so the problem is the nulls: named like any null value, and
    dropped and counted like them under data.on_malformed: drop."""
    frame = raw_frame(TRICKY_ROWS).with_columns(pl.lit(None, dtype=dtype).alias(column))
    with pytest.raises(DataError) as error:
        filter_dir(tmp_path, {"train": frame})
    assert str(error.value) == (
        f"{tmp_path / 'raw' / 'train.parquet'}: row 0, column {column}: null value (8 malformed "
        "row(s) in this file; set data.on_malformed: drop to drop and count them instead)"
    )
    with pytest.raises(DataError, match=rf"\(dropped: malformed: null {column} 8\)"):
        filter_dir(tmp_path, {"train": frame}, on_malformed="drop")


def test_empty_and_missing_files_are_named(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"train\.parquet: empty file"):
        read_raw(raw / "train.parquet")
    raw_frame(TRICKY_ROWS).head(0).write_parquet(raw / "test.parquet")
    with pytest.raises(DataError, match=r"test\.parquet: no rows"):
        read_raw(raw / "test.parquet")
    with pytest.raises(DataError, match=r"nothere\.parquet: file not found"):
        read_raw(raw / "nothere.parquet")
    (raw / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable parquet file"):
        read_raw(raw / "junk.parquet")


def test_a_bad_split_leaves_earlier_outputs_untouched(tmp_path):
    filter_dir(tmp_path, {"train": raw_frame(TRICKY_ROWS), "test": raw_frame(TRICKY_ROWS)})
    before = {p.name: sha256_file(p) for p in (tmp_path / "out").iterdir()}
    bad_test = raw_frame(TRICKY_ROWS).with_columns(pl.lit(None, dtype=pl.String).alias("prompt"))
    with pytest.raises(DataError):
        filter_dir(tmp_path, {"train": raw_frame(TRICKY_ROWS[:2]), "test": bad_test})
    assert {p.name: sha256_file(p) for p in (tmp_path / "out").iterdir()} == before


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    paths = write_raw(tmp_path / "raw", {"train": raw_frame(TRICKY_ROWS).drop("prompt")})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "amber_repro",
            "filter",
            "--raw",
            *map(str, paths),
            "--source",
            str(tmp_path / "raw" / "source.json"),
            "--out-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "missing column(s) prompt" in result.stderr and "Traceback" not in result.stderr


BOTH_SAFE = [(p, "fine", "also fine", True, True) for p in "PQRST"]


@pytest.mark.parametrize("empty_split", ["train", "test"])
def test_a_split_that_keeps_no_pair_stops_at_the_filter(tmp_path, empty_split):
    """Zero pairs (hence zero SFT targets) would fail two stages later; stop here, write nothing."""
    frames = {"train": raw_frame(TRICKY_ROWS), "test": raw_frame(TRICKY_ROWS)}
    frames[empty_split] = raw_frame([*BOTH_SAFE, ("U", "bad", "worse", False, False)])
    with pytest.raises(DataError) as error:
        filter_dir(tmp_path, frames)
    assert str(error.value) == (
        f"{tmp_path / 'raw' / empty_split}.parquet: kept 0 pairs and 0 SFT targets of 6 rows "
        "(dropped: both_safe 5, both_unsafe 1); a pair needs one safe and one unsafe response"
    )
    assert list((tmp_path / "out").iterdir()) == []
    frames[empty_split] = raw_frame([*BOTH_SAFE, TRICKY_ROWS[0]])  # one pair is enough
    assert filter_dir(tmp_path, frames)["splits"][empty_split]["rows_kept"] == 1


def test_dropped_malformed_rows_count_when_nothing_is_kept(tmp_path):
    frame = raw_frame([*BOTH_SAFE, ("V", None, "b", True, False)])
    with pytest.raises(DataError, match=r"\(dropped: both_safe 5, malformed: null response_0 1\)"):
        filter_dir(tmp_path, {"train": frame}, on_malformed="drop")


def test_cli_refuses_a_split_without_pairs_with_exit_code_2(tmp_path):
    paths = write_raw(tmp_path / "raw", {"train": raw_frame(BOTH_SAFE)})
    result = subprocess.run(
        [sys.executable, "-m", "amber_repro", "filter", "--raw", *map(str, paths), "--source",
         str(tmp_path / "raw" / "source.json"), "--out-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "kept 0" not in result.stdout
    assert result.stderr == (
        f"error: {paths[0]}: kept 0 pairs and 0 SFT targets of 5 rows (dropped: both_safe 5); a "
        "pair needs one safe and one unsafe response\n"
    )
