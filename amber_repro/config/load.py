"""A config as a run uses it: the recipe's defaults <- a preset <- the config files,
validated, with one readable line per problem."""

from __future__ import annotations

import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from amber_repro.config.checks import CONFLICT
from amber_repro.config.schema import Config
from amber_repro.config.types import _is_model, merge
from amber_repro.errors import ConfigError

# Snakemake hands `--config key={nested: value}` over with every scalar as a string; these mean
# null.
NULL_STRINGS = {"null", "Null", "NULL", "~", "None"}


def preset_values(name: str, presets_dir: Path) -> dict:
    """What a preset changes from the recipe ("recipe" itself changes nothing)."""
    if name == "recipe":
        return {}
    path = Path(presets_dir) / f"{name}.yaml"
    if not path.is_file():
        return {}  # an unknown name: validation names it with the allowed ones
    return yaml.safe_load(path.read_text()) or {}


def resolve(config: dict, presets_dir: Path) -> Config:
    """The recipe's defaults <- the preset named by config["preset"] <- config itself, validated.

    Raises ConfigError with one line per problem, each naming its key (`dpo.beta: ...`).
    """
    preset = config.get("preset", "recipe")
    values = merge(preset_values(preset, presets_dir) if isinstance(preset, str) else {}, config)
    try:
        return Config.model_validate(_nulls(values))
    except ValidationError as error:
        raise ConfigError("\n".join(error_lines(error))) from None


def config_errors(config: dict, presets_dir: Path) -> list[str]:
    """resolve()'s problems as lines; empty when the config is valid."""
    try:
        resolve(config, presets_dir)
    except ConfigError as error:
        return str(error).splitlines()
    return []


def error_lines(error: ValidationError) -> list[str]:
    """One sorted line per problem, starting with the dotted key it concerns."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            parent = _model_at(Config, problem["loc"][:-1])
            allowed = ", ".join(sorted(parent.model_fields)) if parent else "?"
            lines.append(f"{where}: unknown key (allowed here: {allowed})")
        elif problem["type"] == CONFLICT:  # Config's cross-checks: the message names the values
            lines.append(problem["msg"])
        else:
            lines.append(f"{where}: {problem['msg']} (got {problem['input']!r})")
    return sorted(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The settings class at `loc`; a mapping of names to a class (experiments) takes one part
    for the name."""
    parts = iter(loc)
    for part in parts:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if typing.get_origin(annotation) is dict and _is_model(typing.get_args(annotation)[1]):
            annotation = typing.get_args(annotation)[1]
            if next(parts, None) is None:
                return None
        if not _is_model(annotation):
            return None
        model = annotation
    return model


def _nulls(value):
    """Snakemake's `--config` strings for null become None; everything else is left to
    validation."""
    if isinstance(value, dict):
        return {key: _nulls(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nulls(item) for item in value]
    return None if isinstance(value, str) and value in NULL_STRINGS else value
