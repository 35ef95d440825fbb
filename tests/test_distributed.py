"""Multi-process training on CPU with the gloo backend: FSDP2 gives what one process gives with the
same effective batch, sharded checkpoints resume on the same or another process count, and the
reference log-prob pass computes each pair once across processes.

Tolerance: 1e-4 (absolute, weights; relative, losses) after 8 optimizer steps. Two processes sum
their micro-batch gradients in another order than one process does (a reduce-scatter of two partial
sums instead of one running sum), so float32 rounding differs at ~1e-7 relative; RMSprop divides
each gradient by its running RMS, so a coordinate's step is about lr (1e-3) whatever its gradient,
and a rounding difference in a near-zero gradient can move that coordinate by a small fraction of
lr.
Measured here: at most 1.5e-5.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import torch
from processes import PATIENCE
from processes import run as run_command
from safetensors.torch import load_file

from amber_repro.errors import ConfigError
from amber_repro.training import distributed
from amber_repro.training.launch import launch_prefix
from amber_repro.training.schedule import global_batch_size, micro_batch_size

TOLERANCE = 1e-4


def command(stage: str, built, out: Path, processes: int, accumulation: int, extra=()) -> list[str]:
    root = built.path / "results"
    data = root / "ambersafe/data"
    if stage == "sft":
        args = ["sft", "--data", data / "sft-train.parquet", "--model", root / "base_model"]
    else:
        args = [
            "dpo",
            "--model",
            root / "ambersafe/sft",
            "--pairs",
            data / "pairs-train.parquet",
            "--ref-logps",
            root / "ambersafe/ref_logps/train.parquet",
            "--eval-pairs",
            data / "pairs-test.parquet",
            "--eval-ref-logps",
            root / "ambersafe/ref_logps/test.parquet",
            "--eval-every",
            "32",  # examples: every 4 steps of 8
            "--eval-examples",
            "32",
        ]
    args += [
        "--batch-size",
        "8",
        "--gradient-accumulation-steps",
        accumulation,
        "--n-epochs",
        "1",
        "--max-steps",
        "8",
        "--checkpoint-every",
        "2",
        # 1e-4, not the embedded preset's 1e-3: RMSprop divides each step by the gradient's running
        # RMS, so on rows with tiny gradients (rare tokens' embeddings) float rounding of the summed
        # gradient moved single weights by up to 4.9e-4 after 8 steps at 1e-3 (505 of 529,056
        # elements over 1e-5), and then one step's loss by 6e-4 relative.
        "--lr",
        "1e-4",
        "--warmup-steps",
        "2",
        "--max-length",
        "128",
        "--max-prompt-length",
        "64",
        "--out-dir",
        out / "model",
        "--state-dir",
        out / "state",
        *extra,
    ]
    launcher = (
        [sys.executable]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
        ]
    )
    return [*launcher, "-m", "amber_repro", *map(str, args)]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    result = run_command(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-5000:]
    return result


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def metric(out: Path, key: str) -> list[float]:
    """One metric's values, step by step (the lines that have it: step 0 has held-out ones only)."""
    rows = [json.loads(line) for line in (out / "model" / "metrics.jsonl").read_text().splitlines()]
    return [row[key] for row in rows if key in row]


def losses(out: Path) -> list[float]:
    return metric(out, "loss")


def grad_norms(out: Path) -> list[float]:
    return metric(out, "grad_norm")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(quick_pipeline, tmp_path_factory):
    """Uninterrupted runs, computed once each: (stage, processes, accumulation) -> output folder."""
    done = {}

    def get(stage: str, processes: int, accumulation: int) -> Path:
        key = (stage, processes, accumulation)
        if key not in done:
            done[key] = tmp_path_factory.mktemp(f"{stage}-{processes}p-{accumulation}a")
            run(command(stage, quick_pipeline, done[key], processes, accumulation))
        return done[key]

    return get


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_two_fsdp_processes_match_one_process_with_the_same_effective_batch(stage, runs):
    one, two = (
        runs(stage, 1, 2),
        runs(stage, 2, 1),
    )  # micro-batch 4 either way: 8 = 4 x 2 x 1 = 4 x 1 x 2
    assert max_difference(weights(one), weights(two)) < TOLERANCE
    assert losses(one) == pytest.approx(losses(two), rel=TOLERANCE)
    assert len(losses(two)) == 8
    record = json.loads((two / "model" / "amber_repro.json").read_text())
    assert record["results" if stage == "sft" else "speed"]["processes"] == 2


