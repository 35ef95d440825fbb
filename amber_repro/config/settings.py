"""The `settings` stage: `python -m amber_repro settings --show config/config.yaml
[overlay.yaml ...]` prints what a run will use; --schema and --markdown print
config/schema.json and docs/settings.md, generated from the typed settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from pydantic import BaseModel

from amber_repro.config.jobs import MULTI_NODE
from amber_repro.config.load import read_yaml, resolve
from amber_repro.config.schema import Config
from amber_repro.config.types import merge


def json_schema() -> str:
    """config/schema.json: the JSON schema of a config file, for editors and other tools."""
    schema = Config.model_json_schema()
    schema["$comment"] = (
        "Generated from amber_repro/config/sections.py by "
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
            "amber_repro/config/sections.py"
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
        "amber_repro/config/jobs.py.",
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
            config = merge(config, read_yaml(path))
        print(
            yaml.safe_dump(resolve(config, args.presets).model_dump(mode="json"), sort_keys=False),
            end="",
        )
