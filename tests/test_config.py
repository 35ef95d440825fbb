"""The config is checked before any job starts, and a config value never reaches a shell raw."""

from __future__ import annotations

import json
import typing

import jsonschema
import pytest
import yaml
from conftest import REPO
from pydantic import BaseModel

from amber_repro.configuration import config_errors, merge
from amber_repro.settings import Config

PRESETS = REPO / "config" / "presets"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_shipped_configs_are_valid():
    assert config_errors(load("config.yaml"), PRESETS) == []
    assert config_errors(merge(load("config.yaml"), load("ambersafe-7b.yaml")), PRESETS) == []


def test_shipped_configs_and_preset_follow_the_generated_schema():
    schema = json.loads((REPO / "config" / "schema.json").read_text())
    for name in ("config.yaml", "ambersafe-7b.yaml", "presets/embedded.yaml"):
        jsonschema.validate(load(name), schema)


def test_every_key_names_an_unknown_or_mistyped_value():
    config = {
        "preset": "embedded",
        "data": {"colour": "blue", "synthetic": {"seed": "zero"}, "on_malformed": "ignore"},
    }
    assert config_errors(config, PRESETS) == [
        "data.colour: unknown key (allowed here: hub, on_malformed, source, synthetic)",
        "data.on_malformed: Input should be 'error' or 'drop' (got 'ignore')",
        (
            "data.synthetic.seed: Input should be a valid integer, unable to parse string as an "
            "integer (got 'zero')"
        ),
    ]


def test_an_unknown_preset_is_named_with_the_allowed_ones():
    assert config_errors({"preset": "tiny"}, PRESETS) == [
        "preset: Input should be 'recipe' or 'embedded' (got 'tiny')"
    ]


def test_strings_from_the_command_line_are_converted_by_type():
    """Snakemake passes `--config 'dpo={beta: 0.2, reference_free: true}'` values as strings."""
    from amber_repro.configuration import resolve

    settings = resolve(
        {
            "preset": "embedded",
            "dpo": {"beta": "0.2", "reference_free": "true", "n_epochs": "2"},
            "eval": {"limit": "null"},
        },
        PRESETS,
    )
    assert (settings.dpo.beta, settings.dpo.reference_free, settings.dpo.n_epochs) == (0.2, True, 2)
    assert settings.eval.limit is None
    assert config_errors({"dpo": {"n_epochs": "2.5"}}, PRESETS)[0].startswith("dpo.n_epochs: ")


def refused(workdir, changes: dict, *targets: str) -> str:
    """Snakemake's output for `targets` after adding `changes` to config.yaml; asserts it stopped
    before any job ran."""
    config_file = workdir.path / "config" / "config.yaml"
    config_file.write_text(yaml.safe_dump(merge(yaml.safe_load(config_file.read_text()), changes)))
    result = workdir.snakemake(*targets, check=False)
    assert result.returncode != 0
    assert not (workdir.path / "results").exists()
    return result.stdout + result.stderr


def test_snakemake_refuses_a_wrong_key_before_any_job(workdir):
    output = refused(
        workdir, {"data": {"synthetic": {"sede": 1}}}, "results/ambersafe/data/manifest.json"
    )
    assert "data.synthetic.sede: unknown key" in output


def test_snakemake_refuses_a_wrong_type_before_any_job(workdir):
    output = refused(
        workdir,
        {"data": {"synthetic": {"train_rows": "3000 rows"}}},
        "results/ambersafe/data/manifest.json",
    )
    assert "data.synthetic.train_rows: Input should be a valid integer" in output


def test_snakemake_refuses_several_nodes_for_a_rule_that_runs_on_one(workdir):
    output = refused(
        workdir, {"resources": {"evaluate": {"nodes": 2}}}, "results/ambersafe/eval.json"
    )
    assert (
        "resources.evaluate.nodes: 2, but only dpo, ref_logps, sft run on several nodes" in output
    )


# --- shell metacharacters -------------------------------------------------------------------------


def string_settings(model: type[BaseModel] = Config, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """The key path of every setting that holds a string (or a list of strings), found from the
    types."""
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += string_settings(annotation, (*prefix, name))
            continue
        args = (
            typing.get_args(annotation) if typing.get_origin(annotation) is list else (annotation,)
        )
        text = [
            a
            for a in args
            if a is str or typing.get_origin(a) in (typing.Literal, typing.Annotated)
        ]
        if text:
            paths.append(((*prefix, name), typing.get_origin(annotation) is list))
    return paths


def test_the_string_settings_are_found():
    found = {".".join(path) for path, _ in string_settings()}
    assert {
        "data.hub.dataset",
        "data.hub.revision",
        "data.hub.splits.train",
        "base_model.hub.name",
        "base_model.hub.revision",
        "eval.datasets_cache",
        "eval.harness_tasks",
        "container.image",
        "dpo.loss",
        "preset",
    } <= found


@pytest.mark.parametrize(
    "path, is_list", string_settings(), ids=lambda p: ".".join(p) if isinstance(p, tuple) else ""
)
def test_a_setting_full_of_shell_metacharacters_runs_nothing(workdir, path, is_list):
    """Each string setting, set to a value that would run commands if pasted into a shell unquoted:
    Snakemake stops with a config error naming that key, and nothing ran."""
    marker = workdir.path / "pwned"
    value = (
        f"x$(touch {marker})`touch {marker}`;touch {marker}|touch {marker}&&touch {marker} '\"\n"
    )
    changes: dict = {}
    node = changes
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = [value] if is_list else value
    output = refused(workdir, changes, "results/ambersafe/eval.json")
    dotted = ".".join(path)
    assert f"{dotted}: " in output or f"{dotted}.0: " in output, output
    assert not marker.exists()
