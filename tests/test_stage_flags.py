"""Each setting is defined once (amber_repro/config/sections.py): a stage's flags, their defaults
and --help, the flags a rule passes, the schema and the docs all follow from that definition.

The values the shipped configs resolve to are in test_recipe.py."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from conftest import REPO
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from processes import run_in_process
from pydantic import BaseModel

from amber_repro.__main__ import STAGES, build_parser, main
from amber_repro.config.cli import SPECS_KEY, _spec, settings_flags, settings_from_args
from amber_repro.config.schema import Config
from amber_repro.config.sections import DPOSettings, HubModel, Tokenization
from amber_repro.config.settings import json_schema, settings_markdown

# --- the schema and the docs: generated, current, one line a setting ------------------------------


def test_the_schema_and_the_settings_docs_are_generated_from_the_definitions():
    assert (REPO / "config" / "schema.json").read_text() == json_schema(), (
        "config/schema.json is stale: python -m amber_repro settings --schema > config/schema.json"
    )
    assert (REPO / "docs" / "settings.md").read_text() == settings_markdown(), (
        "docs/settings.md is stale: python -m amber_repro settings --markdown > docs/settings.md"
    )


def all_sections(model=Config):
    """Every section model, nested ones included."""
    yield model
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from all_sections(field.annotation)


def test_every_setting_says_what_it_is_in_one_line():
    for section in all_sections():
        for name, field in section.model_fields.items():
            assert field.description and "\n" not in field.description, f"{section.__name__}.{name}"


# --- a stage's parser: defaults and --help --------------------------------------------------------


def stage_parser(stage: str):
    parser = build_parser(stage)
    return parser._subparsers._group_actions[0].choices[stage]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stages_flag_defaults_are_the_typed_defaults(stage):
    parser = stage_parser(stage)
    for model, only in map(_spec, parser.get_default(SPECS_KEY) or ()):
        defaults = model()
        for name in only or model.model_fields:
            if not isinstance(getattr(defaults, name), (BaseModel, list)):
                assert parser.get_default(name) == getattr(defaults, name), (stage, name)


def stage_help(stage: str) -> str:
    """`python -m amber_repro <stage> --help`, in this process (tests/processes.py)."""
    shown = run_in_process([stage, "--help"], env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_help_shows_the_recipes_values():
    text = stage_help("dpo")
    for expected in (
        "(default: 5e-07)",
        "(default: 0.1)",
        "(default: 32)",
        "(default: 4)",
        "(default: 150)",
    ):
        assert expected in text, expected
    assert "(default: 2e-07)" in stage_help("sft")


# --- the flags a rule passes: parsed back exactly, one shell word each, bad values named ----------


DPO_REQUIRED = [
    "dpo",
    "--model",
    "m",
    "--pairs",
    "p",
    "--ref-logps",
    "r",
    "--eval-pairs",
    "e",
    "--eval-ref-logps",
    "f",
    "--out-dir",
    "o",
    "--state-dir",
    "s",
]


@hypothesis_settings(max_examples=50, deadline=None)
@given(
    beta=st.floats(min_value=1e-9, max_value=1e3),
    lr=st.floats(min_value=1e-12, max_value=1.0),
    batch=st.integers(1, 4096),
    free=st.booleans(),
    loss=st.sampled_from(["sigmoid", "ipo"]),
    max_length=st.integers(2, 100_000),
)
def test_a_rules_flags_parse_back_to_the_same_settings(beta, lr, batch, free, loss, max_length):
    """settings_flags (what a rule passes) and the stage's parser (generated from the same fields)
    agree on every value, floats exactly."""
    dpo = DPOSettings(beta=beta, lr=lr, batch_size=batch, reference_free=free, loss=loss)
    tokens = Tokenization(max_length=max_length)
    argv = DPO_REQUIRED + shlex.split(settings_flags(dpo)) + shlex.split(settings_flags(tokens))
    args = stage_parser("dpo").parse_args(argv[1:])
    assert settings_from_args(args, DPOSettings, Tokenization) == [dpo, tokens]


@hypothesis_settings(max_examples=200, deadline=None)
@given(name=st.text(), revision=st.text())
def test_flags_are_quoted_whatever_the_value(name, revision):
    """Even a value that skipped validation is one shell word: shlex gives it back unchanged."""
    unchecked = HubModel.model_construct(name=name, revision=revision)
    assert shlex.split(settings_flags(unchecked)) == ["--name", name, "--revision", revision]


def test_a_quoted_value_does_not_run_in_a_real_shell(tmp_path):
    marker = tmp_path / "ran"
    value = f"$(touch {marker}); touch {marker} `touch {marker}` | touch {marker}"
    flags = settings_flags(HubModel.model_construct(name=value, revision="main"))
    printed = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {flags}"], capture_output=True, text=True, check=True
    ).stdout
    assert printed.splitlines() == ["--name", value, "--revision", "main"]
    assert not marker.exists()


def test_a_bad_flag_value_is_named_without_a_traceback(capsys):
    assert main([*DPO_REQUIRED, "--beta", "-1", "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--beta: Input should be greater than 0 (got -1.0)" in err
    assert "--batch-size: Input should be greater than or equal to 1 (got 0)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--beta", "--lr", "--max-grad-norm", "--label-smoothing"])
def test_a_flag_that_is_not_a_finite_number_is_named(capsys, flag):
    assert main([*DPO_REQUIRED, flag, "inf"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {flag}: Input should be a finite number (got inf)"
    ]
