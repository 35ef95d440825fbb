"""The supervised training loop shared by SFT (AmberSafe) and instruction finetuning (AmberChat).

The two differ in their examples, their loss, their schedule and their held-out evaluation, which
the caller passes in; the loop itself (seeded global batches, micro-batches per process, gradient
accumulation, clipping, metrics, evaluations, checkpoints after each optimizer step) is one piece of
code, so a fix to it reaches both.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from amber_repro.data.tokenization import collate
from amber_repro.storage import read_json
from amber_repro.training import distributed
from amber_repro.training.batch_order import evaluates_before, evaluation_steps, training_batches
from amber_repro.training.checkpointing import RunCheckpoints
from amber_repro.training.metrics import MetricsLog
from amber_repro.training.runtime import autocast
from amber_repro.training.schedule import (
    micro_batch_size,
    micro_batches,
    optimizer_step,
    total_steps,
)

# (logits, labels) of one micro-batch -> its loss, before division by the accumulation steps.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# The model -> held-out metrics ("eval/..."), or None for a stage that does not evaluate.
EvaluateFn = Callable[[torch.nn.Module], dict[str, float]]


@dataclass(frozen=True)
class LoopResult:
    steps: int  # optimizer steps done (including those before a resume)
    tokens: int  # non-padding tokens seen by this run, all processes
    seconds: float
    final_eval: dict[str, float] | None  # held-out metrics of the final weights


def train(
    args: argparse.Namespace,
    stage: str,
    model,
    examples: list[dict[str, list[int]]],
    pad_token_id: int,
    loss_fn: LossFn,
    checkpoints: RunCheckpoints,
    metrics: MetricsLog,
    start_step: int,
    groups: list[list[int]] | None = None,
    evaluate: EvaluateFn | None = None,
) -> LoopResult:
    """Train `model` on `examples` ({"input_ids", "labels"}) until the last optimizer step.

    Batches follow args.shuffle over `groups` (batch_order.training_batches; None: each example
    shuffled on its own). With `evaluate`, held-out metrics are logged as the reference logs them:
    before the first step (args.do_first_eval), every args.eval_every training examples, and ours
    after the last step. The optimizer and scheduler are the ones `checkpoints` saves and restores.
    """
    _, optimizer, scheduler, procs = checkpoints.training_state
    micro = micro_batch_size(args.batch_size, args.gradient_accumulation_steps, procs.world_size)
    total = total_steps(len(examples), args)
    shuffle = getattr(args, "shuffle", "examples") if groups is not None else "examples"
    groups = groups if groups is not None else [[i] for i in range(len(examples))]
    every = evaluation_steps(args.eval_every, args.batch_size) if evaluate else 0
    if evaluate and start_step == 0 and args.do_first_eval:
        metrics.log(0, evaluate(model))
    progress = tqdm(
        total=total,
        initial=start_step,
        desc=stage,
        unit="step",
        mininterval=5,
        disable=not procs.is_main,
    )
    step, tokens, started, final_eval = start_step, 0, time.perf_counter(), None
    for step, indices in training_batches(
        shuffle, groups, args.batch_size, args.seed, args.n_epochs, start_step
    ):
        if step >= total:
            break
        model.train()
        step_loss = 0.0
        chunks = micro_batches(indices, micro, procs)
        for index, chunk in enumerate(chunks):
            distributed.gradient_sync(model, index == len(chunks) - 1)
            batch = {
                k: v.to(procs.device)
                for k, v in collate([examples[i] for i in chunk], pad_token_id).items()
            }
            with autocast(args, procs.device):
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
            loss = loss_fn(logits, batch["labels"]) / args.gradient_accumulation_steps
            checkpoints.check_finite(loss, step)
            loss.backward()
            step_loss += loss.item()
            tokens += int(batch["attention_mask"].sum())
        grad_norm = optimizer_step(model, optimizer, scheduler, args.max_grad_norm)
        logged = {
            **distributed.mean_over_processes({"loss": step_loss}),
            "grad_norm": grad_norm,
            "lr": scheduler.get_last_lr()[0],
            "examples": (step + 1) * args.batch_size,
        }
        if evaluate and (evaluates_before(step + 1, every, True) or step + 1 == total):
            held_out = evaluate(model)
            logged.update(held_out)
            final_eval = held_out if step + 1 == total else None
        metrics.log(step + 1, logged)
        progress.update(1)
        checkpoints.after_step(step + 1)
        step += 1
    progress.close()
    metrics.close()
    seconds = time.perf_counter() - started
    if evaluate and final_eval is None:  # resumed at the last step, so the loop ran no step
        final_eval = evaluate(model)
    return LoopResult(step, distributed.sum_over_processes(tokens), seconds, final_eval)


def source_of(model_dir: Path) -> str:
    """What a model folder was made from, for the card: its own record if amber-repro wrote it."""
    for name in ("amber_repro.json", "amber_repro_source.json"):
        if (model_dir / name).exists():
            record = read_json(model_dir / name)
            return record.get("model") or f"{model_dir} ({record.get('stage', 'base')})"
    return str(model_dir)


def last_loss(path: Path) -> float | None:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["loss"] if lines else None
