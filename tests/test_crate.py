"""The provenance crate, results/ro-crate-metadata.json, checked without the code that wrote it.

The embedded default run (`pipeline`) makes it in `rule all`. What it must list comes from Snakemake
(`--summary`: every output and the rule that made it), each sha256 from hashlib, the config hash
from the resolved config. roc-validator cannot check it offline (it fetches the JSON-LD contexts
from w3id.org), so the RO-Crate 1.1 and Workflow Run Crate 0.5 requirements that a crate's own
JSON can break are checked here instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import REPO, snakemake_env

import amber_repro
from amber_repro.errors import AmberError
from amber_repro.provenance import crate as crate_stage

CRATE = "results/ro-crate-metadata.json"
RO_CRATE = "https://w3id.org/ro/crate/1.1"
PROFILES = [
    "https://w3id.org/ro/wfrun/process/0.5",
    "https://w3id.org/ro/wfrun/workflow/0.5",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
]
RUN_PROPERTIES = ["config", "config_sha256", "git_commit", "git_dirty", "git_diff_sha256"]
RUN_PROPERTIES += ["lock_sha256"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def ids(value) -> list[str]:
    return [ref["@id"] for ref in as_list(value or [])]


def types(entity: dict) -> list[str]:
    return as_list(entity["@type"])


class Crate:
    """The crate's JSON-LD graph, by @id."""

    def __init__(self, path: Path):
        self.json = json.loads(path.read_text())
        self.graph = self.json["@graph"]
        self.by_id = {e["@id"]: e for e in self.graph}

    def __getitem__(self, identifier: str) -> dict:
        return self.by_id[identifier]

    def of_type(self, type_: str) -> list[dict]:
        return [e for e in self.graph if type_ in types(e)]

    def jobs(self) -> list[dict]:
        return [self[i] for i in ids(self["./"]["mentions"])[1:]]

    def run_properties(self) -> dict:
        run = self["#run"]
        linked = [self[i] for i in ids(run.get("object")) + ids(run.get("additionalProperty"))]
        return {e["name"]: e.get("value") for e in linked if "PropertyValue" in types(e)}

    def job_properties(self, job: dict) -> dict:
        return {self[i]["name"]: self[i].get("value") for i in ids(job.get("additionalProperty"))}


@pytest.fixture(scope="module")
def crate(pipeline) -> Crate:
    return Crate(pipeline.path / CRATE)


@pytest.fixture(scope="module")
def outputs(pipeline) -> dict[str, str]:
    """{output path: rule} for every output of the DAG but the crate, as Snakemake's summary
    (output_file, date, rule, ...) lists them."""
    lines = pipeline.snakemake("--summary").stdout.splitlines()
    rows = [
        line.split("\t")
        for line in lines[
            1 + lines.index(next(line for line in lines if line.startswith("output_file\t"))) :
        ]
    ]
    return {row[0]: row[2] for row in rows if len(row) > 2 and row[0] != CRATE}


def files_of(path: Path) -> list[Path]:
    """An output's files; in a folder, without Snakemake's .snakemake_timestamp."""
    if not path.is_dir():
        return [path]
    return sorted(f for f in path.rglob("*") if f.is_file() and f.name != ".snakemake_timestamp")


def result_files(crate: Crate, job: dict) -> list[str]:
    """The file ids a job made: its File results, and the parts of its Dataset (folder) results."""
    files = []
    for ref in ids(job["result"]):
        files += ids(crate[ref]["hasPart"]) if ref.endswith("/") else [ref]
    return files


