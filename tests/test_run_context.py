"""Every output says which code and settings made it: commit, dirty flag, diff and config hash."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from amber_repro.provenance.git_tree import tree_state
from amber_repro.provenance.run_context import (
    RUN_ENV,
    config_sha256,
    git_state,
    run_context,
    run_context_env,
)

RECORDS = [
    "results/raw/pku-saferlhf/source.json",
    "results/ambersafe/data/manifest.json",
    "results/base_model/amber_repro.json",
    "results/ambersafe/sft/amber_repro.json",
    "results/ambersafe/ref_logps/train.json",
    "results/ambersafe/ref_logps/test.json",
    "results/ambersafe/dpo/amber_repro.json",
    "results/ambersafe/eval.json",
]


def git(repo, *args: str) -> bytes:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(command, check=True, capture_output=True).stdout


def test_git_state_names_the_commit_and_whether_the_tree_differs(tmp_path):
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None, "git_diff_sha256": None}
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "HEAD").decode().strip()
    assert git_state(tmp_path) == {"git_commit": head, "git_dirty": False, "git_diff_sha256": None}

    (tmp_path / "code.py").write_text("x = 2\n")
    diff = git(tmp_path, "diff", "HEAD", "--binary")
    state = git_state(tmp_path)
    assert state["git_dirty"] is True
    assert state["git_diff_sha256"] == hashlib.sha256(diff).hexdigest()

    git(tmp_path, "checkout", "--", "code.py")
    (tmp_path / "new_module.py").write_text("y = 1\n")  # untracked code changes the run too
    untracked = git_state(tmp_path)
    assert untracked["git_dirty"] is True and untracked["git_diff_sha256"] is not None
    # ... and its contents are part of the hash: an untracked file edited after a run is a
    # different tree (which `git diff HEAD` alone would not show).
    (tmp_path / "new_module.py").write_text("y = 2\n")
    edited = git_state(tmp_path)
    assert edited["git_diff_sha256"] not in (None, untracked["git_diff_sha256"])
    # The archive names the tree with the same hash the stages recorded.
    assert tree_state(tmp_path)["diff_sha256"] == edited["git_diff_sha256"]
    assert git(tmp_path, "status", "--porcelain") == b"?? new_module.py\n"  # index untouched


def test_the_config_hash_is_of_the_canonical_json():
    config = {"dpo": {"beta": 0.1, "loss": "sigmoid"}, "preset": "embedded"}
    reordered = {"preset": "embedded", "dpo": {"loss": "sigmoid", "beta": 0.1}}
    assert config_sha256(config) == config_sha256(reordered)
    canonical = b'{"dpo":{"beta":0.1,"loss":"sigmoid"},"preset":"embedded"}'
    assert config_sha256(config) == hashlib.sha256(canonical).hexdigest()
    assert config_sha256({**config, "dpo": {"beta": 0.2, "loss": "sigmoid"}}) != config_sha256(
        config
    )


def test_a_job_reads_the_run_context_snakemake_hands_it(monkeypatch):
    for name, value in run_context_env({"preset": "embedded"}).items():
        monkeypatch.setenv(name, value)
    context = run_context()
    assert set(context) == set(RUN_ENV)
    assert context["config_sha256"] == config_sha256({"preset": "embedded"})


def test_every_stage_record_carries_the_commit_and_config_hash(pipeline):
    expected = config_sha256(pipeline.config)
    for name in RECORDS:
        record = json.loads((pipeline.path / name).read_text())
        assert record["run"]["config_sha256"] == expected, name
        # The pipeline's copy of the workflow is no git checkout: no commit to claim.
        assert record["run"]["git_commit"] is None and record["run"]["git_dirty"] is None, name
        assert len(record["run"]["lock_sha256"]) == 64, name


@pytest.mark.parametrize(
    ("deterministic", "tf32", "expected"),
    [
        # The recipe: TF32 matmuls and convolutions, as the reference sets them at import.
        (False, True, ["False", "True", "True", "False", "unset"]),
        (False, False, ["False", "False", "False", "False", "unset"]),
        # Deterministic wins over tf32: deterministic kernels, full float32.
        (True, True, ["True", "False", "False", "False", ":4096:8"]),
    ],
)
def test_set_kernels_sets_torchs_switches_and_the_record_reads_them(deterministic, tf32, expected):
    """In a fresh process each (torch starts with cudnn TF32 on, matmul TF32 off)."""
    script = (
        "import os, json, torch; from amber_repro.training.runtime import set_kernels; "
        "from amber_repro.provenance.run_context import kernel_settings; "
        f"set_kernels({deterministic}, {tf32}); "
        "print(torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32,"
        " torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,"
        " os.environ.get('CUBLAS_WORKSPACE_CONFIG', 'unset')); "
        "print(json.dumps(kernel_settings()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    lines = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout.splitlines()
    assert lines[0].split() == expected
    assert json.loads(lines[1]) == {
        "tf32_matmul": expected[1] == "True",
        "tf32_cudnn": expected[2] == "True",
        "deterministic": expected[0] == "True",
    }
