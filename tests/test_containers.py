"""Software environments: the Apptainer image of the GPU steps, the conda environments, and how the
workflow hands its GPU jobs to Apptainer.

Apptainer is not installed where these tests run, so nothing here builds or runs the image. The
definition is checked statically against requirements.lock; the workflow's side of the contract (which
jobs go through `apptainer exec`, with which image and arguments, and how `apptainer build` is called)
is checked against a stand-in `apptainer` (tests/fake_apptainer.py) that records its arguments and runs
the job's command on the host.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import yaml

import amber_repro
from amber_repro.__main__ import STAGES
from amber_repro.configuration import config_errors
from amber_repro.provenance import sha256_file as sha256
from conftest import REPO, Workdir, fake_apptainer, scheduled_jobs
from fake_apptainer import binds, definition_sections, parse_command

DEFINITION = REPO / "containers" / "amber-repro.def"
LOCK = REPO / "requirements.lock"
PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
GPU_RULES = {"sft", "ref_logps", "dpo", "evaluate", "generate"}
# The CLI stage each rule runs (`... -m amber_repro <stage> ...`), to tell the jobs apart in the calls.
RULE_STAGES = {"sft": "sft", "ref_logps": "ref-logps", "dpo": "dpo", "evaluate": "eval", "generate": "generate",
               "synthesize_data": "synthesize", "filter_pairs": "filter", "build_tiny_model": "base-model",
               "report_figures": "plots"}
RULE_TARGETS = {
    "synthesize_data": "results/raw/pku-saferlhf/source.json",
    "filter_pairs": "results/ambersafe/data/manifest.json",
    "build_tiny_model": "results/base_model",
    "sft": "results/ambersafe/sft",
    "ref_logps": "results/ambersafe/ref_logps/test.parquet",
    "dpo": "results/ambersafe/dpo",
    "evaluate": "results/ambersafe/eval.json",
    "generate": "results/ambersafe/generations.md",
    "report_figures": "results/ambersafe/report/eval_table.html",
}
REGISTRY_IMAGE = "docker://registry.example.org/amber-repro@sha256:" + "0" * 64
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^=\s;@]+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    bad = [line for line in lines if not PIN.match(line)]
    assert not bad, f"requirements.lock lines that are not name==version: {bad}"
    return {canonical(PIN.match(line).group(1)): PIN.match(line).group(2) for line in lines}


class Definition:
    """containers/amber-repro.def: header keywords, sections, %arguments, %labels, %post variables."""

    def __init__(self):
        self.text = DEFINITION.read_text()
        self.header = {}
        for line in self.text.split("\n%", 1)[0].splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                self.header[key.strip()] = value.strip()
        self.sections = definition_sections(self.text)
        self.arguments = dict(line.strip().split("=", 1) for line in self.section("arguments"))
        self.labels = dict(line.split(None, 1) for line in self.section("labels"))
        self.files = [tuple(line.split()) for line in self.section("files")]
        post = [line.strip() for line in self.sections["post"]]
        # %post's plain assignments (NAME=value, NAME="value"), expanded; a command substitution is
        # kept as written and not expanded into the commands.
        self.post_vars, plain = {}, {}
        for line in post:
            match = re.match(r"^([A-Z_]+)=(.*)$", line)
            if match:
                value = match.group(2)
                value = value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value
                self.post_vars[match.group(1)] = value = self.expand(value, plain)
                if "$(" not in value:
                    plain[match.group(1)] = value
        self.post = [self.expand(line, plain) for line in post if line and not line.startswith("#")]

    def section(self, name: str) -> list[str]:
        return [line.strip() for line in self.sections.get(name, []) if line.strip()]

    def expand(self, text: str, variables: dict[str, str]) -> str:
        """$VAR / ${VAR} of the given %post assignments, and {{ NAME }} of %arguments defaults."""
        text = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m.group(1), m.group(0)), text)
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: self.arguments.get(m.group(1), m.group(0)), text)


# --- the definition ------------------------------------------------------------------------------


def test_definition_pins_the_base_image_by_digest_and_names_its_tag():
    definition = Definition()
    assert definition.header["Bootstrap"] == "docker"
    # Apptainer (containers/image) refuses `name:tag@digest`, so the digest alone is pulled ...
    base = re.fullmatch(r"pytorch/pytorch@sha256:([0-9a-f]{64})", definition.header["From"])
    assert base, definition.header["From"]
    # ... and the tag it was published for is recorded beside it, in the labels.
    assert definition.labels["org.opencontainers.image.base.digest"] == f"sha256:{base.group(1)}"
    tag = re.fullmatch(r"docker\.io/pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+)\.(\d+)-cudnn\d+-runtime",
                       definition.labels["org.opencontainers.image.base.name"])
    assert tag, definition.labels["org.opencontainers.image.base.name"]
    # The base's torch release is the lock's, and torch comes from the index of the base's CUDA.
    assert tag.group(1) == lock_pins()["torch"]
    assert definition.arguments["TORCH_CUDA"] == f"cu{tag.group(2)}{tag.group(3)}"
    assert definition.post_vars["TORCH_INDEX"] == f"https://download.pytorch.org/whl/cu{tag.group(2)}{tag.group(3)}"


def test_definition_installs_exactly_the_lock():
    definition = Definition()
    pins = lock_pins()
    # What %files copies in, sources relative to the repository root (where the build runs).
    assert ("requirements.lock", "/opt/amber-repro/requirements.lock") in definition.files
    assert ("pyproject.toml", "/opt/amber-repro/src/pyproject.toml") in definition.files
    assert ("amber_repro", "/opt/amber-repro/src/amber_repro") in definition.files
    assert ("containers/check_environment.py", "/opt/amber-repro/check_environment.py") in definition.files
    assert all((REPO / source).exists() for source, _ in definition.files), definition.files

    pip = "/opt/amber-repro/venv/bin/python -m pip install"
    assert f'{pip} --no-deps -r "/opt/amber-repro/requirements.lock"' in definition.post
    assert f'{pip} --no-deps "/opt/amber-repro/src"' in definition.post
    # torch: the lock's version, read from the lock, from the CUDA index; nothing else from that index.
    assert definition.post_vars["TORCH_VERSION"] == """$(sed -n 's/^torch==//p' "/opt/amber-repro/requirements.lock")"""
    index_installs = [line for line in definition.post if "--index-url" in line]
    assert index_installs and all(line.endswith('"torch==$TORCH_VERSION"') for line in index_installs)
    # The build fails unless the environment is the lock (torch as its CUDA build), and consistent.
    assert ('"/opt/amber-repro/venv/bin/python" "/opt/amber-repro/check_environment.py" '
            f'"/opt/amber-repro/requirements.lock" --torch-local "{definition.arguments["TORCH_CUDA"]}"'
            in definition.post)
    assert "/opt/amber-repro/venv/bin/python -m pip check" in definition.post
    # CPython 3.11, as the lock and pyproject require; the conda environments say the same.
    assert re.fullmatch(r"3\.11\.\d+", definition.arguments["PYTHON_VERSION"])
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    # Any version the definition names for a locked package (text or comments) is the lock's.
    for name, version in re.findall(r"\b([A-Za-z][A-Za-z0-9._-]*)==(\d[^\s\"'+]*)", definition.text):
        if canonical(name) in pins:
            assert version.rstrip(".,)") == pins[canonical(name)], f"{name}=={version} in the definition"


def test_definition_labels_environment_test_and_runscript():
    definition = Definition()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    version = amber_repro.__version__
    assert version == pyproject["version"]
    assert definition.labels["org.amber-repro.version"] == version
    assert definition.labels["org.opencontainers.image.version"] == version
    # The lock's hash: a build argument with no default, checked against the lock copied in.
    assert definition.labels["org.amber-repro.lock-sha256"] == "{{ LOCK_SHA256 }}"
    assert "LOCK_SHA256" not in definition.arguments
    assert 'echo "{{ LOCK_SHA256 }}  /opt/amber-repro/requirements.lock" | sha256sum -c -' in definition.post

    environment = dict(re.findall(r"^export (\w+)=(.*)$", "\n".join(definition.section("environment")), re.M))
    assert environment["HF_HOME"] == "/cache/huggingface"
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONNOUSERSITE"):
        assert environment[name] == "1", name
    assert environment["PATH"] == '"/opt/amber-repro/venv/bin:$PATH"'
    unset = [line for line in definition.section("environment") if line.startswith("unset ")]
    assert unset and "HF_TOKEN" in unset[0].split()

    # %test calls the CLI; the same calls work on this checkout.
    tests = definition.section("test")
    cli_calls = [line for line in tests if line.startswith("python -m amber_repro")]
    assert any(line.startswith("python -m amber_repro --help") for line in cli_calls), tests
    stage_calls = [line for line in cli_calls if line.split()[3] in STAGES]
    assert stage_calls, tests
    for line in cli_calls:
        command = shlex.split(line.split(">")[0])
        subprocess.run([sys.executable, *command[1:]], check=True, capture_output=True, cwd=REPO, timeout=120)
    assert definition.section("runscript") == ['exec python -m amber_repro "$@"']


def test_no_secrets_in_the_definition_or_the_settings():
    files = [DEFINITION, REPO / "containers" / "check_environment.py", REPO / "rules" / "container.smk",
             REPO / "profiles" / "slurm" / "config.v8+.yaml", *sorted((REPO / "config").glob("*.yaml"))]
    for path in files:
        text = path.read_text()
        assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", text), f"a Hugging Face token in {path}"
        assert not re.search(r"(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|HF_API_TOKEN)\s*[=:]\s*\S", text), path
        assert not re.search(r"(?i)\b(password|passwd|secret|api[_-]?key|access[_-]?token)\s*[=:]", text), path
        assert not re.search(r"(?i)--(password|docker-password|passphrase)", text), path


# --- the environment check and the conda environments --------------------------------------------


def test_the_environment_check_accepts_the_lock_and_names_every_difference(tmp_path):
    """containers/check_environment.py, which fails the image build on any drift from the lock, run
    here on the project's own environment (the lock, torch as its CPU build)."""
    check = [sys.executable, str(REPO / "containers" / "check_environment.py")]
    extras = ["--allow", "setuptools", "--allow", "wheel"]  # what `python -m venv` adds here
    ok = subprocess.run([*check, str(LOCK), "--torch-local", "cpu", *extras], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"{len(lock_pins())} packages" in ok.stdout

    drifted = tmp_path / "requirements.lock"
    text = LOCK.read_text().replace(f"numpy=={lock_pins()['numpy']}\n", "numpy==1.0.0\n")
    drifted.write_text(text + "not-installed-package==1.2.3\n")
    bad = subprocess.run([*check, str(drifted), "--torch-local", "cpu"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"numpy: locked 1.0.0, installed {lock_pins()['numpy']}" in bad.stderr
    assert "not-installed-package: locked 1.2.3, not installed" in bad.stderr
    assert "setuptools: installed" in bad.stderr and "not in the lock" in bad.stderr
    # torch must be the lock's release built for the named target (the image: the CUDA build).
    cuda = subprocess.run([*check, str(LOCK), "--torch-local", "cu126", *extras], capture_output=True, text=True)
    assert cuda.returncode == 1 and f"torch: locked {lock_pins()['torch']}+cu126, installed" in cuda.stderr


def test_conda_environments_pin_the_lock_versions():
    pins = lock_pins()
    spec = importlib.util.spec_from_file_location("render", REPO / "envs" / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    python = Definition().arguments["PYTHON_VERSION"].rsplit(".", 1)[0]
    for path in sorted((REPO / "envs").glob("*.yaml")):
        env = yaml.safe_load(path.read_text())
        conda = [item for item in env["dependencies"] if isinstance(item, str)]
        assert f"python={python}" in conda, (path, conda)
        pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
        assert pip, path
        for requirement in pip:
            match = PIN.match(requirement)
            assert match, f"{path.name}: {requirement} is not name==version"
            assert pins.get(canonical(match.group(1))) == match.group(2), f"{path.name}: {requirement}"
        # And the files are what envs/render.py writes from the lock today.
        assert path.read_text() == render.render(path.stem, pins), f"{path.name} differs from envs/render.py"


# --- configuration and profile ---------------------------------------------------------------------


def test_the_image_setting_is_validated():
    schema = REPO / "config" / "schema.yaml"
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name in ("config.yaml", "ambersafe-7b.yaml"):
        shipped = yaml.safe_load((REPO / "config" / name).read_text())
        assert shipped["container"]["image"] == "results/containers/amber-repro.sif", name
    for image in ("results/containers/amber-repro.sif", "/shared/images/amber-repro.sif", REGISTRY_IMAGE,
                  "oras://ghcr.io/example/amber-repro@sha256:" + "1" * 64, "library://example/amber-repro:0.1.0"):
        config["container"] = {"image": image}
        assert config_errors(config, schema) == [], image
    for image in ("dockr://pytorch/pytorch", "results/my image.sif", ""):
        config["container"] = {"image": image}
        errors = config_errors(config, schema)
        assert errors and all(error.startswith("container.image: ") for error in errors), (image, errors)
    config["container"] = {"image": "x.sif", "binds": ["results"]}
    assert config_errors(config, schema) == ["container.binds: unknown key (allowed here: image)"]


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
        cache = yaml.safe_load((REPO / "config" / name).read_text())["eval"]["datasets_cache"]
        cache = cache if os.path.isabs(cache) else f"$PWD/{cache}"
        assert any(cache == source or cache.startswith(source + "/") for source, _ in profile_binds()), (name, cache)

    # The profile switches Apptainer on: Snakemake checks for it even in a dry run; without the profile
    # (as `make run` runs) Apptainer is never called.
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

# The embedded default, smaller: these tests are about which jobs reach Apptainer, not about results.
SMALL = {("data", "synthetic", "train_rows"): 300, ("data", "synthetic", "test_rows"): 60,
         ("dpo", "eval_examples"): 32, ("dpo", "eval_every"): 1000, ("eval", "bootstrap_iters"): 10,
         ("eval", "limit"): 16, ("eval", "generations", "prompts"): 2, ("eval", "generations", "max_new_tokens"): 4}


@pytest.fixture(scope="module")
def apptainer_run(tmp_path_factory):
    """The whole DAG (rule all) with --sdm apptainer and the slurm profile's apptainer-args, through the
    stand-in `apptainer`; the image is a placeholder file at the configured path."""
    root = tmp_path_factory.mktemp("apptainer")
    workdir = Workdir(root / "work")
    config = workdir.config
    for keys, value in SMALL.items():
        node = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    workdir.write_config(config)
    image = workdir.path / config["container"]["image"]
    image.parent.mkdir(parents=True)
    image.write_text("placeholder: the stand-in only checks that the image exists\n")
    calls_file = root / "calls.jsonl"
    fake_apptainer(root / "bin", calls_file)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
        result = workdir.snakemake("--sdm", "apptainer", "--apptainer-args", PROFILE["apptainer-args"])
    return workdir, [json.loads(line) for line in calls_file.read_text().splitlines()], result


def test_gpu_jobs_and_only_those_run_through_apptainer_exec(apptainer_run):
    """What the workflow passes to Apptainer (not Apptainer itself): each GPU job is one
    `apptainer exec` of the configured image with --nv and the profile's binds, run in the working
    directory; CPU-only jobs run directly. The stand-in ran each command on the host, so the DAG
    completed."""
    workdir, calls, result = apptainer_run
    for target in ("results/ambersafe/eval.json", "results/ambersafe/generations.md",
                   "results/ambersafe/report/eval_table.html", "results/ambersafe/data/manifest.json"):
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
        assert (str(workdir.path / "results"), str(workdir.path / "results")) in binds(options), options
        assert ("--home", str(workdir.path)) in options, options
        assert call["cwd"] == str(workdir.path)
        assert command[:2] == ["bash", "-c"], command
    gpu_stages = {RULE_STAGES[rule] for rule in GPU_RULES}
    assert stages == Counter({stage: (2 if stage == "ref-logps" else 1) for stage in gpu_stages}), stages
    assert result.stderr.count("Activating singularity image") == len(execs)


def test_a_dry_run_plans_the_image_for_gpu_jobs_only(apptainer_run, tmp_path):
    """A dry run prints each job's own shell command, not the `apptainer exec` line around it (Snakemake
    wraps the command only when the job runs). What it does report is the image it would pull for the
    planned jobs: with a registry image, one job of each rule at a time shows which rules need it."""
    workdir, _, _ = apptainer_run
    registry = tmp_path / "registry-image.yaml"
    registry.write_text(yaml.safe_dump({"container": {"image": REGISTRY_IMAGE}}))
    notice = f"Singularity image {REGISTRY_IMAGE} will be pulled."
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{workdir.path.parent / 'bin'}{os.pathsep}{os.environ['PATH']}")
        for rule, target in RULE_TARGETS.items():
            result = workdir.snakemake("-n", "--sdm", "apptainer", "--configfile", str(registry),
                                       "--forcerun", rule, "--allowed-rules", rule, "--rerun-triggers", "mtime",
                                       "--until", rule, "--", target)
            assert scheduled_jobs(result.stdout) == {rule: 1}, (rule, result.stdout[-2000:])
            assert (notice in result.stdout + result.stderr) == (rule in GPU_RULES), rule
        # Without --sdm apptainer the image is not used at all.
        plain = workdir.snakemake("-n", "--configfile", str(registry), "--forcerun", "sft", "--allowed-rules", "sft",
                                  "--rerun-triggers", "mtime", "--until", "sft", "--", RULE_TARGETS["sft"])
        assert scheduled_jobs(plain.stdout) == {"sft": 1} and notice not in plain.stdout + plain.stderr


def test_build_container_builds_from_the_repository_root_and_records_hashes(tmp_path):
    """What rule build_container passes to `apptainer build`: the definition, from the repository root
    (the stand-in checks that every %files source and build variable resolves there), with the lock's
    sha256 as LOCK_SHA256; then a `sha256sum -c` record. `rule all` does not build the image."""
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
    recorded = {os.path.normpath(workdir.path / line.split("  ", 1)[1]): line.split("  ", 1)[0] for line in record}
    assert recorded == {str(workdir.path / target): sha256(workdir.path / target),
                        str(DEFINITION): sha256(DEFINITION), str(LOCK): sha256(LOCK)}
