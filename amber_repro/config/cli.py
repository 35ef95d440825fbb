"""Settings as a stage's flags, both ways: the rule's flags from a typed section, and
the stage's parser (flags, defaults, help) and checked sections from the same fields."""

from __future__ import annotations

import argparse
import shlex
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from amber_repro.config.types import _is_model
from amber_repro.errors import ConfigError


def add_training_arguments(parser: argparse.ArgumentParser, *specs) -> None:
    """A training stage's paths, a smoke-run limit and its settings `specs` (as for
    add_settings_arguments; defaults: the recipe's)."""
    parser.add_argument(
        "--model", type=Path, required=True, help="save_pretrained folder to start from"
    )
    parser.add_argument(
        "--out-dir", type=Path, required=True, help="the final save_pretrained folder"
    )
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="resumable checkpoints and live logs"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many optimizer steps (smoke runs)",
    )
    add_settings_arguments(parser, *specs)


# What a training run's settings leave out: where it reads and writes, and how often it saves.
NOT_RESULT_SETTINGS = frozenset({"model", "out_dir", "state_dir", "checkpoint_every", "stage"})


def run_settings(
    args: argparse.Namespace, specs: tuple, sections, excluded=NOT_RESULT_SETTINGS
) -> dict:
    """A stage's settings and options as its records hold them, sorted by name: the values of
    every flag the stage declared (`specs`, as given to add_settings_arguments, with the `sections`
    main received) and its other options and inputs (paths as text), less `excluded` (by default
    what does not decide a training run's result, as its checkpoint fingerprint needs)."""
    merged = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    for (model, only), section in zip(map(_spec, specs), sections, strict=True):
        merged.update({name: getattr(section, name) for name, _ in _flag_fields(model, only)})
    return {k: v for k, v in sorted(merged.items()) if k not in excluded}


# Where a stage's parser keeps the settings sections it declared.
SPECS_KEY = "_settings_sections"


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


def check_settings(args: argparse.Namespace) -> list[BaseModel]:
    """The typed sections the stage's parser declared, built from their flags and checked, in the
    order declared: what the stage's main receives after `args`. Their flags leave `args`, which
    keeps the stage's paths and other options."""
    specs = vars(args).pop(SPECS_KEY, ())
    sections = settings_from_args(args, *specs)
    for model, only in map(_spec, specs):
        for name, _ in _flag_fields(model, only):
            delattr(args, name)
    return sections


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
