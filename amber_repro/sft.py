"""Supervised finetuning on one target per prompt (sft-train.parquet), the reference's way.

Read top to bottom: tokenize, load (and shard, under torchrun), restore a checkpoint if this same
run was interrupted, then one loop over optimizer steps (gradient accumulation inside), logging,
checkpointing, and a final save_pretrained folder with a model card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import polars as pl
from tqdm import tqdm

from amber_repro import distributed
from amber_repro import training as T
from amber_repro.checkpointing import RunCheckpoints
from amber_repro.configuration import add_settings_arguments
from amber_repro.export import model_card, write_model_dir
from amber_repro.logprobs import sequence_logps, sft_loss
from amber_repro.pairs import ON_MALFORMED, SFT_TEXT, drop_or_refuse_eos
from amber_repro.provenance import read_json, sha256_file
from amber_repro.settings import SFTSettings
from amber_repro.tokenization import collate, tokenize_sft


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, help="sft-train.parquet (prompt, response)"
    )
    T.add_training_arguments(parser, SFTSettings)
    add_settings_arguments(parser, ON_MALFORMED)


def main(args: argparse.Namespace) -> None:
    T.set_determinism(args.deterministic)
    procs = T.processes()
    micro = T.micro_batch_size(args.batch_size, args.gradient_accumulation_steps, procs.world_size)
    tokenizer = T.load_tokenizer(args.model)
    frame, dropped = drop_or_refuse_eos(
        pl.read_parquet(args.data), tokenizer, args.data, SFT_TEXT, args.on_malformed
    )
    examples = [
        tokenize_sft(tokenizer, p, r, T.limits(args))
        for p, r in frame.select("prompt", "response").iter_rows()
    ]

    model = T.load_model(
        args.model, T.PRECISIONS["float32"], procs.device, args.gradient_checkpointing
    )
    model = distributed.shard(model, args.precision)
    optimizer = T.build_optimizer(model, args.lr)
    scheduler = T.build_scheduler(optimizer, args.warmup_steps)
    checkpoints = RunCheckpoints(
        "sft",
        T.training_settings(args),
        [args.model, args.data],
        args.state_dir,
        args.checkpoint_every,
        model,
        optimizer,
        scheduler,
        procs,
    )
    start_step = checkpoints.resume()
    metrics = T.MetricsLog(args.state_dir, start_step, enabled=procs.is_main)

    total = T.total_steps(len(examples), args)
    progress = tqdm(
        total=total,
        initial=start_step,
        desc="sft",
        unit="step",
        mininterval=5,
        disable=not procs.is_main,
    )
    step, tokens, started = start_step, 0, time.perf_counter()
    for step, indices in T.global_batches(
        len(examples), args.batch_size, args.seed, args.n_epochs, start_step
    ):
        if step >= total:
            break
        model.train()
        step_loss = 0.0
        chunks = T.micro_batches(indices, micro, procs)
        for index, chunk in enumerate(chunks):
            distributed.gradient_sync(model, index == len(chunks) - 1)
            batch = {
                k: v.to(procs.device)
                for k, v in collate([examples[i] for i in chunk], tokenizer.pad_token_id).items()
            }
            with T.autocast(args, procs.device):
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
            loss = (
                sft_loss(sequence_logps(logits, batch["labels"])) / args.gradient_accumulation_steps
            )
            checkpoints.check_finite(loss, step)
            loss.backward()
            step_loss += loss.item()
            tokens += int(batch["attention_mask"].sum())
        grad_norm = T.optimizer_step(model, optimizer, scheduler, args.max_grad_norm)
        logged = distributed.mean_over_processes({"loss": step_loss})
        metrics.log(
            step + 1,
            {
                **logged,
                "grad_norm": grad_norm,
                "lr": scheduler.get_last_lr()[0],
                "examples": (step + 1) * args.batch_size,
            },
        )
        progress.update(1)
        checkpoints.after_step(step + 1)
        step += 1
    progress.close()
    metrics.close()
    seconds = time.perf_counter() - started
    tokens = distributed.sum_over_processes(tokens)
    weights = distributed.full_state_dict(model)

    if procs.is_main:
        settings = T.training_settings(args)
        source = _source_of(args.model)
        data_sha256 = sha256_file(args.data)
        results = {
            "optimizer steps": step,
            "final loss": _last_loss(metrics.path),
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


def _source_of(model_dir: Path) -> str:
    """What a model folder was made from, for the card: its own record if amber-repro wrote it."""
    for name in ("amber_repro.json", "amber_repro_source.json"):
        if (model_dir / name).exists():
            record = read_json(model_dir / name)
            return record.get("model") or f"{model_dir} ({record.get('stage', 'base')})"
    return str(model_dir)


def _last_loss(path: Path) -> float | None:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["loss"] if lines else None