def check_ro_crate(crate: Crate, root: Path) -> None:
    """RO-Crate 1.1 and Workflow Run Crate 0.5 requirements (the MUSTs a crate can break)."""
    assert f"{RO_CRATE}/context" in as_list(crate.json["@context"])
    assert len(crate.by_id) == len(crate.graph), "an @id appears twice"
    descriptor = crate["ro-crate-metadata.json"]
    assert "CreativeWork" in types(descriptor) and ids(descriptor["about"]) == ["./"]
    assert RO_CRATE in ids(descriptor["conformsTo"])
    dataset = crate["./"]
    assert "Dataset" in types(dataset)
    assert dataset["name"] and dataset["description"] and dataset["license"]
    datetime.fromisoformat(dataset["datePublished"])
    assert set(PROFILES) <= set(ids(dataset["conformsTo"]))
    for profile in ids(dataset["conformsTo"]):
        assert "CreativeWork" in types(crate[profile])
    # Every reference is to an entity of the graph or to an absolute URI.
    for entity in crate.graph:
        for value in entity.values():
            for ref in as_list(value):
                if isinstance(ref, dict) and "@id" in ref:
                    assert ref["@id"] in crate.by_id or urlparse(ref["@id"]).scheme, ref
    # Every file is part of the root and is there, with the size and sha256 it is listed with.
    files = crate.of_type("File")
    assert {f["@id"] for f in files} <= set(ids(dataset["hasPart"]))
    for entity in files:
        path = root / unquote(entity["@id"])
        assert path.is_file(), entity["@id"]
        if entity["@id"] == "logs/provenance.log":  # written while the crate is: no hash
            assert "sha256" not in entity and "no sha256" in entity["description"]
            continue
        assert entity["sha256"] == sha256(path), entity["@id"]
        assert "contentSize" not in entity or int(entity["contentSize"]) == path.stat().st_size
    # Workflow RO-Crate: the main workflow; Process/Workflow Run Crate: each action's instrument.
    workflow = crate[ids(dataset["mainEntity"])[0]]
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow"} <= set(types(workflow))
    assert "ComputerLanguage" in types(crate[ids(workflow["programmingLanguage"])[0]])
    tools = {"SoftwareApplication", "SoftwareSourceCode", "ComputationalWorkflow"}
    actions = crate.of_type("CreateAction")
    for action in actions:
        assert tools & set(types(crate[ids(action["instrument"])[0]])), action["@id"]
    assert any(ids(a["instrument"]) == [workflow["@id"]] for a in actions)


def test_the_crate_is_a_workflow_run_crate(pipeline, crate):
    check_ro_crate(crate, pipeline.path / "results")


def test_every_output_is_listed_with_its_sha256_under_the_job_that_made_it(
    pipeline, crate, outputs
):
    results = pipeline.path / "results"
    made_by = {}
    for job in crate.jobs():
        rule = job["name"].split("[")[0]  # the job's rule: "dpo_experiment[experiment=..."
        for ref in ids(job["result"]):
            if ref.endswith("/"):  # a folder output: a Dataset of its files
                assert "Dataset" in types(crate[ref]) and (results / ref).is_dir(), ref
        made_by |= dict.fromkeys(result_files(crate, job), rule)
    assert made_by.get("ambersafe/sft/model.safetensors") == "sft"
    assert outputs, "Snakemake's summary lists no outputs"
    for output, rule in outputs.items():
        for path in files_of(pipeline.path / output):
            file_id = path.relative_to(results).as_posix()
            assert made_by.get(file_id) == rule, f"{file_id}: made by {rule}"
            assert crate[file_id]["sha256"] == sha256(path), file_id
    # Nothing else but the jobs' logs and benchmarks, the evaluate jobs' working files, and the
    # workflow's files (outside results/): the Snakefile (the mainEntity) and the rules' files.
    listed = {f["@id"] for f in crate.of_type("File")}
    logs = {i for i in listed if i.startswith(("logs/", "benchmarks/"))}
    expected = {
        p.relative_to(results).as_posix() for o in outputs for p in files_of(pipeline.path / o)
    }
    scratch = {
        part
        for folder in ("ambersafe/.eval_work/", "hf_datasets/")
        for part in ids(crate[folder]["hasPart"])
    }
    assert scratch and all((results / i).is_file() for i in scratch)
    assert any(i.startswith("ambersafe/.eval_work/dpo/") for i in scratch)
    workflow = {i for i in listed if i.startswith("../")}
    rule_files = {f"../{path.relative_to(REPO)}" for path in (REPO / "rules").glob("*.smk")}
    assert set(ids(crate["./"]["mainEntity"])) | {"../rules/dpo.smk"} <= workflow
    assert workflow - set(ids(crate["./"]["mainEntity"])) <= rule_files
    assert listed - logs - expected - scratch == workflow
    hashed = logs - {"logs/provenance.log"}
    assert hashed and all(crate[i]["sha256"] == sha256(results / i) for i in hashed)
    assert not any(".state/" in i for i in listed)
    assert (results / "ambersafe/sft/.snakemake_timestamp").is_file()  # there, and not listed
    assert not any(i.endswith(".snakemake_timestamp") for i in listed)


