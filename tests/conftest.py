"""Shared test helpers: a scratch Snakemake working directory and a runner for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake_env() -> dict[str, str]:
    """The environment jobs run in: this interpreter's bin first, offline, one thread per job."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


class Workdir:
    """A deployed copy of the workflow's config in a temporary folder, as a user would have it."""

    def __init__(self, path: Path):
        self.path = path
        shutil.copytree(REPO / "config", path / "config")

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.path / "config" / "config.yaml").read_text())

    def write_config(self, config: dict) -> None:
        (self.path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def snakemake(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                   "--directory", str(self.path), "--cores", "2", *args]
        result = subprocess.run(command, capture_output=True, text=True, env=snakemake_env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def workdir(tmp_path: Path) -> Workdir:
    return Workdir(tmp_path)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Workdir:
    """The embedded-default DAG built once, through Snakemake, for every test that reads its outputs."""
    built = Workdir(tmp_path_factory.mktemp("pipeline"))
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
    """Write a stand-in `apptainer` (tests/fake_apptainer.py) into bin_dir; it appends each call as a JSON
    line to `calls` and runs `exec`'s command on the host. Put bin_dir first on PATH to use it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "apptainer"
    script.write_text(f"#!/bin/sh\nFAKE_APPTAINER_CALLS='{calls}' exec '{sys.executable}' "
                      f"'{Path(__file__).with_name('fake_apptainer.py')}' \"$@\"\n")
    script.chmod(0o755)
    return script
