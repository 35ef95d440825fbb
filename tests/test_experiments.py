"""Named experiments: DPO variants sharing the data, SFT checkpoint and reference log-probs.

Adding one schedules only its own jobs (and the comparison); a typo names the experiment and key;
a real sweep writes one row per experiment with the values it ran with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import Workdir, scheduled_jobs

from amber_repro.config.experiments import DEFAULT, experiment_names, experiment_settings
from amber_repro.config.load import resolve
from amber_repro.errors import ConfigError
from amber_repro.evaluation.sweep import changed_settings

PRESETS = Path(__file__).resolve().parents[1] / "config" / "presets"
ITS_OWN_JOBS = {
    "dpo_experiment": 1,
    "evaluate_experiment": 1,
    "eval_summary_experiment": 1,
    "generate_experiment": 1,
    "sweep": 1,
    "provenance": 1,
    "all": 1,
}


def embedded(**changes) -> dict:
    return {"preset": "embedded", **changes}


def test_an_experiment_changes_only_what_it_names():
    config = resolve(
        embedded(experiments={"b": {"dpo": {"beta": 0.5}, "eval": {"limit": 7}}}), PRESETS
    )
    dpo, evaluation = experiment_settings(config, "b")
    assert dpo.beta == 0.5 and evaluation.limit == 7
    assert dpo.model_dump(exclude={"beta"}) == config.dpo.model_dump(exclude={"beta"})
    assert evaluation.model_dump(exclude={"limit"}) == config.eval.model_dump(exclude={"limit"})
    assert experiment_settings(config, DEFAULT) == (config.dpo, config.eval)
    assert experiment_names(config) == [DEFAULT, "b"]


def test_a_nested_eval_change_keeps_the_other_nested_values():
    experiments = {"g": {"eval": {"generations": {"prompts": 3}}}}
    config = resolve(embedded(experiments=experiments), PRESETS)
    _, evaluation = experiment_settings(config, "g")
    assert evaluation.generations.prompts == 3
    assert evaluation.generations.max_new_tokens == config.eval.generations.max_new_tokens


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        (
            {"b": {"dpo": {"bta": 0.2}}},
            "experiments.b.dpo.bta: unknown key; did you mean beta? (allowed here: ",
        ),
        ({"b": {"dpo": {"beta": -1}}}, "experiments.b.dpo.beta: Input should be greater than 0"),
        ({"b": {"dpo": {"batch_size": 15}}}, "experiments.b.dpo.batch_size: 15 is not divisible"),
        ({"b": {"eval": {"harness_tasks": []}}}, "experiments.b.eval.harness_tasks: not a setting"),
        ({"b": {"lr": 1}}, "experiments.b.lr: unknown key (allowed here: dpo, eval)"),
        ({"default": {}}, "experiments.default: reserved"),
        ({"a b": {}}, "experiments.a b.[key]: String should match pattern"),
    ],
)
def test_a_bad_experiment_is_a_config_error_naming_it_and_the_key(experiments, message):
    with pytest.raises(ConfigError) as raised:
        resolve(embedded(experiments=experiments), PRESETS)
    assert message in str(raised.value)


def test_the_sweep_axes_are_the_settings_that_differ():
    rows = [
        {"settings": {"beta": 0.1, "loss": "sigmoid", "lr": 1e-3}},
        {"settings": {"beta": 0.2, "loss": "sigmoid", "lr": 1e-3}},
        {"settings": {"beta": 0.1, "loss": "ipo", "lr": 1e-3}},
    ]
    assert changed_settings(rows) == ["beta", "loss"]
    assert changed_settings(rows[:1]) == []


@pytest.fixture
def built(pipeline):
    """The built pipeline; its config.yaml is restored after each test."""
    config_file = pipeline.path / "config" / "config.yaml"
    original = config_file.read_text()
    yield pipeline
    config_file.write_text(original)


def add_experiments(workdir: Workdir, experiments: dict) -> None:
    config_file = workdir.path / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["experiments"] = experiments
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def test_adding_an_experiment_schedules_only_its_own_jobs(built):
    add_experiments(built, {"beta-0.5": {"dpo": {"beta": 0.5}}})
    assert scheduled_jobs(built.snakemake("-n").stdout) == ITS_OWN_JOBS
    add_experiments(built, {"beta-0.5": {"dpo": {"beta": 0.5}}, "ipo": {"dpo": {"loss": "ipo"}}})
    jobs = scheduled_jobs(built.snakemake("-n").stdout)
    assert jobs == {**ITS_OWN_JOBS, **{k: 2 for k in ITS_OWN_JOBS if k.endswith("_experiment")}}


def test_a_typo_in_an_experiment_stops_the_dry_run_naming_it(built):
    add_experiments(built, {"beta-0.5": {"dpo": {"beta": 0.5, "los": "ipo"}}})
    result = built.snakemake("-n", check=False)
    assert result.returncode != 0
    assert "experiments.beta-0.5.dpo.los: unknown key" in result.stdout + result.stderr


def test_a_sweep_writes_one_row_per_experiment_with_its_values(quick_pipeline, tmp_path):
    """A real run on a copy of a built pipeline: one experiment, then the comparison."""
    copy = tmp_path / "sweep"
    shutil.copytree(quick_pipeline.path, copy, symlinks=True)
    workdir = Workdir.existing(copy)
    add_experiments(workdir, {"ipo": {"dpo": {"loss": "ipo", "beta": 0.2}}})
    workdir.snakemake()  # rule all: the experiment's outputs, the sweep, the crate
    table = json.loads((copy / "results/ambersafe/sweep.json").read_text())
    rows = {row["name"]: row for row in table["experiments"]}
    assert list(rows) == ["default", "ipo"]
    assert table["axes"] == ["beta", "loss"]
    assert rows["default"]["changed"] == {"beta": 0.1, "loss": "sigmoid"}
    assert rows["ipo"]["changed"] == {"beta": 0.2, "loss": "ipo"}
    folder = copy / "results/ambersafe/experiments/ipo"
    report = json.loads((folder / "eval.json").read_text())
    assert list(report["models"]) == ["dpo"]
    assert report["dpo_rewards"]["beta"] == 0.2 and report["dpo_rewards"]["loss_type"] == "ipo"
    assert (
        rows["ipo"]["results"]["rewards/accuracies"] == report["dpo_rewards"]["rewards/accuracies"]
    )
    assert rows["ipo"]["train_seconds"] > 0
    # The checkpoint really ran with the experiment's settings (its own record says so).
    record = json.loads((folder / "dpo/amber_repro.json").read_text())
    assert record["settings"]["loss"] == "ipo" and record["settings"]["beta"] == 0.2
    assert (folder / "generations.md").exists()
    assert (copy / "results/ambersafe/report/sweep.png").stat().st_size > 0
    crate = (copy / "results/ro-crate-metadata.json").read_text()
    # the crate names files relative to results/
    assert '"ambersafe/experiments/ipo/dpo' in crate and '"ambersafe/sweep.json"' in crate
    # Shared, not rebuilt: the SFT checkpoint, the reference log-probs, the default's DPO.
    for shared in ("sft", "ref_logps/train.parquet", "dpo"):
        assert (copy / "results/ambersafe" / shared).stat().st_mtime == (
            quick_pipeline.path / "results/ambersafe" / shared
        ).stat().st_mtime
