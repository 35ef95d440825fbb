"""How a replay's files are compared to the run's (amber_repro/provenance/verify.py), file kind by
file kind, and which interpreter a replay accepts: small files written here, no workflow run."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import pytest

from amber_repro.provenance.replay_install import ReplayError, check_interpreter
from amber_repro.provenance.verify import (
    card_text,
    comparable,
    compare_exact,
    comparison,
    uncompared_differences,
)

RECORD = {
    "command": ["python", "-m", "amber_repro", "sft"],
    "settings": {"lr": 0.001},
    "results": {"final loss": 2.5, "train tokens/s": 31000.0, "optimizer steps": 22},
    "speed": {"seconds": 0.76, "tokens_per_second": 5.5e4, "peak_memory_bytes": 6e8},
    "files": {"model.safetensors": {"sha256": "a" * 64}, "README.md": {"sha256": "b" * 64}},
    "timing": {"finished_at": "2026-12-04T22:14:33Z", "total_seconds": 2.6},
    "run": {"git_commit": "c" * 40},
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replayed(record: dict, **changes) -> dict:
    copy = json.loads(json.dumps(record))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = copy
        for parent in parents:
            node = node[parent]
        node[key] = value
    return copy


@pytest.mark.parametrize(
    "changes",
    [
        {"results__train tokens/s": 1.0},
        {"results__wall_seconds": 3.0},  # a measured key the run did not write: also left out
        {"results__tokens_per_second": 1.0},
        {"speed__seconds": 9.9},
        {"speed__peak_memory_bytes": 1},
        {"timing__finished_at": "2030-01-01T00:00:00Z"},
        {"run__git_commit": "d" * 40},
        {"files__README.md": {"sha256": "e" * 64}},
    ],
)
def test_a_record_compares_equal_when_only_measurements_differ(changes):
    assert comparable(RECORD) == comparable(replayed(RECORD, **changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"results__final loss": 2.6},
        {"results__optimizer steps": 23},
        {"settings__lr": 0.002},
        {"command": ["python", "-m", "amber_repro", "dpo"]},
        {"files__model.safetensors": {"sha256": "f" * 64}},
    ],
)
def test_a_record_differs_when_what_it_computed_differs(changes):
    assert comparable(RECORD) != comparable(replayed(RECORD, **changes))


def test_the_table_names_what_was_left_out():
    assert uncompared_differences(RECORD, RECORD) == []
    changed = replayed(RECORD, timing__total_seconds=3.0, speed__seconds=1.0)
    assert uncompared_differences(RECORD, changed) == ["timing", "speed"]
    changed = replayed(RECORD, **{"results__train tokens/s": 1.0})
    assert uncompared_differences(RECORD, changed) == [
        "measured values and hashes of files holding them"
    ]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("ambersafe/sft/model.safetensors", "bytes"),
        ("ambersafe/sft/metrics.jsonl", "bytes"),
        ("ambersafe/sft/README.md", "card"),
        ("ambersafe/generations.md", "bytes"),
        ("ambersafe/sft/tensorboard/events.out.tfevents.1796422451.vm.3169.0", "presence"),
        ("logs/sft.log", "record"),
        ("results/benchmarks/sft.tsv", "record"),
        ("ro-crate-metadata.json", "record"),
    ],
)
def test_each_kind_of_file_has_its_comparison(path, kind):
    assert comparison(path) == kind


def test_a_stage_record_is_compared_as_json_only_with_its_original(tmp_path):
    record = tmp_path / "amber_repro.json"
    record.write_text(json.dumps(RECORD))
    assert comparison("ambersafe/sft/amber_repro.json", record) == "json"
    assert comparison("ambersafe/sft/amber_repro.json") == "bytes"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden_size": 32}))
    assert comparison("ambersafe/sft/config.json", config) == "bytes"


CARD = """# sft

| setting | value |
|---|---|
| lr | `0.001` |

| metric | value |
|---|---|
| final loss | 205.0 |
| train tokens/s | 3.291e+04 |
"""


def test_a_model_card_is_compared_without_its_measured_rows(tmp_path):
    original, got = tmp_path / "original.md", tmp_path / "got.md"
    original.write_text(CARD)
    got.write_text(CARD.replace("3.291e+04", "2.9e+04"))
    assert "| train tokens/s | 3.291e+04 |" not in card_text(original)
    assert card_text(original) == card_text(got)
    row = compare_exact("ambersafe/sft/README.md", "sft", sha(original), got, original)
    assert row.ok and row.match == "yes (without measured rows)"
    got.write_text(CARD.replace("205.0", "205.1"))
    assert not compare_exact("ambersafe/sft/README.md", "sft", sha(original), got, original).ok
    got.write_text(CARD.replace("`0.001`", "`0.002`"))
    assert not compare_exact("ambersafe/sft/README.md", "sft", sha(original), got, original).ok


def test_a_stage_record_row_says_what_it_left_out(tmp_path):
    original, got = tmp_path / "a" / "amber_repro.json", tmp_path / "b" / "amber_repro.json"
    for path, record in ((original, RECORD), (got, replayed(RECORD, speed__seconds=3.0))):
        path.parent.mkdir()
        path.write_text(json.dumps(record))
    row = compare_exact("ambersafe/sft/amber_repro.json", "sft", sha(original), got, original)
    assert row.ok and row.match == "yes (without speed)"
    got.write_text(json.dumps(replayed(RECORD, results__final_loss=0.0)))
    assert not compare_exact(
        "ambersafe/sft/amber_repro.json", "sft", sha(original), got, original
    ).ok


def test_tensorboard_files_must_exist_under_their_own_names(tmp_path):
    artifact = "ambersafe/sft/tensorboard/events.out.tfevents.1796422451.vm.3169.0"
    got = tmp_path / artifact
    got.parent.mkdir(parents=True)
    row = compare_exact(artifact, "sft", "0" * 64, got, None)
    assert not row.ok and row.match == "NO (missing)"
    (got.parent / "events.out.tfevents.1800000000.other-host.42.0").write_bytes(b"events")
    row = compare_exact(artifact, "sft", "0" * 64, got, None)
    assert row.ok and row.got == hashlib.sha256(b"events").hexdigest()


def test_a_missing_record_fails_its_row(tmp_path):
    row = compare_exact("logs/sft.log", "sft", "0" * 64, tmp_path / "logs" / "sft.log", None)
    assert not row.ok and row.match == "NO (missing)"
    (tmp_path / "sft.log").write_text("other wall times\n")
    assert compare_exact("logs/sft.log", "sft", "0" * 64, tmp_path / "sft.log", None).ok


def test_a_replay_refuses_another_minor_python_in_one_line():
    here = platform.python_version()
    check_interpreter(sys.executable, {"interpreter": {"python": here, "platform": "x"}})
    major, minor, *_ = here.split(".")
    patch_differs = f"{major}.{minor}.999"
    check_interpreter(sys.executable, {"interpreter": {"python": patch_differs}})
    check_interpreter(sys.executable, {})  # an older bundle records none: not checked
    other = f"{major}.{int(minor) + 1}.0"
    manifest = {"interpreter": {"python": other, "platform": "linux-x86_64"}}
    with pytest.raises(ReplayError) as refused:
        check_interpreter(sys.executable, manifest)
    message = str(refused.value)
    assert "\n" not in message
    assert f"the run used Python {other} (linux-x86_64)" in message
    assert f"is Python {here}" in message
    assert f"replay with a Python {major}.{int(minor) + 1} interpreter" in message
