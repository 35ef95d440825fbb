"""Supervised finetuning on one target per prompt (sft-train.parquet), the reference's way.

Read top to bottom: tokenize the training and held-out targets and draw the held-out sample, load
(and shard, under torchrun), restore a checkpoint if this same run was interrupted, then the loop
shared with AmberChat (loop.py: the reference's batch order, gradient accumulation,
held-out evaluations, logging, checkpointing), and a final save_pretrained folder with a model card.
"""

from __future__ import annotations

import argparse
import functools
import shutil
from pathlib import Path

import polars as pl
import torch

from amber_repro.config.cli import (
    add_settings_arguments,
    add_training_arguments,
    limits,
    training_settings,
)
from amber_repro.config.sections import SFTSettings
from amber_repro.data.tokenization import collate, tokenize_sft
from amber_repro.models.export import model_card, write_model_dir
from amber_repro.provenance.hashing import sha256_file
from amber_repro.training import distributed, loop
from amber_repro.training.batch_order import evaluation_sample, evaluation_steps, prompt_groups
from amber_repro.training.checkpointing import start_run
from amber_repro.training.logprobs import sequence_logps, sft_loss
from amber_repro.training.pairs import ON_MALFORMED, SFT_TEXT, drop_or_refuse_eos
from amber_repro.training.runtime import autocast, load_tokenizer, processes, set_kernels
from amber_repro.training.schedule import micro_batch_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help="sft-train.parquet (prompt, response)"
    )
    parser.add_argument(
        "--eval-data",
        type=Path,
        help="sft-test.parquet (held out; the workflow passes it); without: no held-out evaluation",
    )
    add_training_arguments(parser, SFTSettings)
    add_settings_arguments(parser, ON_MALFORMED)


def read_examples(path: Path, tokenizer, args) -> tuple[list[dict], list[list[int]], int]:
    """Tokenized targets of one file, grouped by prompt for the batch order, and how many rows
    were dropped for holding the EOS token (data.on_malformed: drop)."""
    frame, dropped = drop_or_refuse_eos(
        pl.read_parquet(path), tokenizer, path, SFT_TEXT, args.on_malformed
    )
    examples = [
        tokenize_sft(tokenizer, p, r, limits(args))
        for p, r in frame.select("prompt", "response").iter_rows()
    ]
    return examples, prompt_groups(frame["prompt"].to_list()), dropped


@torch.no_grad()
def evaluate(model, examples: list[dict], sample: list[int], pad_id: int, args, device) -> dict:
    """The reference's SFT evaluation: the loss (negative summed response log-prob, averaged over
    examples) of the held-out sample, in batches of --eval-batch-size."""
    model.eval()
    logps = []
    for start in range(0, len(sample), args.eval_batch_size):
        chunk = [examples[i] for i in sample[start : start + args.eval_batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        with autocast(args, device):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        logps.append(sequence_logps(logits, batch["labels"]).float().cpu())
    logps = torch.cat(logps)
    return {"eval/loss": sft_loss(logps).item(), "eval/logps": logps.mean().item()}


def held_out_evaluation(args, tokenizer, device):
    """model -> held-out metrics on --eval-data's sample (batch_order.evaluation_sample); None
    without --eval-data."""
    if args.eval_data is None:
        return None
    held_out, groups, _ = read_examples(args.eval_data, tokenizer, args)
    sample = evaluation_sample(groups, args.eval_examples, args.eval_batch_size, args.seed)
    return functools.partial(
        evaluate,
        examples=held_out,
        sample=sample,
        pad_id=tokenizer.pad_token_id,
        args=args,
        device=device,
    )


def main(args: argparse.Namespace) -> None:
    set_kernels(args.deterministic, args.tf32)
    procs = processes()
    # A batch that does not split into equal micro-batches, or evaluations closer together than a
    # step, stop here, before anything loads.
    micro_batch_size(args.batch_size, args.gradient_accumulation_steps, procs.world_size)
    evaluation_steps(args.eval_every, args.batch_size)
    tokenizer = load_tokenizer(args.model)
    examples, groups, dropped = read_examples(args.data, tokenizer, args)
    evaluate_held_out = held_out_evaluation(args, tokenizer, procs.device)
    inputs = [args.model, args.data, *([args.eval_data] if args.eval_data else [])]

    model, checkpoints, metrics, start_step = start_run(args, "sft", inputs, procs)
    done = loop.train(
        args,
        "sft",
        model,
        examples,
        tokenizer.pad_token_id,
        lambda logits, labels: sft_loss(sequence_logps(logits, labels)),
        checkpoints,
        metrics,
        start_step,
        groups=groups,
        evaluate=evaluate_held_out,
    )
    step, tokens, seconds = done.steps, done.tokens, done.seconds
    weights = distributed.full_state_dict(model)

    if procs.is_main:
        settings = training_settings(args)
        source = loop.source_of(args.model)
        data_sha256 = sha256_file(args.data)
        held_out_files = [args.eval_data] if args.eval_data else []
        results = {
            "optimizer steps": step,
            "final loss": loop.last_loss(metrics.path),
            **(done.final_eval or {}),
            "processes": procs.world_size,
            "train tokens/s": tokens / max(seconds, 1e-9),
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
        write_model_dir(
            model,
            tokenizer,
            args.out_dir,
            card,
            record,
            state_dict=weights,
            extra={"metrics.jsonl": metrics.path, "tensorboard": args.state_dir / "tensorboard"},
        )
        shutil.rmtree(args.state_dir)  # finished: the checkpoints are no longer needed
        print(
            f"sft: {step} optimizer steps in {seconds:.1f} s on {procs.world_size} process(es); "
            f"saved {args.out_dir}"
        )
    distributed.shutdown()
