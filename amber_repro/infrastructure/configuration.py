"""From the typed settings (amber_repro.infrastructure.settings) to everything else: the resolved
workflow config, readable errors, a stage's flags and `--help`, the flags a rule passes, the schema
and the docs.

`python -m amber_repro settings --show config/config.yaml [overlay.yaml ...]` prints what a run will
use.
"""

from __future__ import annotations

import argparse
import json
import shlex
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from amber_repro.infrastructure.errors import ConfigError
from amber_repro.infrastructure.jobs import MULTI_NODE
from amber_repro.infrastructure.settings import CONFLICT, Config

# Snakemake hands `--config key={nested: value}` over with every scalar as a string; these mean
# null.
NULL_STRINGS = {"null", "Null", "NULL", "~", "None"}
# Where a stage's parser keeps the settings sections it declared.
SPECS_KEY = "_settings_sections"


# --- the workflow's config ----------------------------------------------------------------------


def merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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


# --- a stage's flags: generated from the same fields ---------------------------------------------


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _flag_fields(
    model: type[BaseModel], only: Iterable[str] | None
) -> Iterator[tuple[str, FieldInfo]]:
    """The fields that are a stage's flags: scalars (nested sections and lists are not)."""
    wanted = set(only) if only is not None else None
    for name, field in model.model_fields.items():
        if wanted is not None and name not in wanted:
            continue
        if _is_model(field.annotation) or typing.get_origin(field.annotation) is list:
            continue
        yield name, field


def _scalar_type(annotation):
    """(python type, choices) of a flag: Literal -> choices, `int | None` -> int."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str, list(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _scalar_type(inner)
    if origin is typing.Annotated:
        return _scalar_type(typing.get_args(annotation)[0])
    return annotation, None


def _spec(spec) -> tuple[type[BaseModel], tuple[str, ...] | None]:
    """A stage's settings are sections: a model, or (model, keys) for some of its keys only."""
    return spec if isinstance(spec, tuple) else (spec, None)


def add_settings_arguments(parser: argparse.ArgumentParser, *specs) -> None:
    """One flag per setting (`max_grad_norm` -> --max-grad-norm), its default and help from the
    field.

    The parser remembers the sections, so `python -m amber_repro` checks the values
    (check_settings).
    """
    parser.set_defaults(**{SPECS_KEY: (*(parser.get_default(SPECS_KEY) or ()), *specs)})
    for model, only in map(_spec, specs):
        group = parser.add_argument_group(f"settings ({model.__name__})")
        for name, field in _flag_fields(model, only):
            flag = "--" + name.replace("_", "-")
            default = field.get_default(call_default_factory=True)
            help_text = f"{field.description} (default: %(default)s)"
            python_type, choices = _scalar_type(field.annotation)
            if python_type is bool:
                action = argparse.BooleanOptionalAction
                group.add_argument(flag, action=action, default=default, help=help_text)
            else:
                group.add_argument(
                    flag, type=python_type, choices=choices, default=default, help=help_text
                )


def check_settings(args: argparse.Namespace) -> None:
    """Check the flags of the sections the stage's parser declared; removes the declaration."""
    settings_from_args(args, *vars(args).pop(SPECS_KEY, ()))


def settings_from_args(args: argparse.Namespace, *specs) -> list[BaseModel]:
    """The flags checked against their settings' constraints: ConfigError names each bad flag."""
    checked, problems = [], []
    for model, only in map(_spec, specs):
        values = {name: getattr(args, name) for name, _ in _flag_fields(model, only)}
        try:
            checked.append(model.model_validate(values))
        except ValidationError as error:
            problems += [
                f"--{str(p['loc'][0]).replace('_', '-')}: {p['msg']} (got {p['input']!r})"
                for p in error.errors()
            ]
    if problems:
        raise ConfigError("\n".join(problems))
    return checked


def settings_flags(settings: BaseModel, only: Iterable[str] | None = None) -> str:
    """A section's values as the stage's flags, each value shell-quoted: --beta 0.1
    --no-reference-free."""
    flags = []
    for name, _ in _flag_fields(type(settings), only):
        value, flag = getattr(settings, name), "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            flags.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(flags)


# --- schema and documentation ---------------------------------------------------------------------


def json_schema() -> str:
    """config/schema.json: the JSON schema of a config file, for editors and other tools."""
    schema = Config.model_json_schema()
    schema["$comment"] = (
        "Generated from amber_repro/infrastructure/settings.py by "
        "`python -m amber_repro settings --schema`."
    )
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def settings_table(settings: BaseModel | None = None, prefix: str = "") -> list[str]:
    """Markdown rows: every key, its default (the recipe's value) and what it means."""
    settings = Config() if settings is None else settings
    rows = []
    for name, field in type(settings).model_fields.items():
        key, value = f"{prefix}{name}", getattr(settings, name)
        if isinstance(value, BaseModel):
            rows.append(f"| **`{key}`** | | {field.description} |")
            rows += settings_table(value, f"{key}.")
        else:
            rows.append(f"| `{key}` | `{json.dumps(value)}` | {field.description} |")
    return rows


def settings_markdown() -> str:
    header = [
        "# Settings",
        "",
        "Every key of a config file, its default and what it means. The defaults are the published",
        (
            "AmberSafe recipe (docs/recipe.md); `preset: embedded` applies "
            "config/presets/embedded.yaml on"
        ),
        (
            "top, then config/config.yaml and any overlays apply. Generated from "
            "amber_repro/infrastructure/settings.py"
        ),
        "by `python -m amber_repro settings --markdown`; a test keeps it current.",
        "",
        "Some keys must agree, and are checked together before any job starts:",
        "`tokenization.max_prompt_length` below `tokenization.max_length`; `sft.batch_size`,",
        "`dpo.batch_size` and `amberchat.train.batch_size` divisible by their",
        "`gradient_accumulation_steps` x processes (`resources.<stage>.gpus` x `nodes`, 0 GPUs =",
        f"1 process); `nodes` > 1 only for {', '.join(MULTI_NODE)}; their `cpus` at least one per",
        "process; `sft.eval_every` and `dpo.eval_every` (training examples) at least their",
        "`batch_size`. Which rules have a `resources` entry, and what kind of job each rule is:",
        "amber_repro/infrastructure/jobs.py.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    return "\n".join(header + settings_table()) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--show", type=Path, nargs="+", metavar="CONFIG", help="config files, in order"
    )
    what.add_argument("--schema", action="store_true", help="print config/schema.json")
    what.add_argument("--markdown", action="store_true", help="print docs/settings.md")
    parser.add_argument(
        "--presets", type=Path, default=Path("config/presets"), help="presets folder"
    )


def main(args: argparse.Namespace) -> None:
    if args.schema:
        print(json_schema(), end="")
    elif args.markdown:
        print(settings_markdown(), end="")
    else:
        config: dict = {}
        for path in args.show:
            if not path.is_file():
                raise ConfigError(f"{path}: no such config file")
            config = merge(config, yaml.safe_load(path.read_text()) or {})
        print(
            yaml.safe_dump(resolve(config, args.presets).model_dump(mode="json"), sort_keys=False),
            end="",
        )
