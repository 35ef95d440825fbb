"""Final checkpoints: save_pretrained folders with a model card and a record of how they were
made."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from amber_repro.provenance.model_files import file_record
from amber_repro.provenance.run_context import (
    command_line,
    kernel_settings,
    run_context,
    software_versions,
)
from amber_repro.storage import atomic_path, tensor_bytes, write_json


def _hub_model_id(name: str) -> str | None:
    """`name` if it reads as a Hub model id and is not a folder here, else None: the Hub takes only
    model ids as a card's `base_model` metadata, not local paths or descriptions."""
    if Path(name).exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _one_line(value) -> str:
    return " ".join(str(value).splitlines())


def _code(value, in_table: bool = False) -> str:
    """`value` as a Markdown code span, whatever backticks it holds. In a table row its pipes are
    escaped (GFM reads `\\|` as a pipe even inside a code span, a bare one ends the cell)."""
    text = _one_line(value)
    if in_table:
        text = text.replace("|", "\\|")
    if not text:
        return ""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(value) -> str:
    """Plain text for a table cell: backslashes, pipes and HTML tags taken literally."""
    return _one_line(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def model_card(
    title: str, summary: str, base_model: str, data: dict, settings: dict, results: dict
) -> str:
    """A Hugging Face model card: YAML metadata, then what the model is and how it was made.

    `base_model` goes into the metadata only when it is a Hub model id; the body always names it.
    """
    metadata = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["amber-repro", "llama"],
        base_model=_hub_model_id(base_model),
    )
    lines = [
        f"# {title}",
        "",
        summary,
        "",
        "## Training data",
        "",
        f"- base_model: {_code(base_model)}",
    ]
    lines += [f"- {_one_line(key)}: {_code(value)}" for key, value in data.items()]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_code(v, in_table=True)} |" for k, v in settings.items()]
    if results:
        lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {_cell(k)} | {f'{v:.4g}' if isinstance(v, float) else _cell(v)} |"
            for k, v in results.items()
        ]
    lines += [
        "",
        "Made by amber-repro; `amber_repro.json` beside this card records the command, "
        "inputs and software.",
        "",
    ]
    card = ModelCard("---\n" + metadata.to_yaml() + "\n---\n\n" + "\n".join(lines))
    return str(card)


def write_model_dir(
    model,
    tokenizer,
    out_dir: Path,
    card: str,
    record: dict,
    extra: dict[str, Path] | None = None,
    state_dict: dict | None = None,
) -> None:
    """Write the folder beside its final place, then rename it in: a reader never sees half of it.

    `state_dict`: the full weights when the model itself is sharded (gathered by the caller).
    amber_repro.json records the size and sha256 of every file a load reads (`files`; the weights'
    hashes again as `weights_sha256`): loading checks them (provenance/model_files.py).
    """
    tensors = state_dict if state_dict is not None else model.state_dict()
    with atomic_path(out_dir, needed_bytes=tensor_bytes(tensors)) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for name, source in (extra or {}).items():
            target = tmp / name
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        files = file_record(tmp)
        weights = {n: f["sha256"] for n, f in files.items() if n.endswith(".safetensors")}
        write_json(
            tmp / "amber_repro.json",
            {
                **record,
                "weights_sha256": weights,
                "files": files,
                "software": software_versions(),
                "kernels": kernel_settings(),
                "run": run_context(),
                "command": command_line(),
            },
        )
