"""Running the peer benchmark's sides (bench/peer_trl_dpo.py), each process a fresh child measured
with os.wait4: ours (ref-logps, then one DPO per beta) and TRL (one DPOTrainer run per beta).

In a sweep (--jobs N) the DPO processes of ours, and TRL's runs, go N at a time, each with
OMP_NUM_THREADS and MKL_NUM_THREADS the CPUs shared out among them, as Snakemake sets a job's
threads; our ref-logps process runs alone, with all of them. A side's wall time is then the span
from its first start to its last end, its CPU time the sum over its processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from peer_inputs import BETAS, DATA, Work, batch_order, child_env

# The script whose --trl-child runs the TRL side (peer_trl_child.trl_child) in a fresh process.
SCRIPT = Path(__file__).resolve().with_name("peer_trl_dpo.py")


def run_child(command: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run one process to the end: its wall time, and from os.wait4's rusage its own CPU time
    (user + system, less sensitive than wall time to other load on the machine) and peak RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    with log.open("w") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=handle)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"failed ({process.returncode}): {' '.join(command)}\n{log.read_text()[-4000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "load_average_1min": [load, os.getloadavg()[0]],  # at start and end
    }


def flags(settings, only=None) -> list[str]:
    import shlex

    from amber_repro.config.cli import settings_flags

    return shlex.split(settings_flags(settings, only))


def our_flags(work: Work, pipeline: Path) -> tuple[list[str], list[str]]:
    """ref-logps and dpo flags as the workflow derives them, with the bench's batch and steps."""
    import yaml

    from amber_repro.config.load import resolve

    config = resolve(
        yaml.safe_load((pipeline / "config/config.yaml").read_text()) or {},
        pipeline / "config/presets",
    )
    common = flags(config.tokenization) + flags(config.reproducibility)
    dpo = config.dpo.model_copy(
        update={
            "batch_size": work.batch_size,
            "gradient_accumulation_steps": 1,
            "checkpoint_every": work.steps + 1,  # none during the run
            "eval_every": work.steps + 1,  # only the final evaluations
            "eval_examples": work.n_test,  # the whole held-out split, as TRL evaluates it
        }
    )
    return flags(config.reference) + common, flags(dpo) + common


