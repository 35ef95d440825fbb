"""Building blocks shared by the training loops (SFT and AmberChat in supervised_loop.py, DPO in
dpo.py)."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from amber_repro.data.tokenization import Limits
from amber_repro.infrastructure.configuration import add_settings_arguments
from amber_repro.infrastructure.errors import ConfigError, StopRequested
from amber_repro.infrastructure.settings import Reproducibility, Tokenization, Training
from amber_repro.infrastructure.storage import disk_full_errors
from amber_repro.training import distributed
from amber_repro.training.batch_order import steps_per_epoch

PRECISIONS = {"float32": torch.float32, "bf16": torch.bfloat16, "float16": torch.float16}


def add_training_arguments(
    parser: argparse.ArgumentParser,
    settings: type[Training],
    sections: tuple = (Tokenization, Reproducibility),
) -> None:
    """A training stage's paths, its settings (defaults: the recipe's) and the tokenization's
    (AmberChat, which truncates its own way, passes other `sections`)."""
    parser.add_argument(
        "--model", type=Path, required=True, help="save_pretrained folder to start from"
    )
    parser.add_argument(
        "--out-dir", type=Path, required=True, help="the final save_pretrained folder"
    )
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="resumable checkpoints and live logs"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many optimizer steps (smoke runs)",
    )
    add_settings_arguments(parser, settings, *sections)


def training_settings(args: argparse.Namespace) -> dict:
    """The settings that decide a run's result (paths and checkpoint cadence excluded)."""
    excluded = {"model", "out_dir", "state_dir", "checkpoint_every", "stage"}
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in excluded
    }


def limits(args: argparse.Namespace) -> Limits:
    return Limits(args.max_length, args.max_prompt_length)


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly distributed) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def set_kernels(deterministic: bool, tf32: bool) -> None:
    """The GPU kernels of a run, set before CUDA starts (cuBLAS reads CUBLAS_WORKSPACE_CONFIG when
    it creates its handle).

    TF32 matmuls and convolutions when `tf32`, as the reference turns them on at import: "float32"
    then runs at TF32 speed on A100 and H100 GPUs. `deterministic` wins: deterministic kernels and
    full float32, so that a rerun on the same GPU model and software stack repeats bit for bit (CPU
    runs already do). Only CUDA's flags change, so CPU results are the same either way. No
    DataLoader workers to seed: batches are built in the loop from the seeded order.
    """
    tf32 = tf32 and not deterministic
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if not deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def processes() -> Processes:
    """Read rank and world size as torchrun / accelerate launch set them; one CPU process
    otherwise."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    distributed.init(world, device)
    # What the scheduler granted, for the job log (SLURM sets CUDA_VISIBLE_DEVICES for GPU jobs).
    print(
        f"process {rank} of {world} on {device} of {socket.gethostname()}; "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}",
        flush=True,
    )
    return Processes(rank, world, device)


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


def total_steps(n_examples: int, args: argparse.Namespace) -> int:
    """Optimizer steps of the whole run: full batches x epochs, capped by --max-steps."""
    total = steps_per_epoch(n_examples, args.batch_size) * args.n_epochs
    return total if args.max_steps is None else min(total, args.max_steps)


def micro_batches(indices: list[int], micro_batch: int, procs: Processes) -> list[list[int]]:
    """This process's micro-batches of one global batch (rank r takes every world_size-th slice)."""
    chunks = [indices[i : i + micro_batch] for i in range(0, len(indices), micro_batch)]
    return chunks[procs.rank :: procs.world_size]


def build_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(model.parameters(), lr=lr)  # the reference's default optimizer


def recipe_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> tuple:
    """The recipe's optimizer and schedule (SFT and DPO): RMSprop at --lr, --warmup-steps."""
    optimizer = build_optimizer(model, args.lr)
    return optimizer, build_scheduler(optimizer, args.warmup_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over warmup_steps, then constant (the reference's schedule, step counted from
    0)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1))
    )


def autocast(args: argparse.Namespace, device: torch.device):
    enabled = args.precision == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def load_model(
    path: Path, dtype: torch.dtype, device: torch.device, gradient_checkpointing: bool = False
):
    """A causal LM from a local save_pretrained folder: safetensors only, no remote code, no hub."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=dtype
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model.to(device)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = (
            tokenizer.eos_token
        )  # LLaMA has no pad token; padding is masked anyway
    return tokenizer


def optimizer_step(model, optimizer, scheduler, max_grad_norm: float) -> float:
    """Clip, step, schedule, zero; returns the gradient norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm.item()


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class SigtermFlag:
    """Turns SIGTERM (what SLURM sends before a time limit) and a first SIGINT (Ctrl-C) into a
    flag the loop checks after each optimizer step, to save and stop there. A second Ctrl-C stops
    at once (KeyboardInterrupt; the CLI prints one line): what it cuts short has no manifest, so it
    is never resumed."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self.interrupts = 0
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # a third one ends the process
                raise KeyboardInterrupt
            # os.write, not print: a handler may run in the middle of another print.
            os.write(2, b"\nSIGINT: saving a checkpoint and stopping; Ctrl-C again stops at once\n")
        self.requested = True
        self.signum = self.signum or signum

    def stop(self, state_dir: Path, step: int):
        signum = self.signum or signal.SIGTERM  # another process had the signal
        raise StopRequested(
            f"{signal.Signals(signum).name}: saved a checkpoint at optimizer step {step} in "
            f"{state_dir}; rerun to resume",
            exit_code=128 + signum,
        )


class MetricsLog:
    """Per-step metrics as JSONL and TensorBoard events in the state folder (they survive a
    kill)."""

    def __init__(self, state_dir: Path, start_step: int, enabled: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.enabled = enabled
        self.path = state_dir / "metrics.jsonl"
        if not enabled:
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in self._read() if r[1] <= start_step]  # drop steps after the checkpoint
        self.path.write_text("".join(line + "\n" for line, _ in kept))
        if start_step == 0:
            shutil.rmtree(state_dir / "tensorboard", ignore_errors=True)
        self.writer = SummaryWriter(str(state_dir / "tensorboard"), purge_step=start_step + 1)

    def _read(self) -> list[tuple[str, int]]:
        """(line, step) of each readable line; a kill mid-write leaves a torn last line, which is
        dropped (and any other unreadable line), saying so."""
        text = self.path.read_text(errors="replace") if self.path.exists() else ""
        lines = text.splitlines()
        readable, torn = [], []
        for number, line in enumerate(lines, 1):
            try:
                readable.append((line, int(json.loads(line)["step"])))
            except (ValueError, KeyError, TypeError):
                torn.append(number)
        if torn:
            where = "its torn last line" if torn == [len(lines)] else f"unreadable lines {torn}"
            print(f"dropped {where} from {self.path}")
        return readable

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                values[name] = str(value)
            else:
                self.writer.add_scalar(name, value, step)
        line = json.dumps({"step": step, **values}, sort_keys=True) + "\n"
        with disk_full_errors(self.path, needed_bytes=len(line)), self.path.open("a") as handle:
            handle.write(line)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
