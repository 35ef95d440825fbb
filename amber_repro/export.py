"""Final checkpoints: save_pretrained folders with a model card and a record of how they were made."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from amber_repro.provenance import command_line, sha256_file, software_versions, write_json


def model_card(title: str, summary: str, base_model: str, data: dict, settings: dict, results: dict) -> str:
    """A Hugging Face model card: YAML metadata, then what the model is and how it was made."""
    front = {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": ["amber-repro", "llama"],
             "base_model": base_model}
    lines = ["---", yaml.safe_dump(front, sort_keys=True).strip(), "---", "", f"# {title}", "", summary, "",
             "## Training data", ""]
    lines += [f"- {key}: `{value}`" for key, value in data.items()]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in settings.items()]
    if results:
        lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in results.items()]
    lines += ["", "Made by amber-repro; `amber_repro.json` beside this card records the command, inputs and software.", ""]
    return "\n".join(lines)


def write_model_dir(model, tokenizer, out_dir: Path, card: str, record: dict, extra: dict[str, Path] | None = None,
                    state_dict: dict | None = None) -> None:
    """Write the folder beside its final place, then rename it in: a reader never sees half of it.

    `state_dict`: the full weights when the model itself is sharded (gathered by the caller).
    """
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    for name, source in (extra or {}).items():
        target = tmp / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    weights = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.safetensors"))}
    write_json(tmp / "amber_repro.json", {**record, "weights_sha256": weights, "software": software_versions(),
                                          "command": command_line()})
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