def test_the_run_records_commit_config_and_lock(pipeline, crate):
    values = crate.run_properties()
    assert set(RUN_PROPERTIES) <= set(values)
    config = json.loads(values["config"])
    assert config == pipeline.config
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert values["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert values["lock_sha256"] == sha256(pipeline.path / "requirements.lock")
    # The same commit as the jobs recorded (the scratch copy is no git checkout: null there).
    recorded = json.loads((pipeline.path / "results/ambersafe/eval.json").read_text())["run"]
    for key in ("git_commit", "git_dirty", "git_diff_sha256"):
        assert values[key] == recorded[key]
    assert values["git_diff_sha256"] is None or values["git_dirty"] is True
    assert values["data_kind"] == "synthetic" and values["base_model_kind"] == "tiny"
    data = pipeline.path / "results/raw/pku-saferlhf"
    assert json.loads(values["data_sha256"]) == {p.name: sha256(p) for p in data.glob("*.parquet")}
    assert json.loads(values["hardware"])["cpu"]


def test_jobs_are_mentioned_in_dag_order_with_their_commands(pipeline, crate, outputs):
    mentions = ids(crate["./"]["mentions"])
    assert mentions[0] == "#run"
    jobs = crate.jobs()
    assert {j["@id"] for j in jobs} == {a["@id"] for a in crate.of_type("CreateAction")} - {"#run"}
    assert all(j["@id"] == f"#job-{j['name']}" for j in jobs)
    assert {j["name"].split("[")[0] for j in jobs} == set(outputs.values())
    # Each job comes after the jobs that made its inputs.
    position = {f: i for i, job in enumerate(jobs) for f in result_files(crate, job)}
    assert position["ambersafe/sft/model.safetensors"] < position["ambersafe/dpo/model.safetensors"]
    for i, job in enumerate(jobs):
        assert all(position.get(f, -1) < i for f in ids(job.get("object"))), job["name"]
    # Command lines, software versions and seeds from the stages' records.
    sft = crate["#job-sft"]
    record = json.loads((pipeline.path / "results/ambersafe/sft/amber_repro.json").read_text())
    recorded = crate.job_properties(sft)
    assert recorded["command"] == shlex.join(record["command"])
    assert json.loads(recorded["software"]) == record["software"]
    assert recorded["seed"] == record["settings"]["seed"]
    # Every job's times and status come from Snakemake's record of it; every job has a command,
    # software and run context, the stages whose outputs hold no record from <output>.record.json.
    for job in jobs:
        assert job["actionStatus"] == "http://schema.org/CompletedActionStatus", job
        assert job["startTime"] <= job["endTime"], job["name"]
    for name in ("generate", "safety_answers", "report_figures"):
        facts = crate.job_properties(crate[f"#job-{name}"])
        stage = {"safety_answers": "safety-answers", "report_figures": "plots"}.get(name, name)
        assert f"python -m amber_repro {stage} " in facts["command"], facts
        assert json.loads(facts["software"])["amber_repro"] == amber_repro.__version__
        assert json.loads(facts["run_context"])["git_commit"] == record["run"]["git_commit"]
    # The safety judge's record is verdicts.json.
    verdicts = json.loads((pipeline.path / "results/ambersafe/safety/verdicts.json").read_text())
    judge = crate.job_properties(crate["#job-safety_judge"])
    assert judge["command"] == shlex.join(verdicts["command"])
    assert json.loads(judge["software"]) == verdicts["software"]


def test_the_crate_is_rebuilt_the_same_and_quickly(pipeline, crate, tmp_path):
    """The bench's build (the rule's command, --out elsewhere): the same files, hashes and jobs.
    Its time is printed, not asserted (the goal: under 2 s on the embedded default)."""
    out = tmp_path / "ro-crate-metadata.json"
    bench = [sys.executable, str(REPO / "bench/crate_time.py"), str(pipeline.path)]
    timing = subprocess.run(
        [*bench, "--repeats", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        env=snakemake_env(),
        check=True,
    )
    print(timing.stdout)
    rebuilt = Crate(out)
    assert {f["@id"]: f.get("sha256") for f in rebuilt.of_type("File")} == {
        f["@id"]: f.get("sha256") for f in crate.of_type("File")
    }
    assert ids(rebuilt["./"]["mentions"]) == ids(crate["./"]["mentions"])


def test_images_and_hub_sources_are_recorded(tmp_path, monkeypatch):
    """Paths the embedded default does not take: a local .sif and a registry image by digest, and a
    hub download."""
    monkeypatch.chdir(tmp_path)
    context = {"git_commit": "a" * 40, "git_dirty": True, "git_diff_sha256": "b" * 64}
    context |= {"config_sha256": "e" * 64, "lock_sha256": "f" * 64}
    for key, value in context.items():  # as Snakemake hands the run context to its jobs
        monkeypatch.setenv(f"AMBER_REPRO_{key.upper()}", json.dumps(value))
    raw, image = Path("results/raw/pku-saferlhf"), Path("results/containers/amber-repro.sif")
    for path, text in [(raw / "train.parquet", "rows"), (image, "image"), (Path("r/x"), "x")]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    source = {"kind": "hub", "dataset": "org/data", "revision": "v1", "commit": "c" * 40}
    (raw / "source.json").write_text(json.dumps(source))
    registry = "docker://ghcr.io/org/amber@sha256:" + "d" * 64
    jobs = [
        {
            "job": "download_data",
            "rule": "download_data",
            "inputs": [],
            "container": None,
            "outputs": [str(raw / "train.parquet"), str(raw / "source.json")],
            "log": "none.log",
        },
        {
            "job": "sft",
            "rule": "sft",
            "inputs": [str(raw / "train.parquet"), str(image)],
            "outputs": ["r/x"],
            "log": None,
            "container": str(image),
        },
        {
            "job": "dpo",
            "rule": "dpo",
            "inputs": [],
            "outputs": ["r/x"],
            "log": None,
            "container": registry,
        },
    ]
    args = argparse.Namespace(
        results=Path("results"), jobs_json=json.dumps(jobs), config_json="{}", out=Path(CRATE)
    )
    crate_stage.main(args)
    crate = Crate(Path(CRATE))
    check_ro_crate(crate, Path("results"))
    image_of = {j["name"]: crate[ids(j["containerImage"])[0]] for j in crate.jobs()[1:]}
    assert image_of["sft"]["sha256"] == sha256(image)
    assert image_of["dpo"]["sha256"] == "d" * 64
    hub = crate["https://huggingface.co/datasets/org/data"]
    assert ids(crate["#job-download_data"]["object"]) == [hub["@id"]]
    assert (hub["version"], hub["identifier"]) == ("v1", "c" * 40)
    run = crate.run_properties()
    assert run["data_commit"] == "c" * 40
    assert {k: run[k] for k in ("git_commit", "git_dirty", "git_diff_sha256", "lock_sha256")} == {
        k: context[k] for k in ("git_commit", "git_dirty", "git_diff_sha256", "lock_sha256")
    }
    assert run["config_sha256"] == hashlib.sha256(b"{}").hexdigest()
    with pytest.raises(AmberError, match="missing"):
        jobs[0]["outputs"].append("results/not-there.parquet")
        crate_stage.main(argparse.Namespace(**{**vars(args), "jobs_json": json.dumps(jobs)}))


def test_an_amberchat_start_records_the_runs_own_amberchat(tmp_path, monkeypatch):
    """base_model.source amberchat: the base model is results/amberchat/model (chat-sft's record),
    trained from the downloaded Amber, even when an older base_model/ folder is still there."""
    monkeypatch.chdir(tmp_path)
    amber, chat = Path("results/amberchat/amber"), Path("results/amberchat/model")
    stale = Path("results/base_model")
    for folder in (amber, chat, stale):
        folder.mkdir(parents=True)
    amber_source = {"kind": "hub", "model": "LLM360/Amber", "revision": "main", "commit": "9" * 40}
    (amber / "amber_repro_source.json").write_text(json.dumps(amber_source))
    (amber / "config.json").write_text("{}")
    (chat / "amber_repro.json").write_text(
        json.dumps({"stage": "chat-sft", "template": "vicuna_v1.1", "mismatched": [3]})
    )
    (stale / "amber_repro.json").write_text(json.dumps({"stage": "tiny"}))
    jobs = [
        {
            "job": "download_amber",
            "rule": "download_amber",
            "inputs": [],
            "outputs": [str(amber)],
            "log": None,
            "container": None,
        },
        {
            "job": "amberchat",
            "rule": "amberchat",
            "inputs": [str(amber)],
            "outputs": [str(chat)],
            "log": None,
            "container": None,
        },
    ]
    config = {"base_model": {"source": "amberchat"}}
    args = argparse.Namespace(
        results=Path("results"),
        jobs_json=json.dumps(jobs),
        config_json=json.dumps(config),
        out=Path(CRATE),
    )
    crate_stage.main(args)
    crate = Crate(Path(CRATE))
    check_ro_crate(crate, Path("results"))
    run = crate.run_properties()
    assert (run["base_model_kind"], run["base_model_name"]) == ("amberchat", str(chat))
    assert run["base_model_commit"] is None  # AmberChat has no hub commit; Amber's is below
    hub = crate["https://huggingface.co/LLM360/Amber"]
    assert ids(crate["#job-download_amber"]["object"]) == [hub["@id"]]
    assert (hub["version"], hub["identifier"]) == ("main", "9" * 40)
