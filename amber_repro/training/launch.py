"""How a training stage is started: one process, torchrun on one node, or torchrun on every node of
a SLURM allocation (srun starts one launcher per node; the batch host holds the rendezvous)."""

from __future__ import annotations

RENDEZVOUS_PORT = 29500


def launch_prefix(
    processes_per_node: int, nodes: int = 1, cpus_per_node: int = 1, node_exec: str = ""
) -> str:
    """The command that runs `<prefix> -m amber_repro <stage> ...` with that many processes.

    Several nodes: the prefix must run in the batch step of a SLURM job (the rule's shell, with the
    `mpi` resource; see rules/common.smk), so `$(hostname)` is the allocation's first node and hosts
    the c10d rendezvous. srun gets its CPU count explicitly: the SLURM executor clears the job's
    SLURM_* variables before the rule runs. `node_exec` is put before torchrun on each node
    (`apptainer exec ... IMAGE`): the container starts per node, because srun lives on the host, not
    in the image.
    """
    if processes_per_node < 1 or nodes < 1 or cpus_per_node < 1:
        raise ValueError(
            f"need at least one process, node and CPU, got {processes_per_node} x {nodes} "
            f"with {cpus_per_node} CPU(s)"
        )
    if processes_per_node == 1 and nodes == 1:
        return "python"
    torchrun = f"python -m torch.distributed.run --nproc-per-node {processes_per_node}"
    if nodes == 1:
        return f"{torchrun} --standalone"
    srun = (
        f"srun --nodes {nodes} --ntasks-per-node 1 --cpus-per-task {cpus_per_node} "
        "--kill-on-bad-exit=1"
    )
    return " ".join(
        filter(
            None,
            [
                srun,
                node_exec,
                torchrun,
                f"--nnodes {nodes} --rdzv-backend c10d",
                f'--rdzv-id "$SLURM_JOB_ID" --rdzv-endpoint "$(hostname):{RENDEZVOUS_PORT}"',
            ],
        )
    )
