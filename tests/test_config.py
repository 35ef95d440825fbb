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


def test_snakemake_refuses_a_wrong_key_before_any_job(workdir):
    config = workdir.config
    config["data"]["synthetic"]["sede"] = 1
    workdir.write_config(config)
    result = workdir.snakemake("results/ambersafe/data/manifest.json", check=False)
    assert result.returncode != 0
    assert "data.synthetic.sede: unknown key" in result.stderr
    assert not (workdir.path / "results").exists()


def test_snakemake_refuses_a_wrong_type_before_any_job(workdir):
    config = workdir.config
    config["data"]["synthetic"]["train_rows"] = "3000 rows"
    workdir.write_config(config)
    result = workdir.snakemake("results/ambersafe/data/manifest.json", check=False)
    assert result.returncode != 0
    assert "data.synthetic.train_rows: '3000 rows' is not of type 'integer'" in result.stderr
    assert not (workdir.path / "results").exists()


def test_snakemake_refuses_several_nodes_for_a_rule_that_runs_on_one(workdir):
    config = workdir.config
    config["resources"]["evaluate"]["nodes"] = 2
    workdir.write_config(config)
    result = workdir.snakemake("-n", check=False)
    assert result.returncode != 0
    assert "resources.evaluate.nodes: 2, but only dpo, ref_logps, sft run on several nodes" in result.stdout + result.stderr