def test_more_accumulation_does_not_inflate_the_loss(runs):
    """Loss and gradient norm, not weights: RMSprop's steps do not depend on the gradient's scale,
    so an inflated gradient would hardly show in the weights; it would show here 4-fold."""
    accumulate_1, accumulate_4 = runs("sft", 1, 1), runs("sft", 1, 4)  # micro-batches of 8 and of 2
    assert losses(accumulate_1) == pytest.approx(losses(accumulate_4), rel=TOLERANCE)
    assert grad_norms(accumulate_1) == pytest.approx(grad_norms(accumulate_4), rel=TOLERANCE)


def kill_after_first_checkpoint(cmd: list[str], state: Path) -> None:
    """Start a (possibly torchrun) run and SIGKILL it and every process it started once a
    checkpoint exists. torchrun starts its workers in sessions of their own, so killing the
    launcher's process group alone would leave them running."""
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + PATIENCE
    while not (state / "checkpoint" / "trainer_state.pt").exists():
        assert process.poll() is None, (
            f"finished before its first checkpoint: {process.stderr.read()[-3000:]}"
        )
        assert time.monotonic() < deadline
        time.sleep(0.01)
    tree = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(tree)
    process.wait()


@pytest.mark.parametrize("first_processes", [2, 1])
def test_resume_on_two_processes_from_a_checkpoint_of_two_or_one(
    first_processes, quick_pipeline, runs, tmp_path
):
    reference = runs("sft", 2, 1)
    kill_after_first_checkpoint(
        command("sft", quick_pipeline, tmp_path, first_processes, 1), tmp_path / "state"
    )
    assert not (tmp_path / "model").exists()
    saved = torch.load(tmp_path / "state/checkpoint/trainer_state.pt", weights_only=True)
    assert saved["world_size"] == first_processes and 2 <= saved["step"] < 8
    resumed = run(command("sft", quick_pipeline, tmp_path, 2, 1))
    assert f"written by {first_processes} process(es), now 2" in resumed.stdout
    if first_processes == 2:
        assert (
            max_difference(weights(tmp_path), weights(reference)) == 0.0
        )  # same processes: bit for bit
    else:
        assert max_difference(weights(tmp_path), weights(reference)) < TOLERANCE


def test_reference_logps_on_two_processes_cover_each_pair_once(quick_pipeline, tmp_path):
    root = quick_pipeline.path / "results"
    pairs = root / "ambersafe/data/pairs-test.parquet"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "amber_repro",
        "ref-logps",
        "--model",
        str(root / "ambersafe/sft"),
        "--pairs",
        str(pairs),
        "--out",
        str(tmp_path / "test.parquet"),
        "--precision",
        "float32",
        "--max-length",
        "128",
        "--max-prompt-length",
        "64",
        "--batch-size",
        "16",
    ]
    run(cmd)
    two = pl.read_parquet(tmp_path / "test.parquet")
    one = pl.read_parquet(root / "ambersafe/ref_logps/test.parquet")
    assert two["source_row"].to_list() == one["source_row"].to_list()
    for column in ("reference_chosen_logps", "reference_rejected_logps"):
        assert (two[column] - one[column]).abs().max() < 1e-3  # sums of ~100 log-probs in float32
    record = json.loads((tmp_path / "test.json").read_text())
    assert sum(record["pairs_per_process"]) == one.height and len(record["pairs_per_process"]) == 2


