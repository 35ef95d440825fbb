"""Supervised finetuning on one target per prompt (sft-train.parquet), the reference's way.

Read top to bottom: tokenize, load (and shard, under torchrun), restore a checkpoint if this same
run was interrupted, then one loop over optimizer steps (gradient accumulation inside), logging,
checkpointing, and a final save_pretrained folder with a model card.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl

from amber_repro.data.tokenization import tokenize_sft
from amber_repro.infrastructure.configuration import add_settings_arguments
from amber_repro.infrastructure.provenance import sha256_file
from amber_repro.infrastructure.settings import SFTSettings
from amber_repro.training import distributed, supervised_loop
from amber_repro.training import training as T
from amber_repro.training.checkpointing import start_run
from amber_repro.training.export import model_card, write_model_dir
from amber_repro.training.logprobs import sequence_logps, sft_loss
from amber_repro.training.pairs import ON_MALFORMED, SFT_TEXT, drop_or_refuse_eos


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help="sft-train.parquet (prompt, response)"
    )
    T.add_training_arguments(parser, SFTSettings)
    add_settings_arguments(parser, ON_MALFORMED)


def main(args: argparse.Namespace) -> None:
    T.set_determinism(args.deterministic)
    procs = T.processes()
    # A batch that does not split into equal micro-batches stops here, before anything loads.
    T.micro_batch_size(args.batch_size, args.gradient_accumulation_steps, procs.world_size)
    tokenizer = T.load_tokenizer(args.model)
    frame, dropped = drop_or_refuse_eos(
        pl.read_parquet(args.data), tokenizer, args.data, SFT_TEXT, args.on_malformed
    )
    examples = [
        tokenize_sft(tokenizer, p, r, T.limits(args))
        for p, r in frame.select("prompt", "response").iter_rows()
    ]

    model, checkpoints, metrics, start_step = start_run(args, "sft", [args.model, args.data], procs)
    done = supervised_loop.train(
        args,
        "sft",
        model,
        examples,
        tokenizer.pad_token_id,
        lambda logits, labels: sft_loss(sequence_logps(logits, labels)),
        checkpoints,
        metrics,
        start_step,
    )
    step, tokens, seconds = done.steps, done.tokens, done.seconds
    weights = distributed.full_state_dict(model)

    if procs.is_main:
        settings = T.training_settings(args)
        source = supervised_loop.source_of(args.model)
        data_sha256 = sha256_file(args.data)
        results = {
            "optimizer steps": step,
            "final loss": supervised_loop.last_loss(metrics.path),
            "processes": procs.world_size,
            "train tokens/s": tokens / max(seconds, 1e-9),
        }
        card = model_card(
            "AmberSafe SFT (amber-repro)",
            "Supervised finetuning on the safe (chosen) response of the last kept PKU-SafeRLHF "
            "row of each prompt, with the DPO reference implementation's tokenization (no BOS, "
            "EOS appended, prompt masked) and loss (negative summed response log-likelihood).",
            base_model=source,
            data={"sft data": args.data, "sha256": data_sha256},
            settings=settings,
            results=results,
        )
        record = {
            "stage": "sft",
            "settings": settings,
            "base_model": source,
            "inputs": {str(args.data): data_sha256},
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
