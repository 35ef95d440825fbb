"""Shared test helpers: a scratch Snakemake working directory and a runner for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import yaml
from processes import run
from shared_builds import SharedBuild, quick_config, shared_root

from amber_repro.config.load import resolve

REPO = Path(__file__).resolve().parents[1]

# Markers from what a test uses (registered in pyproject.toml); `make test-fast` leaves them out.
SLURM_FIXTURES = {"cluster"}  # a SLURM cluster on localhost
# Snakemake runs or dry-runs
WORKFLOW_FIXTURES = {"pipeline", "quick_pipeline", "chat_pipeline", "workdir"}


# The order files start in (pytest-xdist hands them out in collection order): the longest first,
# so that no worker is left with a long file at the end. SLURM tests, which mostly wait for the
# scheduler, overlap with the shared builds (tests/shared_builds.py); files that need a shared build
# come after those that do not, so that it is ready when they start.
START_ORDER = ("slurm", "slow", "integration")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLURM_FIXTURES:
            item.add_marker(pytest.mark.slurm)
        if used & WORKFLOW_FIXTURES:
            item.add_marker(pytest.mark.integration)
    kind: dict[Path, int] = {}  # a file's first START_ORDER mark
    waits: dict[Path, bool] = {}  # whether any of its tests needs a shared build
    for item in items:
        marks = [n for n, mark in enumerate(START_ORDER) if item.get_closest_marker(mark)]
        kind[item.path] = min(kind.get(item.path, len(START_ORDER)), *marks, len(START_ORDER))
        needs = bool(SHARED_BUILDS.keys() & set(getattr(item, "fixturenames", ())))
        waits[item.path] = waits.get(item.path, False) or needs
    # Stable: a file's own order is kept.
    items.sort(key=lambda item: (kind[item.path] > 0, waits[item.path], kind[item.path]))


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


def git(repo: Path, *args: str) -> str:
    """git in `repo`, with an author of its own (the machine may have none configured)."""
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    return subprocess.run([*command, *args], check=True, capture_output=True, text=True).stdout


def commit_all(repo: Path, message: str) -> None:
    """Make `repo` a git checkout whose one commit holds every file there (a user's clone)."""
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


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
    may then edit the package's files without touching the checkout. `config`, if given, replaces
    config/config.yaml (e.g. shared_builds.quick_config()).
    """

    def __init__(self, path: Path, whole_workflow: bool = False, config: dict | None = None):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.workflow = path if whole_workflow else REPO
        for name in WORKFLOW_FILES if whole_workflow else ["config"]:
            if (REPO / name).is_dir():
                shutil.copytree(
                    REPO / name, path / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(REPO / name, path / name)
        if config is not None:
            self.write_config(config)

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

    def command(self, *args: str) -> list[str]:
        """The Snakemake command line for this working directory."""
        return [
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

    def snakemake(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Snakemake on this working directory, from it (as users run it: relative --configfile
        paths resolve there), with no time limit of its own (tests/processes.py)."""
        command = self.command(*args)
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


# The finished runs built once per session for all workers (tests/shared_builds.py): fixture name ->
# the config.yaml it runs (None: the repository's own, the embedded default).
SHARED_BUILDS = {"pipeline": None, "quick_pipeline": quick_config()}


@pytest.fixture(scope="session")
def shared_builds(tmp_path_factory) -> dict[str, SharedBuild]:
    root = shared_root(tmp_path_factory)
    return {
        name: SharedBuild(root, name, partial(deploy_workflow, config))
        for name, config in SHARED_BUILDS.items()
    }


def deploy_workflow(config: dict | None, path: Path) -> None:
    Workdir(path, whole_workflow=True, config=config)


@pytest.fixture(scope="session", autouse=True)
def start_needed_builds(request, shared_builds):
    """Start, in the background, each shared build a collected test needs, before the first test
    runs: the workers run other tests meanwhile."""
    needed = {
        name
        for item in request.session.items
        for name in SHARED_BUILDS
        if name in getattr(item, "fixturenames", ())
    }
    for name in sorted(needed):
        build = shared_builds[name]
        build.start(Workdir.existing(build.path).command(), snakemake_env())
    yield
    for build in shared_builds.values():
        build.finish()


@pytest.fixture(scope="session")
def pipeline(shared_builds, tmp_path_factory) -> Workdir:
    """The embedded default's whole DAG (rule all: eval.json, generations, report figures, crate),
    built once per session: this worker's own copy, which its tests may change and restore."""
    return worker_copy(shared_builds["pipeline"], tmp_path_factory)


@pytest.fixture(scope="session")
def quick_pipeline(shared_builds, tmp_path_factory) -> Workdir:
    """The whole DAG on QUICK_SETTINGS (tests/shared_builds.py), for tests of what a run does
    rather than how well it learns: this worker's own copy."""
    return worker_copy(shared_builds["quick_pipeline"], tmp_path_factory)


def worker_copy(build: SharedBuild, tmp_path_factory) -> Workdir:
    """This worker's own copy of a finished shared build."""
    return Workdir.existing(build.copy(tmp_path_factory.mktemp(build.path.name) / "run"))


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
