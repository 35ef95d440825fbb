"""Readable config errors: every problem on one line, named by its key path (data.synthetic.seed)."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator


def config_errors(config: dict, schema_path: str | Path) -> list[str]:
    """One line per schema violation, sorted, each starting with the dotted key it concerns."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    lines = []
    for error in Draft202012Validator(schema).iter_errors(config):
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        if error.validator in ("additionalProperties", "unevaluatedProperties"):
            known = sorted(declared_keys(error.schema, schema))
            unknown = sorted(set(error.instance) - set(known))
            for key in unknown:
                key_path = f"{where}.{key}" if error.absolute_path else key
                lines.append(f"{key_path}: unknown key (allowed here: {', '.join(known)})")
        else:
            lines.append(f"{where}: {error.message}")
    return sorted(lines)


def declared_keys(node: dict, root: dict) -> set[str]:
    """Keys a schema object declares, including those it takes from `allOf` and local `$ref`s."""
    keys = set(node.get("properties", {}))
    if "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        keys |= declared_keys(target, root)
    for sub in node.get("allOf", []):
        keys |= declared_keys(sub, root)
    return keys


def cli_flags(*sections: dict) -> str:
    """Config sections as a stage's command-line flags: {"max_grad_norm": 10} -> --max-grad-norm 10."""
    flags = []
    for section in sections:
        for key, value in section.items():
            name = key.replace("_", "-")
            if isinstance(value, bool):
                flags.append(f"--{name}" if value else f"--no-{name}")
            else:
                flags.append(f"--{name} {shlex.quote(str(value))}")
    return " ".join(flags)