def test_batch_conventions_and_impossible_splits():
    assert (
        micro_batch_size(32, 4, 8) == 1 and global_batch_size(32, 4, 8) == 32
    )  # AmberSafe DPO on 8 GPUs
    assert micro_batch_size(64, 2, 8) == 4  # AmberSafe SFT
    assert (
        micro_batch_size(2, 16, 8, "per_device") == 2
        and global_batch_size(2, 16, 8, "per_device") == 256
    )  # AmberChat
    with pytest.raises(
        ConfigError,
        match="batch_size 32 is not divisible by gradient_accumulation_steps 4 x processes 16",
    ):
        micro_batch_size(32, 4, 16)


def test_an_impossible_split_stops_before_training(quick_pipeline, tmp_path):
    cmd = command("sft", quick_pipeline, tmp_path, 2, 3)  # 8 examples over 3 x 2 micro-batches
    result = run_command(cmd)
    assert result.returncode != 0
    assert (
        "batch_size 8 is not divisible by gradient_accumulation_steps 3 x processes 2"
        in result.stderr
    )
    assert not (tmp_path / "state").exists()


def test_launch_prefixes():
    assert launch_prefix(1) == "python"
    assert launch_prefix(8) == "python -m torch.distributed.run --nproc-per-node 8 --standalone"
    multi = launch_prefix(8, 4, 64, "apptainer exec --nv image.sif")
    assert multi.startswith(
        "srun --nodes 4 --ntasks-per-node 1 --cpus-per-task 64 --kill-on-bad-exit=1 "
        "apptainer exec --nv image.sif python -m torch.distributed.run "
        "--nproc-per-node 8 --nnodes 4"
    )
    assert '--rdzv-id "$SLURM_JOB_ID"' in multi and "--rdzv-backend c10d" in multi
    assert '--rdzv-endpoint "$(hostname):29500"' in multi
    with pytest.raises(ValueError, match="need at least one process"):
        launch_prefix(0)


def test_bf16_and_activation_checkpointing_under_fsdp(quick_pipeline, runs, tmp_path):
    """The switches run sharded: bf16 compute (float32 master weights and reductions) starts within
    bf16 rounding of the float32 run and trains, and the saved checkpoint is float32 as the recipe's
    policy."""
    run(
        command(
            "sft",
            quick_pipeline,
            tmp_path,
            2,
            1,
            extra=[
                "--precision",
                "bf16",
                "--gradient-checkpointing",
                "--eval-data",
                quick_pipeline.path / "results/ambersafe/data/sft-test.parquet",
                "--eval-examples",
                "32",
            ],
        )
    )
    bf16, fp32 = losses(tmp_path), losses(runs("sft", 2, 1))
    assert bf16[0] == pytest.approx(fp32[0], rel=1e-3)  # same weights, bf16 rounding only
    # Later steps follow their own (rounded) trajectory, and it learns: the held-out loss of the
    # same sample falls from before the first step to after the last (the batches' own losses
    # differ with their examples, so they do not show it).
    held_out = metric(tmp_path, "eval/loss")
    assert len(bf16) == 8 and len(held_out) == 2 and held_out[-1] < held_out[0]
    assert {tensor.dtype for tensor in weights(tmp_path).values()} == {torch.float32}


def test_a_gpu_process_group_also_carries_cpu_tensors():
    """The loops all-reduce CPU tensors (stop flags, metric sums) and gather objects: NCCL alone
    refuses CPU tensors ("No backend type associated with device type cpu", seen on an H100), so
    a GPU run's group pairs NCCL with gloo."""
    gpu_backend = distributed.backend(torch.device("cuda"))
    backends = dict(part.split(":") for part in gpu_backend.split(","))
    assert backends == {"cpu": "gloo", "cuda": "nccl"}
    assert distributed.backend(torch.device("cpu")) == "gloo"
