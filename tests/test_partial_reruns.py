"""Changing one thing reruns exactly what depends on it (checked with dry runs on a built DAG)."""

from __future__ import annotations

import os

import pytest

from conftest import REPO, scheduled_jobs

DOWNSTREAM_OF_DPO = {"dpo": 1, "evaluate": 1, "generate": 1, "report_figures": 1, "all": 1}


@pytest.fixture
def built(pipeline):
    """The built pipeline; its config is restored after each test."""
    original = pipeline.config
    assert scheduled_jobs(pipeline.snakemake("-n").stdout) == {}, "the pipeline must start up to date"
    yield pipeline
    pipeline.write_config(original)


def dry_run_after(built, change) -> dict[str, int]:
    config = built.config
    change(config)
    built.write_config(config)
    return scheduled_jobs(built.snakemake("-n").stdout)


def test_changing_dpo_beta_reruns_dpo_and_evaluation_only(built):
    assert dry_run_after(built, lambda c: c["dpo"].update(beta=0.2)) == DOWNSTREAM_OF_DPO


def test_changing_the_dpo_loss_keeps_the_reference_logps(built):
    jobs = dry_run_after(built, lambda c: c["dpo"].update(loss="ipo", lr=5e-4))
    assert jobs == DOWNSTREAM_OF_DPO and "ref_logps" not in jobs


def test_changing_the_eval_task_list_reruns_evaluation_only(built):
    jobs = dry_run_after(built, lambda c: c["eval"].update(harness_tasks=["arc_easy:0"]))
    assert jobs == {"prepare_eval_datasets": 1, "evaluate": 1, "report_figures": 1, "all": 1}


def test_changing_the_filter_setting_reruns_everything_downstream_of_the_filter(built):
    jobs = dry_run_after(built, lambda c: c["data"].update(on_malformed="drop"))
    assert jobs == {"filter_pairs": 1, "build_tiny_model": 1, "sft": 1, "ref_logps": 2, **DOWNSTREAM_OF_DPO}


@pytest.mark.parametrize(
    "module, expected",
    [
        ("dpo.py", DOWNSTREAM_OF_DPO),
        ("losses.py", {**DOWNSTREAM_OF_DPO}),  # the DPO loss; evaluation uses it for the rewards too
        ("sft.py", {"sft": 1, "ref_logps": 2, **DOWNSTREAM_OF_DPO}),
        ("plots.py", {"report_figures": 1, "all": 1}),
    ],
)
def test_editing_a_stage_module_reruns_that_stage_and_what_follows(built, module, expected):
    """A real edit (new content): Snakemake ignores a bare touch when the recorded checksum still matches."""
    path = REPO / "amber_repro" / module
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        assert scheduled_jobs(built.snakemake("-n").stdout) == expected
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
