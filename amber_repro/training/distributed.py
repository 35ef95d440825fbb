"""One process or many: process-group set-up, FSDP2 sharding, and the few collectives the loops
need.

With WORLD_SIZE == 1 (the default here) nothing is initialised and the model stays a plain module,
so the single-process path is the plain PyTorch one. Under torchrun (WORLD_SIZE > 1) the process
group uses NCCL for GPU tensors and gloo for CPU ones, and the model is sharded with FSDP2: each
LlamaDecoderLayer is its own unit, then the whole model (the recipe's wrap policy).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

DECODER_LAYERS = ("LlamaDecoderLayer",)


def backend(device: torch.device) -> str:
    """NCCL for GPU tensors; gloo for the CPU tensors and objects the loops exchange (flags, metric
    sums, gathered lists), which NCCL alone cannot carry."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init(world_size: int, device: torch.device) -> None:
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend(device))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Under several processes, `fully_shard_model`; one process keeps the plain module."""
    return fully_shard_model(model, precision) if is_distributed() else model


def fully_shard_model(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """FSDP2 full sharding per decoder layer, then the root; bf16 compute with float32 reduction if
    asked. Needs an initialised process group (of any size)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    for module in model.modules():
        if type(module).__name__ in DECODER_LAYERS:
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def gradient_sync(model: torch.nn.Module, enabled: bool) -> None:
    """Skip FSDP's reduce-scatter on all but the last micro-batch of an accumulation."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """The average of each value across processes (for logging; every rank gets the result)."""
    if not is_distributed():
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: (tensor[i] / dist.get_world_size()).item() for i, k in enumerate(keys)}


def sum_over_processes(value: int) -> int:
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return int(tensor.item())


def any_process(flag: bool) -> bool:
    """True on every process if it is True on any (so all stop at the same step, e.g. on
    SIGTERM)."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def gather(obj) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU (gathered from the shards; complete on rank 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not is_distributed():
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
