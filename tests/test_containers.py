"""How the workflow hands its GPU jobs to Apptainer: the image setting, the slurm profile's
Apptainer arguments, which jobs go through `apptainer exec` with which image, and how
`apptainer build` is called.

Apptainer is not installed where these tests run: the workflow's side of the contract is checked
against a stand-in `apptainer` (tests/fake_apptainer.py) that records its arguments and runs the
job's command on the host. The definition itself is checked in tests/test_container_definition.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections import Counter

import pytest
import yaml
from conftest import REPO, Workdir, fake_apptainer, scheduled_jobs
from fake_apptainer import binds, parse_command
from shared_builds import quick_config

from amber_repro.config.jobs import JOBS
from amber_repro.config.load import config_errors, resolve
from amber_repro.provenance.hashing import sha256_file as sha256

pytestmark = pytest.mark.integration  # runs Snakemake itself

DEFINITION = REPO / "containers" / "amber-repro.def"
LOCK = REPO / "requirements.lock"
PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
# The AmberSafe GPU rules of the embedded DAG, and the CLI stage each rule runs (`... -m amber_repro
# <stage> ...`, to tell the jobs apart in the calls): both from the registry of jobs.
GPU_RULES = {job.rule for job in JOBS if job.gpu and job.part == "ambersafe"}
RULE_STAGES = {job.rule: job.stage for job in JOBS if job.stage}
RULE_TARGETS = {
    "synthesize_data": "results/raw/pku-saferlhf/source.json",
    "filter_pairs": "results/ambersafe/data/manifest.json",
    "build_tiny_model": "results/base_model",
    "sft": "results/ambersafe/sft",
    "ref_logps": "results/ambersafe/ref_logps/test.parquet",
    "dpo": "results/ambersafe/dpo",
    "evaluate": "results/ambersafe/eval/dpo.json",
    "eval_summary": "results/ambersafe/eval.json",
    "generate": "results/ambersafe/generations.md",
    "safety_answers": "results/ambersafe/safety/answers.parquet",
    "safety_judge": "results/ambersafe/safety/verdicts.json",
    "report_figures": "results/ambersafe/report/eval_table.html",
}
REGISTRY_IMAGE = "docker://registry.example.org/amber-repro@sha256:" + "0" * 64


# --- configuration and profile --------------------------------------------------------------------


def test_the_image_setting_is_validated():
    presets = REPO / "config" / "presets"
    for name in ("config.yaml", "ambersafe-7b.yaml"):
        shipped = resolve(yaml.safe_load((REPO / "config" / name).read_text()), presets)
        assert shipped.container.image == "results/containers/amber-repro.sif", name
    for image in (
        "results/containers/amber-repro.sif",
        "/shared/images/amber-repro.sif",
        REGISTRY_IMAGE,
        "oras://ghcr.io/example/amber-repro@sha256:" + "1" * 64,
        "library://example/amber-repro:0.1.0",
    ):
        assert config_errors({"container": {"image": image}}, presets) == [], image
    for image in ("dockr://pytorch/pytorch", "results/my image.sif", "", "x.sif;id", "$(id).sif"):
        errors = config_errors({"container": {"image": image}}, presets)
        assert errors and all(error.startswith("container.image: ") for error in errors), (
            image,
            errors,
        )
    assert config_errors({"container": {"image": "x.sif", "binds": ["results"]}}, presets) == [
        "container.binds: unknown key (allowed here: image)"
    ]


def profile_binds() -> list[tuple[str, str]]:
    parsed = parse_command(["exec", *shlex.split(PROFILE["apptainer-args"]), "IMAGE", "true"])
    return binds(parsed["options"])


def test_the_slurm_profile_runs_gpu_rules_in_apptainer_with_gpus_and_binds(tmp_path):
    assert PROFILE["software-deployment-method"] in ("apptainer", ["apptainer"])
    args = shlex.split(PROFILE["apptainer-args"])
    assert "--nv" in args
    assert ("$PWD/results", "$PWD/results") in profile_binds()
    # Each config's offline datasets cache is visible in the container through a bind.
    for name in ("config.yaml", "ambersafe-7b.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        cache = resolve(config, REPO / "config" / "presets").eval.datasets_cache
        cache = cache if os.path.isabs(cache) else f"$PWD/{cache}"
        assert any(
            cache == source or cache.startswith(source + "/") for source, _ in profile_binds()
        ), (name, cache)

    # The profile switches Apptainer on: Snakemake checks for it even in a dry run; without the
    # profile (as `make run` runs) Apptainer is never called.
    workdir = Workdir(tmp_path / "work")
    calls = tmp_path / "calls.jsonl"
    fake_apptainer(tmp_path / "bin", calls)
    env_path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", env_path)
        plain = workdir.snakemake("-n")
        assert not calls.exists(), calls.read_text()
        profiled = workdir.snakemake("-n", "--profile", str(REPO / "profiles" / "slurm"))
    assert "sft" in scheduled_jobs(plain.stdout) and "sft" in scheduled_jobs(profiled.stdout)
    assert [json.loads(line)["argv"] for line in calls.read_text().splitlines()] == [["--version"]]


# --- the workflow's side of the contract, through the stand-in -----------------------------------


@pytest.fixture(scope="module")
def apptainer_run(tmp_path_factory):
    """The whole DAG (rule all) with --sdm apptainer and the slurm profile's apptainer-args, through
    the stand-in `apptainer`; the image is a placeholder file at the configured path."""
    root = tmp_path_factory.mktemp("apptainer")
    # The quick settings: these tests are about which jobs reach Apptainer, not about results.
    workdir = Workdir(root / "work", config=quick_config())
    config = workdir.config
    image = workdir.path / config["container"]["image"]
    image.parent.mkdir(parents=True)
    image.write_text("placeholder: the stand-in only checks that the image exists\n")
    calls_file = root / "calls.jsonl"
    fake_apptainer(root / "bin", calls_file)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
        result = workdir.snakemake(
            "--sdm", "apptainer", "--apptainer-args", PROFILE["apptainer-args"]
        )
    return workdir, [json.loads(line) for line in calls_file.read_text().splitlines()], result


def test_gpu_jobs_and_only_those_run_through_apptainer_exec(apptainer_run):
    """What the workflow passes to Apptainer (not Apptainer itself): each GPU job is one
    `apptainer exec` of the configured image with --nv and the profile's binds, run in the working
    directory; CPU-only jobs run directly. The stand-in ran each command on the host, so the DAG
    completed."""
    workdir, calls, result = apptainer_run
    for target in (
        "results/ambersafe/eval.json",
        "results/ambersafe/generations.md",
        "results/ambersafe/report/eval_table.html",
        "results/ambersafe/data/manifest.json",
    ):
        assert (workdir.path / target).exists(), target
    assert calls[0]["argv"] == ["--version"]
    execs = calls[1:]
    assert all(call["argv"][0] == "exec" for call in execs), [call["argv"][:2] for call in execs]

    stages = Counter()
    for call in execs:
        parsed = parse_command(call["argv"])
        options = parsed["options"]
        image, *command = parsed["positional"]
        stage = re.search(r"-m amber_repro ([a-z-]+)", command[-1]).group(1)
        stages[stage] += 1
        assert image == workdir.config["container"]["image"], image
        assert ("--nv", None) in options, options
        assert (str(workdir.path / "results"), str(workdir.path / "results")) in binds(options), (
            options
        )
        assert ("--home", str(workdir.path)) in options, options
        assert call["cwd"] == str(workdir.path)
        assert command[:2] == ["bash", "-c"], command
    # One job per GPU rule, the evaluation one per model.
    expected = Counter({RULE_STAGES[rule]: 1 for rule in GPU_RULES})
    expected["eval"] = len(workdir.config["eval"]["models"])
    assert stages == expected, stages
    assert result.stderr.count("Activating singularity image") == len(execs)


def test_a_dry_run_plans_the_image_for_gpu_jobs_only(apptainer_run, tmp_path):
    """A dry run prints each job's own shell command, not the `apptainer exec` line around it
    (Snakemake wraps the command only when the job runs). What it does report is the image it would
    pull for the planned jobs: with a registry image, one job of each rule at a time shows which
    rules need it."""
    workdir, _, _ = apptainer_run
    registry = tmp_path / "registry-image.yaml"
    registry.write_text(yaml.safe_dump({"container": {"image": REGISTRY_IMAGE}}))
    notice = f"Singularity image {REGISTRY_IMAGE} will be pulled."
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{workdir.path.parent / 'bin'}{os.pathsep}{os.environ['PATH']}")
        for rule, target in RULE_TARGETS.items():
            result = workdir.snakemake(
                "-n",
                "--sdm",
                "apptainer",
                "--configfile",
                str(registry),
                "--forcerun",
                rule,
                "--allowed-rules",
                rule,
                "--rerun-triggers",
                "mtime",
                "--until",
                rule,
                "--",
                target,
            )
            assert scheduled_jobs(result.stdout) == {rule: 1}, (rule, result.stdout[-2000:])
            assert (notice in result.stdout + result.stderr) == (rule in GPU_RULES), rule
        # Without --sdm apptainer the image is not used at all.
        plain = workdir.snakemake(
            "-n",
            "--configfile",
            str(registry),
            "--forcerun",
            "sft",
            "--allowed-rules",
            "sft",
            "--rerun-triggers",
            "mtime",
            "--until",
            "sft",
            "--",
            RULE_TARGETS["sft"],
        )
        assert (
            scheduled_jobs(plain.stdout) == {"sft": 1} and notice not in plain.stdout + plain.stderr
        )


def test_a_rebuilt_image_reruns_the_jobs_that_ran_in_it(apptainer_run):
    """The local image is an input of every GPU rule: replacing the .sif (same path, new bytes)
    reruns those jobs and what follows; the CPU-only jobs stay."""
    workdir, _, _ = apptainer_run
    image = workdir.path / workdir.config["container"]["image"]
    original, stat = image.read_bytes(), image.stat()
    apptainer = ("--sdm", "apptainer", "--apptainer-args", PROFILE["apptainer-args"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{workdir.path.parent / 'bin'}{os.pathsep}{os.environ['PATH']}")
        assert scheduled_jobs(workdir.snakemake("-n", *apptainer).stdout) == {}
        try:
            image.write_bytes(original + b"rebuilt\n")
            jobs = scheduled_jobs(workdir.snakemake("-n", *apptainer).stdout)
        finally:
            image.write_bytes(original)
            os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs == {
        "sft": 1,
        "ref_logps": 1,
        "dpo": 1,
        "evaluate": 3,
        "eval_summary": 1,
        "generate": 1,
        "safety_answers": 1,
        "safety_judge": 1,
        "report_figures": 1,
        "provenance": 1,
        "all": 1,
    }


def test_build_container_builds_from_the_repository_root_and_records_hashes(tmp_path):
    """What rule build_container passes to `apptainer build`: the definition, from the repository
    root (the stand-in checks that every %files source and build variable resolves there), with the
    lock's sha256 as LOCK_SHA256; then a `sha256sum -c` record. `rule all` does not build the
    image."""
    workdir = Workdir(tmp_path / "work")
    calls_file = tmp_path / "calls.jsonl"
    fake_apptainer(tmp_path / "bin", calls_file)
    target = "results/containers/amber-repro.sif"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
        planned = workdir.snakemake("-n")
        assert "build_container" not in scheduled_jobs(planned.stdout)
        workdir.snakemake(target)
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    assert len(calls) == 1 and calls[0]["cwd"] == str(REPO), calls
    parsed = parse_command(calls[0]["argv"])
    assert parsed["command"] == "build"
    assert parsed["positional"] == [str(workdir.path / target), "containers/amber-repro.def"]
    assert ("--build-arg", f"LOCK_SHA256={sha256(LOCK)}") in parsed["options"]

    record = (workdir.path / f"{target}.sha256").read_text().splitlines()
    recorded = {
        os.path.normpath(workdir.path / line.split("  ", 1)[1]): line.split("  ", 1)[0]
        for line in record
    }
    assert recorded == {
        str(workdir.path / target): sha256(workdir.path / target),
        str(DEFINITION): sha256(DEFINITION),
        str(LOCK): sha256(LOCK),
    }
