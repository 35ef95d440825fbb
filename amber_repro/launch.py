"""How a training stage is started: one process, torchrun on one node, or torchrun on every node of a
SLURM allocation (srun starts one launcher per node; the first node hosts the rendezvous)."""

from __future__ import annotations

RENDEZVOUS_PORT = 29500


def launch_prefix(processes_per_node: int, nodes: int = 1) -> str:
    """The command that runs `<prefix> -m amber_repro <stage> ...` with that many processes."""
    if processes_per_node < 1 or nodes < 1:
        raise ValueError(f"need at least one process and one node, got {processes_per_node} x {nodes}")
    if processes_per_node == 1 and nodes == 1:
        return "python"
    torchrun = f"python -m torch.distributed.run --nproc-per-node {processes_per_node}"
    if nodes == 1:
        return f"{torchrun} --standalone"
    head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    return (f"srun --nodes {nodes} --ntasks-per-node 1 {torchrun} --nnodes {nodes} --rdzv-backend c10d "
            f'--rdzv-id "$SLURM_JOB_ID" --rdzv-endpoint "{head}:{RENDEZVOUS_PORT}"')
