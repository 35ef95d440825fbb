"""Multi-node training through the slurm profile, on a two-node SLURM cluster on this machine
(slurm_cluster.LocalSlurm(nodes=2): the second slurmd in its own network namespace and hostname).

The path under test is the cluster one: sbatch asks for 2 nodes with GPUs per node, the rule's shell
runs in the batch step, srun starts one `apptainer exec IMAGE torchrun` per node (a recording
stand-in for Apptainer, tests/fake_apptainer.py), and the torchruns meet through c10d rendezvous on
the first node and train one model with gloo across the two network namespaces. Midway, SLURM sends
the job's steps SIGTERM (what `--signal=TERM@600` does before the time limit): both nodes save one
sharded checkpoint and stop, and Snakemake's retry resumes from it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import torch
from conftest import Workdir
from processes import PATIENCE, stop, unlock
from processes import run as run_command
from safetensors.torch import load_file
from shared_builds import quick_config
from slurm_cluster import LocalSlurm, sbatch_calls, slurm_snakemake


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    slurm = LocalSlurm(
        tmp_path_factory.mktemp("slurm-2-nodes"), cpus=2, memory_mb=8000, gpus=1, nodes=2
    )
    slurm.start()
    yield slurm
    slurm.stop()


def weights(workdir: Workdir) -> dict[str, torch.Tensor]:
    return load_file(workdir.path / "results/ambersafe/sft/model.safetensors")


def signal_sft_midway(workdir: Workdir, cluster: LocalSlurm, run: subprocess.Popen) -> int:
    """Once the two-node SFT has logged 3 optimizer steps, SIGTERM its job steps (as
    `--signal=TERM@600` does); wait for the log to say which step the checkpoint was saved at, and
    return that step."""
    metrics = workdir.path / "results/ambersafe/.state/sft/metrics.jsonl"
    log = workdir.path / "results/logs/sft.log"
    deadline = time.monotonic() + PATIENCE
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert run.poll() is None, run.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "the two-node SFT never reached step 3"
        time.sleep(0.1)
    queue = run_command(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], env=cluster.env).stdout
    job_id = next(line.split()[0] for line in queue.splitlines() if "rule_sft" in line)
    assert run_command(["scancel", "--signal=TERM", job_id], env=cluster.env).returncode == 0
    while not (
        saved := re.search(r"SIGTERM: saved a checkpoint at optimizer step (\d+)", log.read_text())
    ):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)  # before the retry's job rewrites the log
    return int(saved.group(1))


def test_sft_trains_on_two_nodes_as_it_does_on_one(tmp_path_factory, cluster):
    # The quick settings: what is checked is where the processes ran and that the weights are
    # the same, not how well the model learns.
    workdir = Workdir(tmp_path_factory.mktemp("multi-node-run"), config=quick_config())
    config = workdir.config
    config["resources"]["sft"].update(gpus=1, nodes=2, cpus=2)
    # Long enough to interrupt (6 epochs of 11 steps: the signal lands about 2 steps after the
    # third, here); the only checkpoint is the one SIGTERM asks for.
    config["sft"].update(n_epochs=6, checkpoint_every=100000)
    workdir.write_config(config)
    # SFT's inputs (data, tiny model: CPU jobs, one node) are made here, not through SLURM: what is
    # under test starts at the two-node job.
    workdir.snakemake("results/ambersafe/data/manifest.json", "results/base_model")
    run = slurm_snakemake(workdir, cluster, "--until", "sft", wait=False)
    try:
        stopped_at = signal_sft_midway(workdir, cluster, run)
        output, _ = run.communicate()
    finally:
        if run.poll() is None:  # cut short: end Snakemake and its jobs, free its working directory
            stop(run)
            unlock(workdir.path)
    assert run.returncode == 0, output[-6000:]
    assert re.search(r"SLURM-job '\d+' failed", output), output[-4000:]  # the interrupted attempt
    log = (workdir.path / "results/logs/sft.log").read_text()  # the retry's
    assert re.search(rf"resuming from \S+ at optimizer step {stopped_at}\b", log), log[:3000]
    record = json.loads((workdir.path / "results/ambersafe/sft/amber_repro.json").read_text())
    steps = record["results"]["optimizer steps"]
    assert 3 <= stopped_at < steps == 6 * 11
    print(
        f"two nodes: SIGTERM saved a checkpoint at optimizer step {stopped_at} of {steps}; "
        "the retry resumed there"
    )

    call = sbatch_calls(output)["sft"]
    assert "--nodes=2" in call and "--ntasks=2" in call and "--gres=gpu:1" in call, call
    assert "--gpus" not in call and "--ntasks-per-gpu" not in call, (
        call
    )  # --gpus would be the job's total

    # One process per node, each on its own host, in one process group.
    assert re.search(r"process 0 of 2 on cpu of node1; CUDA_VISIBLE_DEVICES=0\b", log), log[:2000]
    assert re.search(r"process 1 of 2 on cpu of node2; CUDA_VISIBLE_DEVICES=0\b", log), log[:2000]
    assert record["results"]["processes"] == 2

    # srun started the image on each node; the rule itself was not wrapped in the image (srun and
    # scontrol live on the host).
    calls = [
        json.loads(line)
        for line in (workdir.path / "apptainer-calls.jsonl").read_text().splitlines()
    ]
    sft_execs = [
        c["argv"]
        for c in calls
        if "exec" in c["argv"] and "amber_repro" in c["argv"] and "sft" in c["argv"]
    ]
    assert len(sft_execs) == 4, sft_execs  # 2 nodes x (the interrupted attempt, the retry)
    for argv in sft_execs:
        assert "--nv" in argv and argv[argv.index("--home") + 1] == str(workdir.path), argv
        image = next(a for a in argv if a.endswith(".sif"))
        assert image == workdir.config["container"]["image"]
        assert argv[argv.index(image) + 1 :][:4] == [
            "python",
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
        ]
        assert (
            "--rdzv-endpoint" in argv and argv[argv.index("--rdzv-endpoint") + 1] == "node1:29500"
        ), argv

    # The same training on one node with two processes, uninterrupted and without SLURM, gives the
    # same weights: gloo reduces in the same order whichever host each rank is on, and resuming from
    # a checkpoint is exact.
    two_nodes = weights(workdir)
    config["resources"]["sft"].update(gpus=2, nodes=1)
    workdir.write_config(config)
    workdir.snakemake("--forcerun", "sft", "--until", "sft")
    assert "process 1 of 2 on cpu of" in (workdir.path / "results/logs/sft.log").read_text()
    one_node = weights(workdir)
    assert two_nodes.keys() == one_node.keys()
    differing = [name for name in one_node if not torch.equal(two_nodes[name], one_node[name])]
    assert not differing, differing
