"""Changing one thing reruns exactly what depends on it (checked with dry runs on a built DAG).

Three ways to change a setting (config.yaml, an overlay file, `--config` on the command line) must
schedule the same jobs. The pipeline is a copy of the whole workflow, so editing its package files
never touches the checkout, even if the test run is killed.
"""

from __future__ import annotations

import os
import shutil

import pytest
import yaml
from conftest import Workdir, scheduled_jobs

# The provenance crate describes every output, so it is rebuilt after any change.
LAST = {"report_figures": 1, "provenance": 1, "all": 1}
# The safety answers of base, SFT and DPO, and their verdicts, are redone with the DPO model.
SAFETY = {"safety_answers": 1, "safety_judge": 1}
# A new DPO model is evaluated alone (one evaluate job per model), then eval.json gathered again.
DOWNSTREAM_OF_DPO = {"dpo": 1, "evaluate": 1, "eval_summary": 1, "generate": 1, **SAFETY, **LAST}
# A new SFT model re-evaluates SFT and DPO; the base model's evaluation stands.
DOWNSTREAM_OF_SFT = {"sft": 1, "ref_logps": 1, **DOWNSTREAM_OF_DPO, "evaluate": 2}


@pytest.fixture
def built(pipeline):
    """The built pipeline; its config.yaml is restored after each test."""
    config_file = pipeline.path / "config" / "config.yaml"
    original = config_file.read_text()
    assert scheduled_jobs(pipeline.snakemake("-n").stdout) == {}, (
        "the pipeline must start up to date"
    )
    yield pipeline
    config_file.write_text(original)


def dry_run_after(built, changes: dict) -> dict[str, int]:
    """The jobs scheduled after adding `changes` to config.yaml, as a user would edit it."""
    config_file = built.path / "config" / "config.yaml"
    config_file.write_text(config_file.read_text() + yaml.safe_dump(changes, sort_keys=False))
    return scheduled_jobs(built.snakemake("-n").stdout)


def test_changing_dpo_beta_reruns_dpo_and_evaluation_only(built):
    assert dry_run_after(built, {"dpo": {"beta": 0.2}}) == DOWNSTREAM_OF_DPO


def test_an_overlay_file_reruns_the_same_jobs(built):
    overlay = built.path / "beta.yaml"
    overlay.write_text("dpo:\n  beta: 0.2\n")
    jobs = scheduled_jobs(built.snakemake("-n", f"--configfile={overlay}").stdout)
    assert jobs == DOWNSTREAM_OF_DPO


def test_a_command_line_override_reruns_the_same_jobs(built):
    """Snakemake passes nested --config values as strings; the typed settings convert them."""
    jobs = scheduled_jobs(built.snakemake("-n", "--config", "dpo={beta: 0.2}").stdout)
    assert jobs == DOWNSTREAM_OF_DPO


def test_an_override_equal_to_the_current_value_reruns_nothing(built):
    """'0.1' from the command line is the same setting as 0.1 from YAML: no spurious rerun."""
    beta = built.config["dpo"]["beta"]
    assert scheduled_jobs(built.snakemake("-n", "--config", f"dpo={{beta: {beta}}}").stdout) == {}


def test_a_target_after_configfile_is_named_not_read_as_config(built):
    """eval.json is valid JSON: Snakemake would read it as a second config file."""
    overlay = built.path / "beta.yaml"
    overlay.write_text("dpo:\n  beta: 0.2\n")
    result = built.snakemake(
        "-n", "--configfile", str(overlay), "results/ambersafe/eval.json", check=False
    )
    assert result.returncode != 0
    assert (
        "results/ambersafe/eval.json was given as a config file: --configfile takes several files"
        in result.stdout + result.stderr
    )


def test_changing_the_dpo_loss_keeps_the_reference_logps(built):
    jobs = dry_run_after(built, {"dpo": {"loss": "ipo", "lr": 5e-4}})
    assert jobs == DOWNSTREAM_OF_DPO and "ref_logps" not in jobs


