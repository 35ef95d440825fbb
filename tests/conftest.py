"""Shared test helpers: a scratch Snakemake working directory and a runner for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from processes import run

from amber_repro.config.load import resolve

REPO = Path(__file__).resolve().parents[1]

# Markers from what a test uses (registered in pyproject.toml); `make test-fast` leaves them out.
SLURM_FIXTURES = {"cluster"}  # a SLURM cluster on localhost
WORKFLOW_FIXTURES = {"pipeline", "chat_pipeline", "workdir"}  # Snakemake runs or dry-runs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLURM_FIXTURES:
            item.add_marker(pytest.mark.slurm)
        if used & WORKFLOW_FIXTURES:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def checkpoint_key(tmp_path_factory):
    """Every run the tests start (subprocesses inherit it) signs checkpoints with a key in a
    temporary folder, not ~/.config/amber-repro/checkpoint.key."""
    path = tmp_path_factory.mktemp("checkpoint-key") / "checkpoint.key"
    saved = os.environ.get("AMBER_REPRO_KEY_FILE")
    os.environ["AMBER_REPRO_KEY_FILE"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("AMBER_REPRO_KEY_FILE")
    else:
        os.environ["AMBER_REPRO_KEY_FILE"] = saved


def snakemake_env() -> dict[str, str]:
    """The environment jobs run in: this interpreter's bin first, offline, one thread per job."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


# What a copy of the workflow needs to run on its own (the package included, so a test may edit it).
WORKFLOW_FILES = [
    "Snakefile",
    "rules",
    "amber_repro",
    "config",
    "envs",
    "containers",
    "profiles",
    "pyproject.toml",
    "requirements.lock",
]


class Workdir:
    """A deployed copy of the workflow's config in a temporary folder, as a user would have it.

    With `whole_workflow`, the Snakefile, rules and package are copied too and the copy runs: a test
    may then edit the package's files without touching the checkout.
    """

    def __init__(self, path: Path, whole_workflow: bool = False):
        self.path = path
        self.workflow = path if whole_workflow else REPO
        for name in WORKFLOW_FILES if whole_workflow else ["config"]:
            if (REPO / name).is_dir():
                shutil.copytree(
                    REPO / name, path / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(REPO / name, path / name)

    @classmethod
    def existing(cls, path: Path) -> Workdir:
        """A working directory that already holds a whole workflow (a moved or restored project)."""
        workdir = cls.__new__(cls)
        workdir.path = workdir.workflow = path
        return workdir

    @property
    def config(self) -> dict:
        """The resolved settings a run uses (preset and config.yaml applied), as a plain dict."""
        raw = yaml.safe_load((self.path / "config" / "config.yaml").read_text())
        return resolve(raw, REPO / "config" / "presets").model_dump(mode="json")

    def write_config(self, config: dict) -> None:
        (self.path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def snakemake(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Snakemake on this working directory, from it (as users run it: relative --configfile
        paths resolve there), with no time limit of its own (tests/processes.py)."""
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(self.workflow / "Snakefile"),
            "--directory",
            str(self.path),
            "--cores",
            "2",
            *args,
        ]
        result = run(command, env=snakemake_env(), cwd=self.path, snakemake_dir=self.path)
        if check and result.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture
def workdir(tmp_path: Path) -> Workdir:
    return Workdir(tmp_path)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Workdir:
    """The embedded-default DAG built once, through Snakemake, for every test that reads its
    outputs."""
    built = Workdir(tmp_path_factory.mktemp("pipeline"), whole_workflow=True)
    built.snakemake()  # rule all: eval.json, generations, report figures
    return built


def scheduled_jobs(dry_run_stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: {rule: count}; empty when nothing is to be done."""
    if "Nothing to be done" in dry_run_stdout:
        return {}
    table = dry_run_stdout.split("Job stats:")[1].splitlines()[3:]
    jobs = {}
    for line in table:
        name, _, count = line.strip().rpartition(" ")
        if name.strip() == "total" or not line.strip():
            break
        jobs[name.strip()] = int(count)
    return jobs


def fake_apptainer(bin_dir: Path, calls: Path) -> Path:
    """Write a stand-in `apptainer` (tests/fake_apptainer.py) into bin_dir; it appends each call as
    a JSON line to `calls` and runs `exec`'s command on the host. Put bin_dir first on PATH to use
    it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "apptainer"
    script.write_text(
        f"#!/bin/sh\nFAKE_APPTAINER_CALLS='{calls}' exec '{sys.executable}' "
        f"'{Path(__file__).with_name('fake_apptainer.py')}' \"$@\"\n"
    )
    script.chmod(0o755)
    return script
