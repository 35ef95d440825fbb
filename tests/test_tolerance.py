"""Tolerance mode of a replay (amber_repro/provenance/tolerance.py): a tolerance per kind of value,
the largest difference per artifact, and figures and tables judged by what they are drawn from.
Small files written here, no workflow run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from amber_repro.errors import AmberError
from amber_repro.provenance.tolerance import (
    Tolerances,
    compare_tolerant,
    judge_by_inputs,
    numeric_differences,
)
from amber_repro.provenance.verify import Row

LOOSE = Tolerances(weights=1e-3, values=1e-3, scores=1e-3)


def differing(artifact: str, original: Path) -> Row:
    """The row compare_exact gives a file whose bytes differ from the run's."""
    expected = hashlib.sha256(original.read_bytes()).hexdigest()
    return Row(artifact, "job", expected, "f" * 64, "NO", False)


def test_one_number_sets_every_kind_and_named_kinds_override_it():
    assert Tolerances.parse("1e-3") == Tolerances(1e-3, 1e-3, 1e-3)
    assert Tolerances.parse("1e-3,scores=5e-3") == Tolerances(1e-3, 1e-3, 5e-3)
    assert Tolerances.parse("weights=1e-2, values=1e-4, scores=0") == Tolerances(1e-2, 1e-4, 0.0)
    assert str(Tolerances(1e-2, 1e-4, 0.0)) == "weights=0.01,values=0.0001,scores=0"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("weight=1e-3", "unknown kind 'weight'"),
        ("scores=1e-3", "no tolerance for weights, values"),
        ("-1e-3", "must be 0 or more"),
        ("nan", "must be 0 or more"),
        ("1e-3,values=x", "'x' is not a number"),
    ],
)
def test_a_wrong_tolerance_is_named(text, said):
    with pytest.raises(AmberError, match=said):
        Tolerances.parse(text)


def weights_file(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def test_weights_are_compared_per_tensor_relative_to_the_tensors_scale(tmp_path):
    """A large tensor may move more than a small one: 0.05 on a tensor of scale 100 is 5e-4 of it,
    1e-4 on a tensor of scale 0.01 is 1e-2 of it."""
    large, small = torch.full((4, 4), 100.0), torch.full((4,), 0.01)
    original = weights_file(tmp_path / "a.safetensors", {"large": large, "small": small})
    got = weights_file(tmp_path / "b.safetensors", {"large": large + 0.05, "small": small})
    row = compare_tolerant(differing("sft/model.safetensors", original), got, original, LOOSE)
    assert row.ok, row.match
    assert row.match == "within 0.001 (max relative |diff| 0.0005 over 2 tensors)"
    assert row.details == ["large: 0.0005"]
    got = weights_file(tmp_path / "c.safetensors", {"large": large, "small": small + 1e-4})
    row = compare_tolerant(differing("sft/model.safetensors", original), got, original, LOOSE)
    assert not row.ok and row.match.startswith("NOT within 0.001 (max relative |diff| 0.01")
    loose_weights = Tolerances(weights=2e-2, values=0.0, scores=0.0)
    assert compare_tolerant(
        differing("sft/model.safetensors", original), got, original, loose_weights
    ).ok


def test_log_prob_tables_are_relative_above_one_and_absolute_below(tmp_path):
    original, got = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pl.DataFrame({"logp": [-300.0, 0.5], "id": [1, 2]}).write_parquet(original)
    pl.DataFrame({"logp": [-300.2, 0.5], "id": [1, 2]}).write_parquet(got)  # 0.2 of 300
    row = compare_tolerant(differing("ref_logps/train.parquet", original), got, original, LOOSE)
    assert row.ok and "max relative |diff| 0.000667 over 1 columns" in row.match
    pl.DataFrame({"logp": [-300.0, 0.5015], "id": [1, 2]}).write_parquet(got)  # 0.0015 of 0.5
    row = compare_tolerant(differing("ref_logps/train.parquet", original), got, original, LOOSE)
    assert not row.ok and "0.0015" in row.match
    pl.DataFrame({"logp": [-300.0, 0.5], "id": [1, 3]}).write_parquet(got)
    row = compare_tolerant(differing("ref_logps/train.parquet", original), got, original, LOOSE)
    assert not row.ok and row.details == ["id: differs (not a number)"]


def record(path: Path, **numbers) -> Path:
    path.write_text(json.dumps({"run": {"git_commit": "c" * 40}, "results": numbers}))
    return path


def test_eval_scores_are_absolute_and_other_records_relative(tmp_path):
    tight_scores = Tolerances(weights=1e-3, values=1e-3, scores=1e-4)
    original = record(tmp_path / "eval.json", acc=0.5, logps=-250.0)
    got = record(tmp_path / "got.json", acc=0.5005, logps=-250.0)
    eval_row = differing("ambersafe/eval.json", original)
    assert compare_tolerant(eval_row, got, original, LOOSE).ok
    checked = compare_tolerant(
        differing("ambersafe/eval.json", original), got, original, tight_scores
    )
    assert not checked.ok and checked.match.startswith("NOT within 0.0001 (max |diff| 0.0005")
    part = differing("ambersafe/eval/dpo.json", original)
    assert not compare_tolerant(part, got, original, tight_scores).ok  # an eval part: scores too
    # A training record's numbers are values: -250.2 is 8e-4 of -250.
    original = record(tmp_path / "amber_repro.json", loss=-250.0)
    got = record(tmp_path / "got2.json", loss=-250.2)
    row = compare_tolerant(differing("sft/amber_repro.json", original), got, original, tight_scores)
    assert row.ok and "max relative |diff| 0.0008" in row.match


def test_training_metrics_report_the_five_largest_differences(tmp_path):
    original, got = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    original.write_text("".join(json.dumps({"step": i, "loss": 2.0}) + "\n" for i in range(8)))
    got.write_text(
        "".join(json.dumps({"step": i, "loss": 2.0 + i * 1e-5}) + "\n" for i in range(8))
    )
    row = compare_tolerant(differing("sft/metrics.jsonl", original), got, original, LOOSE)
    assert row.ok and row.details[0] == "/7/loss: 3.5e-05"
    assert len(row.details) == 6 and row.details[-1] == "... and 2 smaller differences"


@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=20,
    )
)
def test_relative_differences_match_a_plain_reference(pairs):
    expected, got = [a for a, _ in pairs], [b for _, b in pairs]
    numbers, other = numeric_differences(expected, got, relative=True)
    assert other == []
    reference = [abs(a - b) / max(1.0, abs(a)) for a, b in pairs]
    assert list(numbers.values()) == pytest.approx(reference, rel=1e-12, abs=0)