def test_changing_the_eval_task_list_reruns_evaluation_only(built):
    jobs = dry_run_after(built, {"eval": {"harness_tasks": ["arc_easy:0"]}})
    assert jobs == {"prepare_eval_datasets": 1, "evaluate": 3, "eval_summary": 1, **LAST}


def test_changing_the_filter_setting_reruns_everything_downstream_of_the_filter(built):
    jobs = dry_run_after(built, {"data": {"on_malformed": "drop"}})
    assert jobs == {"filter_pairs": 1, "build_tiny_model": 1, **DOWNSTREAM_OF_SFT, "evaluate": 3}


def test_changing_the_reference_precision_reruns_from_the_reference_logps(built):
    jobs = dry_run_after(built, {"reference": {"precision": "bf16"}})
    assert jobs == {"ref_logps": 1, **DOWNSTREAM_OF_DPO}


def test_changing_sft_lr_reruns_from_sft(built):
    jobs = dry_run_after(built, {"sft": {"lr": 5e-4}})
    assert jobs == DOWNSTREAM_OF_SFT


@pytest.mark.parametrize(
    "module, expected",
    [
        ("training/dpo.py", DOWNSTREAM_OF_DPO),
        # The DPO loss; every model's evaluation uses it (the rewards), so all three rerun.
        ("training/losses.py", {**DOWNSTREAM_OF_DPO, "evaluate": 3}),
        ("training/sft.py", DOWNSTREAM_OF_SFT),
        ("evaluation/plots.py", LAST),
        # The judge, not the answers: they need no new generation, nor the evaluations.
        ("evaluation/judges.py", {"safety_judge": 1, "eval_summary": 1, **LAST}),
    ],
)
def test_editing_a_stage_module_reruns_that_stage_and_what_follows(built, module, expected):
    """A real edit (new content) of the pipeline's own copy of the package; Snakemake ignores a bare
    touch when the recorded checksum still matches."""
    path = built.path / "amber_repro" / module
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        assert scheduled_jobs(built.snakemake("-n").stdout) == expected
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_moved_project_keeps_its_record_of_what_is_up_to_date(built, tmp_path):
    """`cp -a` of a finished project (results/ and .snakemake/ included) to another directory:
    nothing to do there, and changes rerun what they rerun in the original. No record stores the
    old path."""
    moved = Workdir.existing(tmp_path / "moved")
    shutil.copytree(built.path, moved.path, symlinks=True)  # copies mtimes too, as cp -a does
    assert scheduled_jobs(moved.snakemake("-n").stdout) == {}
    assert (
        scheduled_jobs(moved.snakemake("-n", "--config", "dpo={beta: 0.2}").stdout)
        == DOWNSTREAM_OF_DPO
    )
    dpo_module = moved.path / "amber_repro" / "training" / "dpo.py"
    dpo_module.write_text(dpo_module.read_text() + "\n# an edit\n")
    assert scheduled_jobs(moved.snakemake("-n").stdout) == DOWNSTREAM_OF_DPO
    for record in (built.path / "results").rglob("*"):
        if record.suffix in (".json", ".md", ".html") and record.is_file():
            assert str(built.path) not in record.read_text(), record


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("results/ambersafe/dpo", DOWNSTREAM_OF_DPO),
        ("results/ambersafe/sft", DOWNSTREAM_OF_SFT),
        ("results/ambersafe/ref_logps/train.parquet", {"ref_logps": 1, **DOWNSTREAM_OF_DPO}),
    ],
)
def test_a_deleted_checkpoint_or_reference_is_rebuilt(built, output, expected):
    """Checkpoints are what users come for: a missing one is rebuilt (and what depends on it)."""
    path = built.path / output
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    try:
        assert scheduled_jobs(built.snakemake("-n").stdout) == expected
    finally:
        aside.rename(path)
