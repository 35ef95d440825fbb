"""Multi-node training through the slurm profile, on a two-node SLURM cluster on this machine
(slurm_cluster.LocalSlurm(nodes=2): the second slurmd in its own network namespace and hostname).

The path under test is the cluster one: sbatch asks for 2 nodes with GPUs per node, the rule's shell
runs in the batch step, srun starts one `apptainer exec IMAGE torchrun` per node (a recording stand-in
for Apptainer, tests/fake_apptainer.py), and the torchruns meet through c10d rendezvous on the first
node and train one model with gloo across the two network namespaces.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from conftest import Workdir
from slurm_cluster import LocalSlurm, sbatch_calls, slurm_snakemake


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm-2-nodes"), cpus=2, memory_mb=8000, gpus=1, nodes=2)
    slurm.start()
    yield slurm
    slurm.stop()


def weights(workdir: Workdir) -> dict[str, torch.Tensor]:
    return load_file(workdir.path / "results/ambersafe/sft/model.safetensors")


def test_sft_trains_on_two_nodes_as_it_does_on_one(tmp_path_factory, cluster):
    workdir = Workdir(tmp_path_factory.mktemp("multi-node-run"))
    config = workdir.config
    config["resources"]["sft"].update(gpus=1, nodes=2, cpus=2)
    workdir.write_config(config)
    result = slurm_snakemake(workdir, cluster, "--until", "sft")

    call = sbatch_calls(result.stderr + result.stdout)["sft"]
    assert "--nodes=2" in call and "--ntasks=2" in call and "--gres=gpu:1" in call, call
    assert "--gpus" not in call and "--ntasks-per-gpu" not in call, call  # --gpus would be the job's total

    # One process per node, each on its own host, in one process group.
    log = (workdir.path / "results/logs/sft.log").read_text()
    assert re.search(r"process 0 of 2 on cpu of node1; CUDA_VISIBLE_DEVICES=0\b", log), log[:2000]
    assert re.search(r"process 1 of 2 on cpu of node2; CUDA_VISIBLE_DEVICES=0\b", log), log[:2000]
    record = json.loads((workdir.path / "results/ambersafe/sft/amber_repro.json").read_text())
    assert record["results"]["processes"] == 2

    # srun started the image on each node; the rule itself was not wrapped in the image (srun and
    # scontrol live on the host).
    calls = [json.loads(line) for line in (workdir.path / "apptainer-calls.jsonl").read_text().splitlines()]
    sft_execs = [c["argv"] for c in calls if "exec" in c["argv"] and "amber_repro" in c["argv"]
                 and "sft" in c["argv"]]
    assert len(sft_execs) == 2, sft_execs
    for argv in sft_execs:
        assert "--nv" in argv and argv[argv.index("--home") + 1] == str(workdir.path), argv
        image = next(a for a in argv if a.endswith(".sif"))
        assert image == workdir.config["container"]["image"]
        assert argv[argv.index(image) + 1:][:4] == ["python", "-m", "torch.distributed.run", "--nproc-per-node"]
        assert "--rdzv-endpoint" in argv and argv[argv.index("--rdzv-endpoint") + 1] == "node1:29500", argv

    # The same training on one node with two processes, without SLURM, gives the same weights: gloo
    # reduces in the same order whichever host each rank is on.
    two_nodes = weights(workdir)
    config["resources"]["sft"].update(gpus=2, nodes=1)
    workdir.write_config(config)
    workdir.snakemake("--forcerun", "sft", "--until", "sft")
    assert "process 1 of 2 on cpu of" in (workdir.path / "results/logs/sft.log").read_text()
    one_node = weights(workdir)
    assert two_nodes.keys() == one_node.keys()
    differing = [name for name in one_node if not torch.equal(two_nodes[name], one_node[name])]
    assert not differing, differing
