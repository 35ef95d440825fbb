"""The training loop of SFT, AmberChat and DPO, and the end every training stage shares.

The stages differ in their examples, their loss, their optimizer and schedule and their held-out
evaluation; they pass a `MicroStep` (one micro-batch: forward pass, loss, the values to log) and an
evaluation in. The loop itself is one piece of code, so a fix to it reaches all three: batches in
the seeded order (batch_order.py), micro-batches per process, gradient accumulation, the
finite-loss check, clipping and the optimizer step, metrics, held-out evaluations as the reference
runs them, and a checkpoint after each optimizer step. `start_run` begins a stage (model, optimizer,
checkpoints, resume), `finish` ends it (the final model folder).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from amber_repro.data.tokenization import collate
from amber_repro.models.export import write_model_dir
from amber_repro.storage import read_json
from amber_repro.training import distributed
from amber_repro.training.batch_order import evaluates_before, evaluation_steps, training_batches
from amber_repro.training.checkpointing import RunCheckpoints
from amber_repro.training.metrics import MetricsLog
from amber_repro.training.runtime import (
    PRECISIONS,
    Processes,
    autocast,
    load_model,
    peak_memory_bytes,
    processes,
    set_kernels,
)
from amber_repro.training.schedule import (
    micro_batch_size,
    micro_batches,
    optimizer_step,
    recipe_optimizer,
    total_steps,
)


class LoopSettings(Protocol):
    """What the loop reads of a stage's training section (SFTSettings, DPOSettings,
    ChatTrainSettings); held-out evaluation also reads eval_every and do_first_eval, the batch
    order `shuffle`."""

    batch_size: int
    gradient_accumulation_steps: int
    n_epochs: int
    seed: int
    max_grad_norm: float
    precision: str


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch's part of an optimizer step."""

    loss: torch.Tensor  # scalar, already divided by the accumulation steps: what backward takes
    logged: dict[str, float]  # its share of the step's logged values (summed over micro-batches)
    tokens: int  # non-padding tokens it ran


# Example indices of one micro-batch -> its MicroBatch (the forward pass and the loss).
MicroStep = Callable[[list[int]], MicroBatch]
# The model -> held-out metrics ("eval/...").
EvaluateFn = Callable[[torch.nn.Module], dict[str, float]]


@dataclass(frozen=True)
class LoopResult:
    steps: int  # optimizer steps done (including those before a resume)
    tokens: int  # non-padding tokens seen by this run, all processes
    seconds: float
    final_eval: dict[str, float] | None  # held-out metrics of the final weights


@dataclass(frozen=True)
class Run:
    """A started run (checkpointing.start_run): the model, its checkpoints (which hold the
    optimizer, the schedule and the processes), the metrics log, the step to start from."""

    stage: str
    model: torch.nn.Module
    checkpoints: RunCheckpoints
    metrics: MetricsLog
    start_step: int

    @property
    def procs(self) -> Processes:
        return self.checkpoints.training_state[3]


def prepare(settings: LoopSettings, repro) -> Processes:
    """A training stage's processes, with its GPU kernels set (reproducibility settings `repro`).
    A batch that does not split into equal micro-batches, or held-out evaluations closer together
    than an optimizer step, stop here, before anything loads."""
    set_kernels(repro.deterministic, repro.tf32)
    procs = processes()
    micro_batch_size(settings.batch_size, settings.gradient_accumulation_steps, procs.world_size)
    if hasattr(settings, "eval_every"):  # AmberChat's settings have no held-out evaluation
        evaluation_steps(settings.eval_every, settings.batch_size)
    return procs


def start_run(
    stage: str,
    settings,
    record: dict,
    paths: tuple[Path, Path],
    inputs: list[Path],
    procs: Processes,
    optimizer_and_schedule=None,
) -> Run:
    """Load and shard the model folder, build its optimizer and schedule, and resume from the
    state folder when it holds a usable checkpoint of these settings and `inputs` (the start of
    SFT, AmberChat and DPO).

    settings: the stage's training section (precision, gradient checkpointing, checkpoint cadence,
    and lr and warmup for the recipe's optimizer); record: the settings that fingerprint the run
    (config.cli.run_settings); paths: (model folder, state folder);
    optimizer_and_schedule(model) -> (optimizer, scheduler), default the recipe's
    (`schedule.recipe_optimizer`).
    """
    model_dir, state_dir = paths
    model = load_model(
        model_dir, PRECISIONS["float32"], procs.device, settings.gradient_checkpointing
    )
    model = distributed.shard(model, settings.precision)
    if optimizer_and_schedule is None:
        optimizer, scheduler = recipe_optimizer(model, settings)
    else:
        optimizer, scheduler = optimizer_and_schedule(model)
    checkpoints = RunCheckpoints(
        stage,
        record,
        inputs,
        state_dir,
        settings.checkpoint_every,
        model,
        optimizer,
        scheduler,
        procs,
    )
    start_step = checkpoints.resume()
    return Run(
        stage, model, checkpoints, MetricsLog(state_dir, start_step, procs.is_main), start_step
    )