def thread_env(jobs: int | None) -> dict:
    """OMP and MKL threads of a process that runs beside jobs - 1 others: the CPUs shared out.
    None (outside a sweep) leaves the environment as it is."""
    if jobs is None:
        return {}
    threads = str(threads_per_process(jobs))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def threads_per_process(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def in_parallel(calls: list[Callable[[], dict]], jobs: int) -> tuple[list[dict], float]:
    """Make the calls (each runs a child to its end) `jobs` at a time, in threads: os.wait4 waits
    for one pid, so each child's rusage stays its own. Their results in order, and the wall time
    from the first start to the last end."""
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        results = [future.result() for future in [pool.submit(call) for call in calls]]
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, start no more
    return results, time.perf_counter() - started


def side_totals(processes: list[dict], wall: float, jobs: int | None) -> dict:
    return {
        "jobs": jobs,
        "threads_per_process": None if jobs is None else threads_per_process(jobs),
        "wall_s": wall,
        "cpu_s": sum(p["cpu_s"] for p in processes),
        "peak_rss_bytes": max(p["peak_rss_bytes"] for p in processes),
    }


def run_ours(
    work: Work, betas, repo: Path, pipeline: Path, scratch: Path, jobs: int | None = None
) -> dict:
    """Reference log-probs of train and test (one process, as the workflow's ref_logps job), then
    one DPO per beta: each a fresh process, `jobs` at a time (None: one at a time, environment
    unchanged, wall time the sum of the processes')."""
    started = time.perf_counter()
    env = child_env(repo)
    ref_flags, dpo_flags = our_flags(work, pipeline)
    python = [sys.executable, "-m", "amber_repro"]
    data, ref = pipeline / DATA, scratch / "ref_logps"
    processes = {}
    splits = ("train", "test")
    command = [*python, "ref-logps", "--model", work.model]
    command += ["--pairs", *(str(data / f"pairs-{split}.parquet") for split in splits)]
    command += ["--out", *(str(ref / f"{split}.parquet") for split in splits), *ref_flags]
    ref_env = {**env, **thread_env(None if jobs is None else 1)}  # it runs alone: all the CPUs
    processes["ref-logps train + test"] = run_child(
        command, pipeline, ref_env, scratch / "ref_logps.log"
    )
    dpo_env = {**env, **thread_env(jobs)}

    def dpo(beta):
        out = scratch / f"dpo-beta{beta}"
        command = [*python, "dpo", "--model", work.model]
        command += ["--pairs", str(data / "pairs-train.parquet")]
        command += ["--ref-logps", str(ref / "train.parquet")]
        command += ["--eval-pairs", str(data / "pairs-test.parquet")]
        command += ["--eval-ref-logps", str(ref / "test.parquet")]
        command += ["--out-dir", str(out), "--state-dir", str(scratch / f"state-beta{beta}")]
        command += ["--max-steps", str(work.steps), *dpo_flags, "--beta", str(beta)]
        log = scratch / f"dpo-beta{beta}.log"
        measured = run_child(command, pipeline, dpo_env, log)
        record = json.loads((out / "amber_repro.json").read_text())
        return measured, {"speed": record["speed"], "results": record["results"]}

    done, _ = in_parallel([lambda beta=beta: dpo(beta) for beta in betas], jobs or 1)
    speeds = {}
    for beta, (measured, speed) in zip(betas, done, strict=True):
        processes[f"dpo beta {beta}"] = measured
        speeds[str(beta)] = speed
    # Outside a sweep: the sum, as before --jobs (the two differ by the bench's own overhead).
    span = time.perf_counter() - started
    wall = span if jobs else sum(p["wall_s"] for p in processes.values())
    return {
        **side_totals(list(processes.values()), wall, jobs),
        "processes": processes,
        "dpo": speeds,
    }


def run_trl(
    work: Work, beta: float, repo: Path, pipeline: Path, scratch: Path, jobs: int | None = None
) -> dict:
    """One TRL DPOTrainer run, in a fresh process (peer_trl_dpo.py --trl-child), with the threads
    of one of `jobs` processes at a time."""
    scratch.mkdir(parents=True, exist_ok=True)
    spec = {
        **asdict(work),
        "beta": beta,
        "pairs_train": str(pipeline / DATA / "pairs-train.parquet"),
        "pairs_test": str(pipeline / DATA / "pairs-test.parquet"),
        "order": batch_order(work.n_train, work.batch_size, work.seed, work.steps),
        "out_dir": str(scratch / "model"),
        "result": str(scratch / "result.json"),
    }
    (scratch / "spec.json").write_text(json.dumps(spec))
    # Its own datasets cache: nothing (reference log-probs included) is reused from another run.
    env = {**child_env(repo), "HF_DATASETS_CACHE": str(scratch / "hf_datasets"), **thread_env(jobs)}
    command = [sys.executable, str(SCRIPT), "--trl-child", str(scratch)]
    measured = run_child(command, pipeline, env, scratch / "trl.log")
    return {**measured, **json.loads((scratch / "result.json").read_text())}


def run_trl_sweep(work: Work, repo: Path, pipeline: Path, scratch: Path, jobs: int) -> dict:
    """TRL's side of the sweep: one run per beta (each recomputing the reference), `jobs` at a
    time."""
    calls = [
        lambda beta=beta: run_trl(work, beta, repo, pipeline, scratch / f"trl-{beta}", jobs)
        for beta in BETAS
    ]
    done, span = in_parallel(calls, jobs)
    return {**side_totals(done, span, jobs), "runs": dict(zip(map(str, BETAS), done, strict=True))}
