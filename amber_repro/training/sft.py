"""Supervised finetuning on one target per prompt (sft-train.parquet), the reference's way.

Read top to bottom: tokenize the training and held-out targets and draw the held-out sample, load
(and shard, under torchrun), restore a checkpoint if this same run was interrupted, then the loop
shared with AmberChat and DPO (loop.py: the reference's batch order, gradient accumulation,
held-out evaluations, logging, checkpointing), and a final save_pretrained folder with a model card.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.cli import add_training_arguments, run_settings
from amber_repro.config.sections import DataSettings, Reproducibility, SFTSettings, Tokenization
from amber_repro.data.tokenization import Limits, collate, tokenize_sft
from amber_repro.models.export import model_card
from amber_repro.provenance.hashing import sha256_file
from amber_repro.training import loop
from amber_repro.training.batch_order import evaluation_sample, prompt_groups
from amber_repro.training.logprobs import sequence_logps, sft_loss
from amber_repro.training.pairs import ON_MALFORMED, SFT_TEXT, drop_or_refuse_eos
from amber_repro.training.runtime import autocast, load_tokenizer

# The settings main receives, in this order.
SECTIONS = (SFTSettings, Tokenization, Reproducibility, ON_MALFORMED)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help="sft-train.parquet (prompt, response)"
    )
    parser.add_argument(
        "--eval-data",
        type=Path,
        help="sft-test.parquet (held out; the workflow passes it); without: no held-out evaluation",
    )
    add_training_arguments(parser, *SECTIONS)


def read_examples(
    path: Path, tokenizer, tokens: Tokenization, on_malformed: str
) -> tuple[list[dict], list[list[int]], int]:
    """Tokenized targets of one file, grouped by prompt for the batch order, and how many rows
    were dropped for holding the EOS token (data.on_malformed: drop)."""
    frame, dropped = drop_or_refuse_eos(
        pl.read_parquet(path), tokenizer, path, SFT_TEXT, on_malformed
    )
    limits = Limits(tokens.max_length, tokens.max_prompt_length)
    examples = [
        tokenize_sft(tokenizer, p, r, limits)
        for p, r in frame.select("prompt", "response").iter_rows()
    ]
    return examples, prompt_groups(frame["prompt"].to_list()), dropped


@torch.no_grad()
def evaluate(model, examples: list[dict], sample: list[int], pad_id: int, sft: SFTSettings, device):
    """The reference's SFT evaluation: the loss (negative summed response log-prob, averaged over
    examples) of the held-out sample, in batches of sft.eval_batch_size."""
    model.eval()
    logps = []
    for start in range(0, len(sample), sft.eval_batch_size):
        chunk = [examples[i] for i in sample[start : start + sft.eval_batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        with autocast(sft.precision, device):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        logps.append(sequence_logps(logits, batch["labels"]).float().cpu())
    logps = torch.cat(logps)
    return {"eval/loss": sft_loss(logps).item(), "eval/logps": logps.mean().item()}


def held_out_evaluation(path: Path | None, tokenizer, sft, tokens, on_malformed, device):
    """model -> held-out metrics on the sample of `path` (batch_order.evaluation_sample); None
    without a held-out file."""
    if path is None:
        return None
    held_out, groups, _ = read_examples(path, tokenizer, tokens, on_malformed)
    sample = evaluation_sample(groups, sft.eval_examples, sft.eval_batch_size, sft.seed)
    return functools.partial(
        evaluate,
        examples=held_out,
        sample=sample,
        pad_id=tokenizer.pad_token_id,
        sft=sft,
        device=device,
    )


def main(
    args: argparse.Namespace,
    sft: SFTSettings,
    tokens: Tokenization,
    repro: Reproducibility,
    data: DataSettings,
) -> None:
    procs = loop.prepare(sft, repro)
    tokenizer = load_tokenizer(args.model)
    examples, groups, dropped = read_examples(args.data, tokenizer, tokens, data.on_malformed)
    evaluate_held_out = held_out_evaluation(
        args.eval_data, tokenizer, sft, tokens, data.on_malformed, procs.device
    )
    settings = run_settings(args, SECTIONS, (sft, tokens, repro, data))
    inputs = [args.model, args.data, *([args.eval_data] if args.eval_data else [])]
    run = loop.start_run("sft", sft, settings, (args.model, args.state_dir), inputs, procs)
    step = loop.supervised_step(
        run.model, examples, tokenizer.pad_token_id, sft_step_loss, sft, procs.device
    )
    done = loop.train(run, sft, len(examples), step, args.max_steps, groups, evaluate_held_out)
    describe = functools.partial(describe_model, args, settings, run, done, dropped)
    loop.finish(run, tokenizer, args.out_dir, args.state_dir, describe)
    if procs.is_main:
        print(
            f"sft: {done.steps} optimizer steps in {done.seconds:.1f} s on {procs.world_size} "
            f"process(es); saved {args.out_dir}"
        )


def sft_step_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference's SFT loss of a micro-batch: the negative summed response log-prob,
    averaged over its examples."""
    return sft_loss(sequence_logps(logits, labels))


def describe_model(args, settings: dict, run, done, dropped: int) -> tuple[str, dict]:
    """The SFT folder's model card and record."""
    source = loop.source_of(args.model)
    data_sha256 = sha256_file(args.data)
    held_out_files = [args.eval_data] if args.eval_data else []
    results = {
        "optimizer steps": done.steps,
        "final loss": loop.last_loss(run.metrics.path),
        **(done.final_eval or {}),
        "processes": run.procs.world_size,
        "train tokens/s": done.tokens / max(done.seconds, 1e-9),
    }
    card = model_card(
        "AmberSafe SFT (amber-repro)",
        "Supervised finetuning on the safe (chosen) response of the last kept PKU-SafeRLHF "
        "row of each prompt, with the DPO reference implementation's tokenization (no BOS, "
        "EOS appended, prompt masked) and loss (negative summed response log-likelihood).",
        base_model=source,
        data={"sft data": args.data, "sha256": data_sha256, "held out": args.eval_data},
        settings=settings,
        results=results,
    )
    record = {
        "stage": "sft",
        "settings": settings,
        "base_model": source,
        "inputs": {
            str(args.data): data_sha256,
            **{str(path): sha256_file(path) for path in held_out_files},
        },
        "results": results,
        "rows_dropped": {"text contains EOS": dropped},
    }
    return card, record
