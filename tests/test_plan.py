"""`python -m amber_repro plan`: the arithmetic against hand calculations, the verdicts, the 7B
recipe within its limits, a limit too short refused, and docs/cluster.md's table up to date."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO, snakemake_env

from amber_repro.config.load import resolve
from amber_repro.planning import costs
from amber_repro.planning.context import (
    PAIR_PADDING,
    SFT_PADDING,
    STARTUP_SECONDS,
    UTILISATION,
    Context,
    Row,
)
from amber_repro.planning.estimates import dpo, sft
from amber_repro.planning.plan import verdict
from amber_repro.planning.workloads import PairData, harness_work

A100 = costs.GPUS["a100-80gb"]


def plan(*configfiles, gpu="a100-80gb") -> subprocess.CompletedProcess:
    flags = [f"--configfile={path}" for path in configfiles]
    return subprocess.run(
        [sys.executable, "-m", "amber_repro", "plan", *flags, "--gpu", gpu, "--results", "none"],
        capture_output=True,
        text=True,
        env=snakemake_env(),
        cwd=REPO,
    )


def test_llama_7b_has_its_published_parameter_count():
    # 32 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096) + 2 x 32000 x 4096 + 4096
    assert costs.LLAMA_7B.params == 6_738_415_616
    assert costs.LLAMA_7B.matmul_params == 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 32000 * 4096


def test_flops_of_a_small_sft_run_match_a_hand_calculation():
    """The embedded tiny model (3 layers, hidden 96, MLP 256, 4 heads, vocabulary 1024), 160 SFT
    prompts of 20 + 30 tokens, batch 16, 2 epochs, no evaluation but the final one."""
    settings = resolve(
        {
            "preset": "embedded",
            "sft": {"n_epochs": 2, "eval_every": 100_000, "do_first_eval": False},
        },
        REPO / "config" / "presets",
    )
    pairs = PairData(1000, 100, 160, 40, 20, 30, "given")
    (row,) = sft(Context(settings, pairs, A100))
    matmul = 3 * (4 * 96 * 96 + 3 * 96 * 256) + 1024 * 96  # 430,080
    length = 50 * SFT_PADDING  # 20 + 30 tokens, padded
    steps = 160 // 16 * 2  # 20 optimizer steps of 16 sequences
    train_tokens = steps * 16 * length
    # One evaluation: 256 examples, the reference's sample from 40 held-out prompts (gone through
    # again, reshuffled, until 8 full batches of 32).
    eval_tokens = 256 * length
    per_token = 2 * matmul + 4 * 3 * 96 * length  # forward: matmuls and attention
    assert row.tokens == pytest.approx(train_tokens)
    assert row.flops == pytest.approx(train_tokens * 3 * per_token + eval_tokens * per_token)
    share = UTILISATION[("sft", "tf32")]
    assert row.seconds == pytest.approx(STARTUP_SECONDS + row.flops / (156e12 * share))


def test_dpo_counts_two_sequences_a_pair_and_the_reference_evaluations():
    settings = resolve({}, REPO / "config" / "presets")  # the 7B recipe
    pairs = PairData(64_000, 3_200, 9_000, 500, 25, 90, "given")
    (row,) = dpo(Context(settings, pairs, A100))
    length = 115 * PAIR_PADDING
    steps = 64_000 // 32 * 3  # 6,000 steps
    evaluations = 1 + 6_000 // 625 + 1  # before the first step, every 20,000 pairs, the last
    per_token = costs.forward_flops_per_token(costs.LLAMA_7B, length)
    expected = steps * 32 * 2 * length * 3 * per_token + evaluations * 256 * 2 * length * per_token
    assert row.flops == pytest.approx(expected)
    assert row.gpus == 8 and row.precision == "tf32"


def test_harness_work_counts_requests_and_generated_tokens():
    work = harness_work(["hellaswag:10", "gsm8k:5", "no_such_task:3"], limit=None)
    assert work.forward_tokens == pytest.approx(10042 * 4 * 11 * 110 + 1319 * 6 * 160)
    assert work.generated_tokens == 1319 * 256
    assert work.unknown == ("no_such_task",)
    assert harness_work(["mmlu:5"], limit=100).forward_tokens == pytest.approx(100 * 6 * 110)


@pytest.mark.parametrize(
    "rule, seconds, memory, expected, fails",
    [
        ("evaluate", 3000, 30, "ok", False),
        ("evaluate", 4000, 30, "PAST ITS LIMIT (cannot resume)", True),
        ("sft", 6000, 30, "warning: needs 1 retry", False),  # 3000 s of work per try
        ("sft", 9001, 30, "PAST ITS LIMIT (3 retries needed, the profile allows 2)", True),
        ("sft", 100, 81, "OUT OF MEMORY (81 of 80 GB)", True),
    ],
)
def test_verdicts(rule, seconds, memory, expected, fails):
    row = Row(rule, rule, 1, 1e9, 1e6, 1e15, "tf32", memory, seconds, limit_min=60)
    assert verdict(row, A100, retries=2) == (expected, fails)


def test_a_cpu_job_is_held_to_its_own_memory_request():
    row = Row("chat_data", "chat_data", 0, 0, 0, 0, "cpu", 5.6, 440, 60, node_memory_mb=12000)
    assert verdict(row, A100, retries=2) == ("ok", False)
    row.node_memory_mb = 5000
    assert verdict(row, A100, retries=2) == (
        "OUT OF MEMORY (over resources.chat_data.mem_mb 5000)",
        True,
    )


def test_the_7b_recipe_and_its_amberchat_chain_fit_their_limits(tmp_path):
    result = plan("config/ambersafe-7b.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.split()[:1]]
    jobs = {line.split()[0] for line in rows}
    assert {"sft", "ref_logps", "dpo", "evaluate[base]", "evaluate[sft]", "evaluate[dpo]"} <= jobs
    assert "PAST" not in result.stdout and "OUT OF MEMORY" not in result.stdout
    chat = tmp_path / "chat.yaml"
    chat.write_text("base_model: {source: amberchat}\n")
    result = plan("config/ambersafe-7b.yaml", chat, gpu="h100-80gb")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "amberchat " in result.stdout and "amberchat_eval" in result.stdout


def test_an_evaluation_limit_of_60_minutes_is_refused(tmp_path):
    short = tmp_path / "short.yaml"
    size = {"gpus": 1, "nodes": 1, "cpus": 8, "mem_mb": 64000, "runtime_min": 60}
    short.write_text(yaml.safe_dump({"resources": {"evaluate": size}}))
    result = plan("config/ambersafe-7b.yaml", short)
    assert result.returncode == 1, result.stdout
    assert "evaluate[dpo]" in result.stdout and "PAST ITS LIMIT (cannot resume)" in result.stdout
    assert "at least one job cannot finish as configured" in result.stderr


def test_docs_cluster_md_holds_the_plans_table():
    """docs/cluster.md's table is the plan's --markdown output for the 7B recipe on A100s."""
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "amber_repro",
            "plan",
            "--configfile=config/ambersafe-7b.yaml",
            "--results",
            "none",
            "--markdown",
        ],
        capture_output=True,
        text=True,
        env=snakemake_env(),
        cwd=REPO,
        check=True,
    ).stdout.strip()
    assert generated in (REPO / "docs" / "cluster.md").read_text()


def test_a_broken_overlay_is_named_with_its_line_not_a_traceback(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("dpo:\n  beta: [0.1\n")
    result = plan("config/ambersafe-7b.yaml", broken)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: {broken}" in result.stderr and "line 3" in result.stderr, result.stderr
