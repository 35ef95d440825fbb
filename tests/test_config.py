"""The config schema stops a run before any job starts, naming the bad key."""

from __future__ import annotations

import copy

import yaml

from amber_repro.configuration import config_errors
from conftest import REPO

SCHEMA = REPO / "config" / "schema.yaml"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "ambersafe-7b.yaml"):
        assert config_errors(load(name), SCHEMA) == [], name


def test_every_key_names_an_unknown_or_mistyped_value():
    config = copy.deepcopy(load("config.yaml"))
    config["data"]["colour"] = "blue"
    config["data"]["synthetic"]["seed"] = "zero"
    config["data"]["on_malformed"] = "ignore"
    assert config_errors(config, SCHEMA) == [
        "data.colour: unknown key (allowed here: hub, on_malformed, source, synthetic)",
        "data.on_malformed: 'ignore' is not one of ['error', 'drop']",
        "data.synthetic.seed: 'zero' is not of type 'integer'",
    ]


def refused(workdir, edit, *targets: str) -> str:
    """Snakemake's output for `targets` after `edit(config)`; asserts it stopped before any job."""
    config = workdir.config
    edit(config)
    workdir.write_config(config)
    result = workdir.snakemake(*targets, check=False)
    assert result.returncode != 0
    assert not (workdir.path / "results").exists()
    return result.stdout + result.stderr


def test_snakemake_refuses_a_wrong_key_before_any_job(workdir):
    output = refused(workdir, lambda c: c["data"]["synthetic"].update(sede=1), "results/ambersafe/data/manifest.json")
    assert "data.synthetic.sede: unknown key" in output


def test_snakemake_refuses_a_wrong_type_before_any_job(workdir):
    output = refused(workdir, lambda c: c["data"]["synthetic"].update(train_rows="3000 rows"),
                     "results/ambersafe/data/manifest.json")
    assert "data.synthetic.train_rows: '3000 rows' is not of type 'integer'" in output


def test_snakemake_refuses_several_nodes_for_a_rule_that_runs_on_one(workdir):
    output = refused(workdir, lambda c: c["resources"]["evaluate"].update(nodes=2), "results/ambersafe/eval.json")
    assert "resources.evaluate.nodes: 2, but only dpo, ref_logps, sft run on several nodes" in output
