"""A config as a run uses it: the recipe's defaults <- a preset <- the config files,
validated, with one readable line per problem."""

from __future__ import annotations

import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from amber_repro.config.checks import CONFLICT
from amber_repro.config.schema import Config
from amber_repro.config.types import _is_model, merge, unknown_key
from amber_repro.errors import ConfigError

# Snakemake hands `--config key={nested: value}` over with every scalar as a string; these mean
# null.
NULL_STRINGS = {"null", "Null", "NULL", "~", "None"}


def read_yaml(path: Path | str) -> dict:
    """A YAML config file's keys ({} when empty). Raises ConfigError with one line naming the file
    and, for a syntax error, the line and column."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}{_yaml_problem(error)}") from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(
            f"{path}: a config file holds keys at the top level, not a {type(values).__name__}"
        )
    return values or {}


def _yaml_problem(error: Exception) -> str:
    """`, line L, column C: not valid YAML: <problem>`, where the parser found it."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f": not valid YAML: {error}"
    problem, start = f"{error.problem}", error.context_mark
    if error.context and start and start.line != mark.line:  # what it read, and where it began
        problem += f" ({error.context} at line {start.line + 1}, column {start.column + 1})"
    elif error.context:
        problem += f" ({error.context})"
    return f", line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"


def preset_values(name: str, presets_dir: Path) -> dict:
    """What a preset changes from the recipe ("recipe" itself changes nothing)."""
    if name == "recipe":
        return {}
    path = Path(presets_dir) / f"{name}.yaml"
    if not path.is_file():
        return {}  # an unknown name: validation names it with the allowed ones
    return read_yaml(path)


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
    """One sorted line per problem, starting with the dotted key it concerns; an unknown key gets
    the nearest allowed one ("did you mean ...?")."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            parent = _model_at(Config, problem["loc"][:-1])
            allowed = parent.model_fields if parent else ("?",)
            lines.append(unknown_key(where, allowed))
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
