"""One registry of jobs (amber_repro/config/jobs.py) against the workflow Snakemake loads.

Every rule Snakemake knows, under configs that switch on every optional rule (hub downloads,
harness tasks, the beaver-dam judge, AmberChat from the hub, experiments, several nodes), must be in
the registry and be what the registry says: local or submitted, in the GPU image or not, resumable
(SLURM's warning signal) or not, with the resources of its `resources` entry. Everything that used
to repeat these facts (the settings' Resources, the profile's per-rule options, the archive's
restored rules) is derived from the registry, so it is checked here against the same table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake_env

from amber_repro.config.jobs import (
    BY_RULE,
    JOBS,
    MULTI_NODE,
    SIGTERM_WARNING_SECONDS,
    SIZED,
    job,
)
from amber_repro.config.load import resolve
from amber_repro.config.resource_sections import Resources
from amber_repro.provenance import archive

pytestmark = pytest.mark.integration  # runs Snakemake itself

RECIPE = REPO / "config" / "ambersafe-7b.yaml"
# Overlays on the 7B recipe that switch on the rules a plain run leaves out.
OVERLAYS = {
    "recipe": {},
    "experiments and AmberChat": {
        "base_model": {"source": "amberchat"},
        "experiments": {"beta2": {"dpo": {"beta": 0.2}}},
    },
    "two-node training": {
        "resources": {
            name: {"gpus": 8, "nodes": 2, "cpus": 64, "mem_mb": 480000, "runtime_min": 60}
            for name in ("sft", "dpo", "amberchat")
        },
        "dpo": {"gradient_accumulation_steps": 2},
    },
}


def workflow_rules(tmp_path: Path, overlay: dict | None) -> list[dict]:
    configfiles = [] if overlay is None else [str(RECIPE)]
    if overlay:
        (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
        configfiles.append(str(tmp_path / "overlay.yaml"))
    (tmp_path / "config").mkdir(exist_ok=True)
    for name in ("config.yaml", "ambersafe-7b.yaml"):
        (tmp_path / "config" / name).write_text((REPO / "config" / name).read_text())
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("workflow_rules.py")),
            str(REPO / "Snakefile"),
            str(tmp_path),
            *configfiles,
        ],
        capture_output=True,
        text=True,
        env=snakemake_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, tuple[dict, list[dict]]]:
    """{config name: (resolved config, its rules)}; "embedded" is config/config.yaml alone."""
    found = {}
    presets = REPO / "config" / "presets"
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    recipe = yaml.safe_load(RECIPE.read_text())
    for name, overlay in {"embedded": None, **OVERLAYS}.items():
        values = base if overlay is None else {**base, **recipe, **overlay}
        config = resolve(values, presets).model_dump(mode="json")
        found[name] = (config, workflow_rules(tmp_path_factory.mktemp(name[:8]), overlay))
    return found


def test_every_rule_snakemake_knows_is_in_the_registry_and_every_entry_is_a_rule(loaded):
    seen = {rule["rule"] for _, rules in loaded.values() for rule in rules}
    missing = sorted(seen - set(BY_RULE))
    assert not missing, f"rules missing from amber_repro/config/jobs.py: {missing}"
    stale = sorted(set(BY_RULE) - seen)
    assert not stale, f"registry entries that are no rule of the workflow: {stale}"


def test_each_rule_is_what_the_registry_says(loaded):
    """Local or submitted, container, GPUs, SIGTERM warning, resources, threads: each from the
    registry and the config's `resources` entry, under every config."""
    problems = []
    for name, (config, rules) in loaded.items():
        for rule in rules:
            kind, resources = job(rule["rule"]), rule["resources"]
            size = config["resources"][kind.resources] if kind.resources else None
            nodes = size["nodes"] if size else 1
            facts = {
                "local": (rule["local"], kind.local),
                "container": (rule["container"] is not None, kind.gpu and nodes == 1),
                "SIGTERM warning": (
                    resources.get("slurm_extra"),
                    f"--signal=TERM@{SIGTERM_WARNING_SECONDS}" if kind.resumable else None,
                ),
                "GPUs": (
                    resources.get("gpu") or resources.get("gres"),
                    (size["gpus"] if nodes == 1 else f"gpu:{size['gpus']}") if kind.gpu else None,
                ),
                "memory": (resources.get("mem_mb"), size and size["mem_mb"]),
                "time limit": (resources.get("runtime"), size and size["runtime_min"]),
                "threads": (resources["_cores"], size["cpus"] if size else 1),
            }
            problems += [
                f"{name}: rule {rule['rule']}: {what} {got!r}, registry {want!r}"
                for what, (got, want) in facts.items()
                if got != want
            ]
    assert not problems, "\n".join(problems)


def test_the_registry_feeds_the_settings_the_profile_and_the_archive():
    assert list(Resources.model_fields) == list(SIZED)
    assert set(MULTI_NODE) == {j.rule for j in JOBS if j.multi_node and j.size}
    assert {j.rule: j.restored_as for j in JOBS if j.restored} == archive.RESTORED_RULES
    # Every download is restored on replay (none fetches with the hub switched off).
    assert {j.rule for j in JOBS if j.fetches and j.part != "workflow"} <= set(
        archive.RESTORED_RULES
    )
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    assert "set-resources" not in profile, "per-rule resources belong in the registry"


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            dict(rule="x", label="x", stage=None, local=True, fetches=True),
            "x fetches from the network: a replay must restore it",
        ),
        (
            dict(rule="x", label="x", stage=None, fetches=True, restored=True),
            "x fetches from the network: compute nodes may have none",
        ),
    ],
)
def test_an_inconsistent_entry_is_refused(entry, message):
    from amber_repro.config.jobs import Job

    with pytest.raises(ValueError, match=message):
        Job(**entry)
