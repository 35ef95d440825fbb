"""A bundle is a Workflow Run Crate a registry can take: its folder holds the workflow it describes
(code/Snakefile, the mainEntity), its config, lock and results, and roc-validator passes it at the
recommended level of the Workflow Run Crate and Provenance Run Crate profiles, offline
(tests/crate_validation.py).

The run is the session's quick pipeline in a git checkout, with config `crate` naming who is
credited, as a user publishing a run would set it; that change reruns the provenance job only.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Workdir, commit_all, scheduled_jobs
from crate_validation import validate
from processes import run

from amber_repro.provenance.bundle_crate import moved

PROFILES = ["workflow-run-crate-0.5", "provenance-run-crate-0.5"]
CREDITS = {
    "author": "Ada Example",
    "author_id": "https://orcid.org/0000-0002-1825-0097",
    "author_affiliation": "Example Lab",
    "publisher": "Example Lab",
    "publisher_id": "https://ror.org/05example",
    "workflow_url": "https://example.org/amber-repro",
}
# roc-validator 0.13 wants every SoftwareApplication, SoftwareSourceCode and ComputationalWorkflow
# to have an http(s) @id, and the Workflow RO-Crate profile wants the main workflow to be a file in
# the crate: no crate meets both (crs4/rocrate-validator#51, open). The main workflow's is the
# one recommendation left unmet, and the only one allowed here.
MAIN_WORKFLOW_ID_CHECK = "process-run-crate-0.5_5.1"


@pytest.fixture(scope="module")
def unpacked(quick_pipeline, tmp_path_factory) -> Path:
    """A plain bundle of the quick run, credited as CREDITS say, unpacked."""
    path = tmp_path_factory.mktemp("published") / "amber-repro"
    shutil.copytree(quick_pipeline.path, path, symlinks=True)
    shutil.copy2(REPO / ".gitignore", path / ".gitignore")
    workdir = Workdir.existing(path)
    config = yaml.safe_load((path / "config" / "config.yaml").read_text())
    workdir.write_config({**config, "crate": CREDITS})
    commit_all(path, "the workflow as run, credited")
    assert set(scheduled_jobs(workdir.snakemake("-n").stdout)) == {"provenance", "all"}
    workdir.snakemake()
    archived = run(
        [sys.executable, "-m", "amber_repro", "archive", "--results", "results"], cwd=path
    )
    assert archived.returncode == 0, archived.stdout + archived.stderr
    (bundle,) = (path / "results" / "archive").glob("*.tar.gz")
    out = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(bundle) as tar:
        tar.extractall(out, filter="data")
    return out


def graph(folder: Path) -> dict[str, dict]:
    metadata = json.loads((folder / "ro-crate-metadata.json").read_text())
    return {item["@id"]: item for item in metadata["@graph"]}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("profile", PROFILES)
def test_the_bundle_passes_roc_validator_at_the_recommended_level(unpacked, tmp_path, profile):
    _, issues = validate(unpacked, profile, tmp_path / "http-cache")
    unmet = [i for i in issues if i.check != MAIN_WORKFLOW_ID_CHECK]
    assert unmet == [], "\n".join(f"{i.check}: {i.message} ({i.entity})" for i in unmet)
    # The allowed one is reported (the profile's checks ran), about the main workflow only, a file
    # of the bundle. When roc-validator resolves #51, this line fails: drop the exception then.
    assert any(i.check == MAIN_WORKFLOW_ID_CHECK for i in issues)
    assert all(
        "ComputationalWorkflow" in str(i.entity) or "SoftwareSourceCode" in str(i.entity)
        for i in issues
    ), issues
    entities = graph(unpacked)
    code = {"ComputationalWorkflow", "SoftwareSourceCode"}
    assert [i for i, e in entities.items() if code & set(as_list(e["@type"]))] == ["code/Snakefile"]
    assert (unpacked / "code" / "Snakefile").is_file()


def test_the_validator_fails_a_crate_without_agents_or_steps(unpacked, tmp_path):
    """The validation above can fail: the same crate without what the profiles ask for."""
    broken = tmp_path / "broken"
    shutil.copytree(unpacked, broken)
    entities = graph(broken)
    for entity in entities.values():
        entity.pop("agent", None)
        entity.pop("step", None)
    metadata = json.loads((broken / "ro-crate-metadata.json").read_text())
    metadata["@graph"] = list(entities.values())
    (broken / "ro-crate-metadata.json").write_text(json.dumps(metadata))
    passed, issues = validate(broken, "provenance-run-crate-0.5", tmp_path / "http-cache")
    messages = {i.message for i in issues}
    assert not passed
    assert "The Action SHOULD have an agent that is a Person or Organization" in messages
    assert "ComputationalWorkflow SHOULD refer to HowToStep instances via step" in messages


def test_the_bundle_crate_holds_the_workflow_it_describes(unpacked):
    entities = graph(unpacked)
    root = entities["./"]
    assert root["mainEntity"] == {"@id": "code/Snakefile"}
    workflow = entities["code/Snakefile"]
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"} <= set(
        workflow["@type"]
    )
    language = entities[workflow["programmingLanguage"]["@id"]]
    assert language["name"] == "Snakemake"
    assert entities[root["license"]["@id"]]["identifier"] == "Apache-2.0"
    assert entities[root["author"]["@id"]]["name"] == CREDITS["author"]
    assert root["publisher"] == {"@id": CREDITS["publisher_id"]}
    assert entities["README.md"]["about"] == {"@id": "./"}
    assert (unpacked / "ro-crate-preview.html").read_text().count("amber-repro") > 0
    # Every path the crate names is in the bundle; results it does not hold are local ids.
    parts = {ref["@id"] for ref in as_list(root["hasPart"])}
    paths = {i for i in entities if not i.startswith(("#", "./", "http", "mailto:"))}
    assert {"code/", "config/run.yaml", "requirements.lock", "BUNDLE.json"} <= parts
    assert paths - {"ro-crate-metadata.json", "ro-crate-preview.html"} <= parts
    assert all((unpacked / p).exists() for p in paths), sorted(
        p for p in paths if not (unpacked / p).exists()
    )
    absent = [i for i in entities if i.startswith("#results/")]
    assert "#results/ambersafe/sft/model.safetensors" in absent
    assert not any((unpacked / i[1:]).exists() for i in absent)


def test_each_job_is_a_step_of_the_workflow_run_by_snakemake(unpacked):
    entities = graph(unpacked)
    workflow = entities["code/Snakefile"]
    tools = {ref["@id"] for ref in workflow["hasPart"]}
    steps = [entities[ref["@id"]] for ref in workflow["step"]]
    assert {entities[s["workExample"]["@id"]]["@id"] for s in steps} == tools
    assert sorted(int(s["position"]) for s in steps) == list(range(len(steps)))
    organize = entities["#organize"]
    assert entities[organize["instrument"]["@id"]]["name"] == "Snakemake"
    assert organize["result"] == {"@id": "#run"}
    jobs = [ref["@id"] for ref in as_list(entities["./"]["mentions"])][1:]
    controls = [entities[ref["@id"]] for ref in organize["object"]]
    assert [c["object"]["@id"] for c in controls] == jobs
    for control in controls:
        job = entities[control["object"]["@id"]]
        step = entities[control["instrument"]["@id"]]
        assert step["workExample"] == job["instrument"]
        assert job["agent"] == {"@id": CREDITS["author_id"]}
        assert job["actionStatus"] == "http://schema.org/CompletedActionStatus"
        assert entities[job["instrument"]["@id"]]["url"]["@id"].startswith("code/rules/")


def test_each_setting_is_a_workflow_input_with_the_value_the_run_used(unpacked):
    entities = graph(unpacked)
    inputs = {ref["@id"] for ref in entities["code/Snakefile"]["input"]}
    values = {
        entities[ref["@id"]]["name"]: entities[ref["@id"]]
        for ref in as_list(entities["#run"]["object"])
        if "exampleOfWork" in entities.get(ref["@id"], {})
    }
    assert {v["exampleOfWork"]["@id"] for v in values.values()} == inputs
    assert values["dpo.beta"]["value"] == 0.1
    assert entities["#param-dpo.beta"]["additionalType"] == "Float"
    assert values["sft.n_epochs"]["value"] == 2  # the quick settings'
    assert entities["#param-sft.n_epochs"]["additionalType"] == "Integer"


HELD = {"results/eval.json", "results/sft/amber_repro.json", "code/Snakefile"}


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("../Snakefile", "code/Snakefile"),
        ("../rules/sft.smk", "#code/rules/sft.smk"),  # not a member: described, not held
        ("eval.json", "results/eval.json"),
        ("sft/model.safetensors", "#results/sft/model.safetensors"),
        ("sft/", "results/sft/"),  # a folder with one member held
        ("dpo/", "#results/dpo/"),
        ("#run", "#run"),
        ("./", "./"),
        ("https://huggingface.co/x/y", "https://huggingface.co/x/y"),
        ("mailto:t@example.org", "mailto:t@example.org"),
        ("ro-crate-metadata.json", "ro-crate-metadata.json"),
    ],
)
def test_a_run_crate_id_moves_into_the_bundle_layout(identifier, expected):
    assert moved(identifier, HELD) == expected
