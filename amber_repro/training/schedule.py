"""Batch arithmetic, the recipe's optimizer and schedule, and one optimizer step."""

from __future__ import annotations

import torch

from amber_repro.config.sections import Training
from amber_repro.errors import ConfigError
from amber_repro.training.batch_order import steps_per_epoch
from amber_repro.training.runtime import Processes


def micro_batch_size(
    batch_size: int, gradient_accumulation_steps: int, world_size: int, convention: str = "global"
) -> int:
    """Each process's micro-batch, checked before training starts.

    convention "global" (the DPO reference, used by AmberSafe's SFT and DPO): batch_size is the
    number of examples per optimizer step over all processes, so
    micro = batch / (accumulation x processes).
    convention "per_device" (the HF Trainer / FastChat, used by AmberChat): batch_size is per
    process and per micro-step, so the global batch is batch x accumulation x processes.
    """
    if convention == "per_device":
        return batch_size
    per_step = gradient_accumulation_steps * world_size
    if batch_size % per_step:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by gradient_accumulation_steps "
            f"{gradient_accumulation_steps} x processes {world_size}: no equal micro-batches"
        )
    return batch_size // per_step


def global_batch_size(
    batch_size: int, gradient_accumulation_steps: int, world_size: int, convention: str = "global"
) -> int:
    """Examples per optimizer step under either convention (see micro_batch_size)."""
    if convention == "per_device":
        return batch_size * gradient_accumulation_steps * world_size
    return batch_size


def total_steps(n_examples: int, batch_size: int, n_epochs: int, max_steps: int | None) -> int:
    """Optimizer steps of the whole run: full batches x epochs, capped by max_steps."""
    total = steps_per_epoch(n_examples, batch_size) * n_epochs
    return total if max_steps is None else min(total, max_steps)


def micro_batches(indices: list[int], micro_batch: int, procs: Processes) -> list[list[int]]:
    """This process's micro-batches of one global batch (rank r takes every world_size-th slice)."""
    chunks = [indices[i : i + micro_batch] for i in range(0, len(indices), micro_batch)]
    return chunks[procs.rank :: procs.world_size]


def build_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(model.parameters(), lr=lr)  # the reference's default optimizer


def recipe_optimizer(model: torch.nn.Module, settings: Training) -> tuple:
    """The recipe's optimizer and schedule (SFT and DPO): RMSprop at settings.lr, linear warmup
    over settings.warmup_steps."""
    optimizer = build_optimizer(model, settings.lr)
    return optimizer, build_scheduler(optimizer, settings.warmup_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over warmup_steps, then constant (the reference's schedule, step counted from
    0)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1))
    )


def optimizer_step(model, optimizer, scheduler, max_grad_norm: float) -> float:
    """Clip, step, schedule, zero; returns the gradient norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm.item()
