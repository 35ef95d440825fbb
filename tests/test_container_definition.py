"""The Apptainer image's definition and the conda environments, checked statically against
requirements.lock (Apptainer is not installed where these tests run, so nothing here builds the
image; tests/test_containers.py checks how the workflow hands its GPU jobs to Apptainer).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from conftest import REPO
from fake_apptainer import definition_sections
from processes import run

import amber_repro
from amber_repro.__main__ import STAGES

DEFINITION = REPO / "containers" / "amber-repro.def"
LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^=\s;@]+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def lock_pins(lock: Path = LOCK) -> dict[str, str]:
    """The lock's pins; every pin must carry at least one sha256 (pip's --require-hashes)."""
    lines = [line.strip().removesuffix("\\").strip() for line in lock.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    bad = [line for line in lines if not (PIN.match(line) or HASH.match(line))]
    assert not bad, f"{lock.name} lines that are neither name==version nor --hash: {bad}"
    unhashed = [
        line
        for line, following in zip(lines, [*lines[1:], ""], strict=True)
        if PIN.match(line) and not HASH.match(following)
    ]
    assert not unhashed, f"{lock.name} pins without a hash: {unhashed}"
    return {canonical(m.group(1)): m.group(2) for m in map(PIN.match, lines) if m}


class Definition:
    """containers/amber-repro.def: header keywords, sections, %arguments, %labels, %post
    variables."""

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
        return re.sub(
            r"\{\{\s*(\w+)\s*\}\}", lambda m: self.arguments.get(m.group(1), m.group(0)), text
        )


# --- the definition ------------------------------------------------------------------------------


def test_definition_pins_the_base_image_by_digest_and_names_its_tag():
    definition = Definition()
    assert definition.header["Bootstrap"] == "docker"
    # Apptainer (containers/image) refuses `name:tag@digest`, so the digest alone is pulled ...
    base = re.fullmatch(r"pytorch/pytorch@sha256:([0-9a-f]{64})", definition.header["From"])
    assert base, definition.header["From"]
    # ... and the tag it was published for is recorded beside it, in the labels.
    assert definition.labels["org.opencontainers.image.base.digest"] == f"sha256:{base.group(1)}"
    tag = re.fullmatch(
        r"docker\.io/pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+)\.(\d+)-cudnn\d+-runtime",
        definition.labels["org.opencontainers.image.base.name"],
    )
    assert tag, definition.labels["org.opencontainers.image.base.name"]
    # The base's torch release is the lock's, and torch comes from the index of the base's CUDA.
    assert tag.group(1) == lock_pins()["torch"]
    assert definition.arguments["TORCH_CUDA"] == f"cu{tag.group(2)}{tag.group(3)}"
    assert (
        definition.post_vars["TORCH_INDEX"]
        == f"https://download.pytorch.org/whl/cu{tag.group(2)}{tag.group(3)}"
    )


def test_definition_installs_exactly_the_lock():
    definition = Definition()
    pins = lock_pins()
    # What %files copies in, sources relative to the repository root (where the build runs).
    assert ("requirements.lock", "/opt/amber-repro/requirements.lock") in definition.files
    assert ("pyproject.toml", "/opt/amber-repro/src/pyproject.toml") in definition.files
    assert ("amber_repro", "/opt/amber-repro/src/amber_repro") in definition.files
    assert (
        "containers/check_environment.py",
        "/opt/amber-repro/check_environment.py",
    ) in definition.files
    assert all((REPO / source).exists() for source, _ in definition.files), definition.files

    pip = "/opt/amber-repro/venv/bin/python -m pip install"
    assert f'{pip} --no-deps -r "/opt/amber-repro/requirements.lock"' in definition.post
    assert f'{pip} --no-deps "/opt/amber-repro/src"' in definition.post
    # torch: the lock's version, read from the lock, from the CUDA index; nothing else from that
    # index.
    assert (
        definition.post_vars["TORCH_VERSION"]
        == """$(sed -n 's/^torch==\\([^ ]*\\).*/\\1/p' "/opt/amber-repro/requirements.lock")"""
    )
    index_installs = [line for line in definition.post if "--index-url" in line]
    assert index_installs and all(
        line.endswith('"torch==$TORCH_VERSION"') for line in index_installs
    )
    # The build fails unless the environment is the lock (torch as its CUDA build), and consistent.
    assert (
        '"/opt/amber-repro/venv/bin/python" "/opt/amber-repro/check_environment.py" '
        f'"/opt/amber-repro/requirements.lock" --torch-local "{definition.arguments["TORCH_CUDA"]}"'
        in definition.post
    )
    assert "/opt/amber-repro/venv/bin/python -m pip check" in definition.post
    # CPython 3.11, as the lock and pyproject require; the conda environments say the same.
    assert re.fullmatch(r"3\.11\.\d+", definition.arguments["PYTHON_VERSION"])
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    # Any version the definition names for a locked package (text or comments) is the lock's.
    for name, version in re.findall(
        r"\b([A-Za-z][A-Za-z0-9._-]*)==(\d[^\s\"'+]*)", definition.text
    ):
        if canonical(name) in pins:
            assert version.rstrip(".,)") == pins[canonical(name)], (
                f"{name}=={version} in the definition"
            )


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
    assert (
        'echo "{{ LOCK_SHA256 }}  /opt/amber-repro/requirements.lock" | sha256sum -c -'
        in definition.post
    )

    environment = dict(
        re.findall(r"^export (\w+)=(.*)$", "\n".join(definition.section("environment")), re.M)
    )
    assert environment["HF_HOME"] == "/cache/huggingface"
    for name in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "PYTHONNOUSERSITE",
    ):
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
        result = run([sys.executable, *command[1:]], cwd=REPO)
        assert result.returncode == 0, f"{line}: {result.stderr[-2000:]}"
    assert definition.section("runscript") == ['exec python -m amber_repro "$@"']


def test_no_secrets_in_the_definition_or_the_settings():
    files = [
        DEFINITION,
        REPO / "containers" / "check_environment.py",
        REPO / "rules" / "container.smk",
        REPO / "profiles" / "slurm" / "config.v8+.yaml",
        *sorted((REPO / "config").glob("*.yaml")),
    ]
    for path in files:
        text = path.read_text()
        assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", text), f"a Hugging Face token in {path}"
        assert not re.search(r"(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|HF_API_TOKEN)\s*[=:]\s*\S", text), (
            path
        )
        assert not re.search(
            r"(?i)\b(password|passwd|secret|api[_-]?key|access[_-]?token)\s*[=:]", text
        ), path
        assert not re.search(r"(?i)--(password|docker-password|passphrase)", text), path


# --- the environment check and the conda environments --------------------------------------------


def test_the_environment_check_accepts_the_lock_and_names_every_difference(tmp_path):
    """containers/check_environment.py, which fails the image build on any drift from the lock, run
    here on the project's own environment (the lock, torch as its CPU build)."""
    check = [sys.executable, str(REPO / "containers" / "check_environment.py")]
    extras = ["--allow", "setuptools", "--allow", "wheel"]  # what `python -m venv` adds here
    locks = [str(LOCK), str(DEV_LOCK)]  # this environment holds the development tools too
    ok = subprocess.run(
        [*check, *locks, "--torch-local", "cpu", *extras], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert f"{len(lock_pins()) + len(lock_pins(DEV_LOCK))} packages" in ok.stdout

    drifted = tmp_path / "requirements.lock"
    text = LOCK.read_text().replace(f"numpy=={lock_pins()['numpy']} \\", "numpy==1.0.0 \\")
    drifted.write_text(text + "not-installed-package==1.2.3\n")
    bad = subprocess.run(  # without the dev lock: its packages are installed, not locked
        [*check, str(drifted), "--torch-local", "cpu"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert f"numpy: locked 1.0.0, installed {lock_pins()['numpy']}" in bad.stderr
    assert "not-installed-package: locked 1.2.3, not installed" in bad.stderr
    assert f"pytest: installed {lock_pins(DEV_LOCK)['pytest']}, not in the lock" in bad.stderr
    # torch must be the lock's release built for the named target (the image: the CUDA build).
    cuda = subprocess.run(
        [*check, *locks, "--torch-local", "cu126", *extras], capture_output=True, text=True
    )
    assert (
        cuda.returncode == 1
        and f"torch: locked {lock_pins()['torch']}+cu126, installed" in cuda.stderr
    )


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
            assert pins.get(canonical(match.group(1))) == match.group(2), (
                f"{path.name}: {requirement}"
            )
        # And the files are what envs/render.py writes from the lock today.
        assert path.read_text() == render.render(path.stem, pins), (
            f"{path.name} differs from envs/render.py"
        )


def test_the_set_up_pins_pip_as_the_image_does():
    """`make`'s environment installs the pip version the definition pins, not the newest one."""
    pinned = Definition().arguments["PIP_VERSION"]
    assert re.fullmatch(r"\d+(\.\d+)+", pinned), pinned
    planned = run(["make", "-n", "-B", ".venv/.installed"], cwd=REPO).stdout
    pip_lines = [
        line for line in planned.splitlines() if "-m pip install" in line and "pip==" in line
    ]
    assert pip_lines == [f".venv/bin/python -m pip install -q 'pip=={pinned}'"], planned
    assert "--upgrade pip" not in planned


def test_the_set_up_installs_each_lock_with_its_hashes():
    """`make run`'s environment is requirements.lock with --require-hashes; `make test`'s adds the
    development tools from their own lock, hashed too; neither lock names a package twice."""
    planned = run(["make", "-n", "-B", ".venv/.dev-installed"], cwd=REPO).stdout
    installs = [line for line in planned.splitlines() if " -r requirements" in line]
    assert installs == [
        ".venv/bin/python -m pip install -q --require-hashes -r requirements.lock",
        ".venv/bin/python -m pip install -q --require-hashes -r requirements-dev.lock",
    ], planned
    run_pins, dev_pins = lock_pins(), lock_pins(DEV_LOCK)  # each pin hashed (lock_pins checks)
    assert not set(run_pins) & set(dev_pins)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    tools = {
        canonical(PIN.match(p).group(1)) if PIN.match(p) else canonical(p) for p in extras["dev"]
    }
    assert tools <= set(dev_pins), tools - set(dev_pins)
    assert {"torch", "snakemake", "rocrate", "setuptools"} <= set(run_pins)
    # torch is hashed as the CPU build this set-up installs: one hash, not PyPI's CUDA builds.
    text = LOCK.read_text()
    torch = text[text.index("torch==") :].split("\n")
    assert torch[1].strip().startswith("--hash=sha256:") and not torch[1].endswith("\\")
