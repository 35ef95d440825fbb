"""Greedy generations of several models for held-out prompts, as Markdown for people to read."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.cli import add_settings_arguments
from amber_repro.config.eval_sections import GenerationSettings
from amber_repro.config.sections import Reproducibility
from amber_repro.provenance.run_context import write_job_record
from amber_repro.storage import atomic_write_text
from amber_repro.training.runtime import load_model, load_tokenizer, processes, set_kernels

TEMPLATE = "none (the raw prompt, as SFT and DPO were trained)"


@torch.no_grad()
def generate(model_path: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of each raw prompt (no template, no BOS: as the model was trained)."""
    procs = processes()
    model = load_model(model_path, torch.float32, procs.device).eval()
    tokenizer = load_tokenizer(model_path)
    outputs = []
    for prompt in prompts:
        ids = torch.tensor(
            [tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=procs.device
        )
        generated = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        outputs.append(
            tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip()
        )
    return outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME=PATH", help="repeatable"
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        required=True,
        help="held-out pairs; the first unique prompts are used",
    )
    add_settings_arguments(parser, GenerationSettings, Reproducibility)
    parser.add_argument("--out", type=Path, required=True, help="a Markdown file")
    parser.add_argument("--record", type=Path, help="where to write the job's record (JSON)")


def main(args: argparse.Namespace, generation: GenerationSettings, repro: Reproducibility) -> None:
    set_kernels(repro.deterministic, repro.tf32)
    prompts = (
        pl.read_parquet(args.pairs)["prompt"]
        .unique(maintain_order=True)
        .head(generation.prompts)
        .to_list()
    )
    models = dict(item.split("=", 1) for item in args.model)
    answers = {
        name: generate(Path(path), prompts, generation.max_new_tokens)
        for name, path in models.items()
    }
    lines = [
        "# Greedy generations for held-out prompts",
        "",
        (
            f"Models: {', '.join(f'{n} (`{p}`)' for n, p in models.items())}; "
            f"at most {generation.max_new_tokens} new tokens."
        ),
        "",
        # SFT and DPO were trained on the raw prompt (the DPO reference's tokenization), so they
        # are prompted the same way, whatever their model cards suggest (docs/amberchat.md).
        f"Template: {TEMPLATE}.",
        "",
    ]
    for index, prompt in enumerate(prompts):
        lines += [f"## Prompt {index + 1}", "", f"> {prompt}", ""]
        lines += [f"**{name}:** {answers[name][index] or '(empty)'}" + "\n" for name in models]
    atomic_write_text(args.out, "\n".join(lines))
    if args.record:
        write_job_record(args.record, settings=generation.model_dump(mode="json"))
    print(f"wrote {len(prompts)} prompts x {len(models)} models to {args.out}")