def test_figures_and_tables_are_judged_by_what_they_are_drawn_from():
    ok = Row("ambersafe/eval.json", "eval_summary", "a" * 64, "b" * 64, "within 0.001", True)
    bad = Row("ambersafe/dpo/model.safetensors", "dpo", "a" * 64, "b" * 64, "NOT within", False)
    record_row = Row("logs/dpo.log", "dpo", "a" * 64, "b" * 64, "record", True)

    def figure(name="ambersafe/report/eval_table.html"):
        return Row(name, "report_figures", "a" * 64, "c" * 64, "NO", False)

    judged = judge_by_inputs(figure(), [ok, record_row])
    assert judged.ok and judged.match == "differs; drawn from 2 artifacts within tolerance"
    judged = judge_by_inputs(figure("ambersafe/generations.md"), [ok, bad])
    assert not judged.ok
    assert judged.match == "NOT within: drawn from ambersafe/dpo/model.safetensors, which is not"
    assert not judge_by_inputs(figure(), [figure("ambersafe/report/eval.png")]).ok
    missing = Row(
        "ambersafe/report/eval.png", "report_figures", "a" * 64, None, "NO (missing)", False
    )
    assert judge_by_inputs(missing, [ok]).match == "NO (missing)"


def test_a_replay_judges_a_figure_by_the_weights_of_an_earlier_job(tmp_path):
    """The replay's wiring (replay.verify_job): the crate's `object` of the figure's job names the
    weights, whose row (an earlier job's) decides."""
    from amber_repro.provenance.replay import verify_job
    from amber_repro.provenance.verify import Crate

    tensors = {"w": torch.full((2, 2), 10.0)}
    run, replay = tmp_path / "results", tmp_path / "code" / "results"
    for folder in (run, replay):
        folder.mkdir(parents=True)
    weights_file(run / "model.safetensors", tensors)
    (run / "figure.png").write_bytes(b"run's pixels")
    (replay / "figure.png").write_bytes(b"replay's pixels")

    def sha(name):
        return hashlib.sha256((run / name).read_bytes()).hexdigest()

    graph = [
        {"@id": "ro-crate-metadata.json", "about": {"@id": "./"}},
        {"@id": "./", "mentions": [{"@id": "#job-train"}, {"@id": "#job-plot"}]},
        {"@id": "#job-train", "name": "train", "result": [{"@id": "model.safetensors"}]},
        {
            "@id": "#job-plot",
            "name": "plot",
            "object": [{"@id": "model.safetensors"}],
            "result": [{"@id": "figure.png"}],
        },
        {"@id": "model.safetensors", "sha256": sha("model.safetensors")},
        {"@id": "figure.png", "sha256": sha("figure.png")},
    ]
    (run / "ro-crate-metadata.json").write_text(json.dumps({"@graph": graph}))
    crate = Crate(run / "ro-crate-metadata.json")
    train, plot = crate.jobs
    for moved, figure_ok in ((1e-3, True), (1.0, False)):  # 1e-4 and 1e-1 of the tensor's scale
        weights_file(replay / "model.safetensors", {"w": tensors["w"] + moved})
        before = verify_job(train, crate, tmp_path, LOOSE, [], [])
        rows = verify_job(plot, crate, tmp_path, LOOSE, [], before)
        assert [row.artifact for row in rows] == ["figure.png"]
        assert rows[0].ok is figure_ok, rows[0].match
