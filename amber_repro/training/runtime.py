"""A training or inference process's runtime: its rank and device, GPU kernel settings,
precision, and loading a model and tokenizer from a local save_pretrained folder."""

from __future__ import annotations

import os
import resource
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from amber_repro.provenance.model_files import check_model_dir
from amber_repro.training import distributed

PRECISIONS = {"float32": torch.float32, "bf16": torch.bfloat16, "float16": torch.float16}


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


def autocast(precision: str, device: torch.device):
    """bf16 autocast for the "bf16" precision setting; float32 otherwise (TF32 per set_kernels)."""
    enabled = precision == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def load_model(
    path: Path, dtype: torch.dtype, device: torch.device, gradient_checkpointing: bool = False
):
    """A causal LM from a local save_pretrained folder: safetensors only, no remote code, no hub.

    The files the folder's amber_repro.json records are checked first (DamagedOutputError names a
    missing or changed one; about 0.8 s per GB hashed: provenance/model_files.py)."""
    from transformers import AutoModelForCausalLM

    check_model_dir(path)

    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=dtype
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model.to(device)


def load_tokenizer(path: Path):
    """The folder's tokenizer, its recorded files checked first as for load_model."""
    from transformers import AutoTokenizer

    check_model_dir(path)

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = (
            tokenizer.eos_token
        )  # LLaMA has no pad token; padding is masked anyway
    return tokenizer


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