def train(
    run: Run,
    settings: LoopSettings,
    n_examples: int,
    micro_step: MicroStep,
    max_steps: int | None = None,
    groups: list[list[int]] | None = None,
    evaluate: EvaluateFn | None = None,
) -> LoopResult:
    """Train until the last optimizer step, with batches in `settings.shuffle`'s order over
    `groups` (batch_order.training_batches; None: each example shuffled on its own). With
    `evaluate`, held-out metrics are logged as the reference logs them: before the first step
    (settings.do_first_eval), every settings.eval_every training examples, and ours after the last
    step."""
    total = total_steps(n_examples, settings.batch_size, settings.n_epochs, max_steps)
    shuffle = settings.shuffle if groups is not None else "examples"
    groups = groups if groups is not None else [[i] for i in range(n_examples)]
    every = evaluation_steps(settings.eval_every, settings.batch_size) if evaluate else 0
    if evaluate and run.start_step == 0 and settings.do_first_eval:
        run.metrics.log(0, evaluate(run.model))
    step, tokens, started, final_eval = run.start_step, 0, time.perf_counter(), None
    batches = training_batches(
        shuffle, groups, settings.batch_size, settings.seed, settings.n_epochs, run.start_step
    )
    # Closed however the loop ends (a NaN loss, a signal's checkpoint-and-exit), so the bar is
    # written where the stage's output goes then, not by the garbage collector at exit.
    with tqdm(
        total=total,
        initial=run.start_step,
        desc=run.stage,
        unit="step",
        mininterval=5,
        disable=not run.procs.is_main,
    ) as progress:
        for step, indices in batches:
            if step >= total:
                break
            logged, step_tokens = optimizer_step_of(run, settings, micro_step, indices, step)
            tokens += step_tokens
            if evaluate and (evaluates_before(step + 1, every, True) or step + 1 == total):
                held_out = evaluate(run.model)
                logged.update(held_out)
                final_eval = held_out if step + 1 == total else None
            run.metrics.log(step + 1, logged)
            progress.update(1)
            run.checkpoints.after_step(step + 1)
            step += 1
    run.metrics.close()
    seconds = time.perf_counter() - started
    if evaluate and final_eval is None:  # resumed at the last step, so the loop ran no step
        final_eval = evaluate(run.model)
    return LoopResult(step, distributed.sum_over_processes(tokens), seconds, final_eval)


def optimizer_step_of(
    run: Run, settings: LoopSettings, micro_step: MicroStep, indices: list[int], step: int
) -> tuple[dict[str, float], int]:
    """One optimizer step (0-based `step`) over the global batch `indices`: this process's
    micro-batches with gradients synchronised on the last, then clip and step. Returns the values
    to log and the tokens this process ran."""
    model, optimizer, scheduler, procs = run.checkpoints.training_state
    micro = micro_batch_size(
        settings.batch_size, settings.gradient_accumulation_steps, procs.world_size
    )
    model.train()
    sums: dict[str, float] = {}
    tokens = 0
    chunks = micro_batches(indices, micro, procs)
    for index, chunk in enumerate(chunks):
        distributed.gradient_sync(model, index == len(chunks) - 1)
        part = micro_step(chunk)
        run.checkpoints.check_finite(part.loss, step)
        part.loss.backward()
        for key, value in part.logged.items():
            sums[key] = sums.get(key, 0.0) + value
        tokens += part.tokens
    grad_norm = optimizer_step(model, optimizer, scheduler, settings.max_grad_norm)
    logged = {
        **distributed.mean_over_processes(sums),
        "grad_norm": grad_norm,
        "lr": scheduler.get_last_lr()[0],
        "examples": (step + 1) * settings.batch_size,
    }
    return logged, tokens


def supervised_step(
    model,
    examples: list[dict[str, list[int]]],
    pad_token_id: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: LoopSettings,
    device: torch.device,
) -> MicroStep:
    """SFT's and AmberChat's micro-step: pad the examples ({"input_ids", "labels"}), run the
    model, and take loss_fn(logits, labels) over the accumulation steps; logs "loss"."""

    def step(chunk: list[int]) -> MicroBatch:
        batch = {
            k: v.to(device) for k, v in collate([examples[i] for i in chunk], pad_token_id).items()
        }
        with autocast(settings.precision, device):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        loss = loss_fn(logits, batch["labels"]) / settings.gradient_accumulation_steps
        return MicroBatch(loss, {"loss": loss.item()}, int(batch["attention_mask"].sum()))

    return step


def finish(run: Run, tokenizer, out_dir: Path, state_dir: Path, describe) -> None:
    """The end of a training stage: gather the full weights (every process takes part), and on
    the main process write the final save_pretrained folder with the card and record that
    describe() -> (card, record) returns, the metrics and TensorBoard events; then remove the
    state folder, whose checkpoints are no longer needed."""
    weights = distributed.full_state_dict(run.model)
    if run.procs.is_main:
        card, record = describe()
        write_model_dir(
            run.model,
            tokenizer,
            out_dir,
            card,
            record,
            state_dict=weights,
            extra={"metrics.jsonl": run.metrics.path, "tensorboard": state_dir / "tensorboard"},
        )
        shutil.rmtree(state_dir)
    distributed.shutdown()


def speed(run: Run, done: LoopResult) -> dict:
    """How fast the run trained, for its record."""
    return {
        "processes": run.procs.world_size,
        "tokens": done.tokens,
        "seconds": done.seconds,
        "tokens_per_second": done.tokens / max(done.seconds, 1e-9),
        "peak_memory_bytes": peak_memory_bytes(run.procs.device),
    }


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
