"""The slurm profile against a real SLURM scheduler on localhost (see slurm_cluster.py).

A misconfigured SLURM makes Snakemake wait forever: the whole-test limit (pytest-timeout) ends such
a test, and tests/processes.py kills the Snakemake it started, with its jobs.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import Workdir
from processes import PATIENCE, stop, unlock
from processes import run as run_command
from shared_builds import quick_config
from slurm_cluster import LocalSlurm, sbatch_calls, slurm_snakemake

from amber_repro.config.jobs import JOBS

# The AmberSafe GPU rules the embedded DAG runs (the registry's).
GPU_RULES = sorted(job.rule for job in JOBS if job.gpu and job.part == "ambersafe")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=2, memory_mb=8000, gpus=2)
    slurm.start()
    yield slurm
    slurm.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The quick settings: these tests are about what reaches SLURM, not about results."""
    return Workdir(tmp_path_factory.mktemp("slurm-run"), config=quick_config())


def test_the_dag_runs_end_to_end_through_the_slurm_profile(workdir, cluster):
    started = time.monotonic()
    result = slurm_snakemake(workdir, cluster)
    seconds = time.monotonic() - started
    report = json.loads((workdir.path / "results/ambersafe/eval.json").read_text())
    assert set(report["models"]) == {"base", "sft", "dpo"}
    calls = sbatch_calls(result.stderr + result.stdout)
    assert {"filter_pairs", *GPU_RULES} <= set(calls), calls.keys()
    print(f"embedded DAG through SLURM: {seconds:.0f} s")

    # Resources each rule requests appear in its sbatch call.
    resources = workdir.config["resources"]
    for rule in GPU_RULES:
        call = calls[rule]
        assert f"--gpus={resources[rule]['gpus']}" in call, call
        assert (
            f"--mem {resources[rule]['mem_mb']}" in call
            and f"-t {resources[rule]['runtime_min']}" in call
        ), call
        assert f"--cpus-per-task={resources[rule]['cpus']}" in call, call
    # The resumable jobs get SLURM's warning signal (the registry's SIGTERM_WARNING_SECONDS).
    for rule in GPU_RULES:
        assert ("--signal=TERM@600" in calls[rule]) == (rule in ("sft", "dpo")), calls[rule]
    assert "--gpus" not in calls["filter_pairs"] and "--mem 500" in calls["filter_pairs"]

    # GPU jobs were granted a GPU: SLURM set CUDA_VISIBLE_DEVICES, which each stage logs.
    for log in ("sft", "dpo", "ref_logps"):
        text = (workdir.path / f"results/logs/{log}.log").read_text()
        assert re.search(r"CUDA_VISIBLE_DEVICES=[01]\b", text), text[:500]
    # GPU rules ran in the configured image with the GPUs exposed (--nv), through the profile.
    calls = [
        json.loads(line)["argv"]
        for line in (workdir.path / "apptainer-calls.jsonl").read_text().splitlines()
    ]
    executed = [argv for argv in calls if "exec" in argv]
    # sft, ref_logps, dpo, evaluate (one per model), generate, safety_answers, safety_judge
    assert len(executed) == len(GPU_RULES) + 2 and all("--nv" in argv for argv in executed)
    assert all(
        any(a.endswith(workdir.config["container"]["image"]) for a in argv) for argv in executed
    )
    # One SLURM log per job, kept in a predictable place.
    assert list((workdir.path / "results/logs/slurm/rule_sft").rglob("*.log"))


def test_a_job_cancelled_with_scancel_fails_and_its_retry_completes(workdir, cluster):
    run = slurm_snakemake(workdir, cluster, "--forcerun", "sft", "--until", "sft", wait=False)
    try:
        deadline, job_id = time.monotonic() + PATIENCE, None
        while job_id is None:
            assert run.poll() is None, run.stdout.read()[-4000:]
            assert time.monotonic() < deadline, "the sft job never started"
            queue = run_command(
                ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], env=cluster.env
            ).stdout
            job_id = next(
                (line.split()[0] for line in queue.splitlines() if "rule_sft" in line), None
            )
            time.sleep(0.5)
        assert run_command(["scancel", job_id], env=cluster.env).returncode == 0
        output, _ = run.communicate()
    finally:
        if run.poll() is None:  # cut short: end Snakemake and its jobs, free its working directory
            stop(run)
            unlock(workdir.path)
    assert run.returncode == 0, output[-6000:]
    assert re.search(rf"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED", output), output[
        -6000:
    ]
    assert (workdir.path / "results/ambersafe/sft/model.safetensors").exists()


def test_a_two_process_training_step_runs_inside_one_slurm_job(workdir, cluster):
    """Issue 7's launcher through the profile: 2 GPUs requested -> torchrun starts 2 processes (gloo
    on CPU)."""
    original = workdir.config
    config = workdir.config
    config["resources"]["sft"].update(gpus=2, cpus=2)
    workdir.write_config(config)
    try:
        result = slurm_snakemake(workdir, cluster, "--until", "sft")
    finally:
        workdir.write_config(original)
    assert "--gpus=2" in sbatch_calls(result.stderr + result.stdout)["sft"]
    log = (workdir.path / "results/logs/sft.log").read_text()
    assert "process 0 of 2" in log and "process 1 of 2" in log and "on 2 process(es)" in log
    assert re.search(r"CUDA_VISIBLE_DEVICES=(0,1|1,0)\b", log), log[:800]
    record = json.loads((workdir.path / "results/ambersafe/sft/amber_repro.json").read_text())
    assert record["results"]["processes"] == 2
