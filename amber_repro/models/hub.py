"""Base and judge models fetched from the Hugging Face hub at a pinned revision."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.eval_sections import SafetyJudge
from amber_repro.config.sections import HubModel
from amber_repro.provenance.run_context import command_line, run_context, software_versions
from amber_repro.storage import write_json


def download_model(name: str, revision: str, out_dir: Path) -> Path:
    """Snapshot the model repository (safetensors weights only) into `out_dir`."""
    from huggingface_hub import HfApi, snapshot_download

    commit = HfApi().model_info(name, revision=revision).sha
    snapshot_download(
        repo_id=name,
        revision=commit,
        local_dir=out_dir,
        allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.md"],
    )
    write_json(
        out_dir / "amber_repro_source.json",
        {
            "kind": "hub",
            "model": name,
            "revision": revision,
            "commit": commit,
            "software": software_versions(),
            "command": command_line(),
            "run": run_context(),
        },
    )
    return out_dir


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, HubModel)
    parser.add_argument("--out-dir", type=Path, required=True)


def main_model(args: argparse.Namespace, model: HubModel) -> None:
    download_model(model.name, model.revision, args.out_dir)
    print(f"downloaded {model.name}@{model.revision} to {args.out_dir}")


# Everything but the weights, which are converted (the tokenizer, configs, the model card).
JUDGE_FILES = ["*.json", "tokenizer*", "*.model", "*.txt", "*.md"]


def bin_to_safetensors(source: Path, out_dir: Path) -> list[str]:
    """Each `pytorch_model*.bin` shard of `source` as `model*.safetensors` in `out_dir`, with a
    matching index; returns the names written. Tensor data only: no pickled code is run."""
    import torch
    from safetensors.torch import save_file

    shards = sorted(source.glob("pytorch_model*.bin"))
    written, weight_map = [], {}
    for shard in shards:
        name = shard.name.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        state = torch.load(shard, map_location="cpu", weights_only=True)
        # safetensors refuses tensors sharing storage: give each its own contiguous copy.
        save_file(
            {k: v.contiguous().clone() for k, v in state.items()},
            str(out_dir / name),
            metadata={"format": "pt"},
        )
        weight_map.update(dict.fromkeys(state, name))
        written.append(name)
    (out_dir / "pytorch_model.bin.index.json").unlink(missing_ok=True)
    if len(shards) > 1:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return written


def download_judge(name: str, revision: str, out_dir: Path) -> dict:
    from huggingface_hub import HfApi, snapshot_download

    commit = HfApi().model_info(name, revision=revision).sha
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot_download(repo_id=name, revision=commit, local_dir=out_dir, allow_patterns=JUDGE_FILES)
    with tempfile.TemporaryDirectory(prefix="judge-weights-") as scratch:
        snapshot_download(
            repo_id=name,
            revision=commit,
            local_dir=scratch,
            allow_patterns=["*.safetensors", "pytorch_model*.bin"],
        )
        published = sorted(Path(scratch).glob("*.safetensors"))
        for path in published:  # a revision that has safetensors: used as published
            shutil.copy2(path, out_dir / path.name)
        converted = [] if published else bin_to_safetensors(Path(scratch), out_dir)
    source = {
        "kind": "hub",
        "model": name,
        "revision": revision,
        "commit": commit,
        "converted_from_pytorch_bin": converted,
        "software": software_versions(),
        "command": command_line(),
        "run": run_context(),
    }
    write_json(out_dir / "amber_repro_source.json", source)
    return source


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, (SafetyJudge, ("name", "revision")))
    parser.add_argument("--out-dir", type=Path, required=True)


def main_judge(args: argparse.Namespace, judge: SafetyJudge) -> None:
    source = download_judge(judge.name, judge.revision, args.out_dir)
    print(f"downloaded {judge.name}@{source['commit']} to {args.out_dir}")
