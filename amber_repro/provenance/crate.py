"""`python -m amber_repro crate`: results/ro-crate-metadata.json, a Workflow Run RO-Crate
(https://www.researchobject.org/workflow-run-crate/, profiles Process Run Crate 0.5, Workflow Run
Crate 0.5 and Workflow RO-Crate 1.0 on RO-Crate 1.1) that describes results/ in place.

What other code relies on:
  - the crate root is results/; a File's @id is its path relative to results/, with `sha256` (hex)
    and `contentSize` (bytes, a string as schema.org has it);
  - one CreateAction per job, @id "#job-<job>": `object` its input files, `result` its outputs
    (a file as its File, a folder as a Dataset "<folder>/" whose hasPart are its files, without
    Snakemake's .snakemake_timestamp), `additionalProperty` its command line, software versions,
    GPU numerics (`kernels`: TF32, deterministic), seed and run context as PropertyValues (read
    from the JSON record the stage wrote beside its outputs);
  - the workflow run, "#run": `instrument` the Snakefile (the root's mainEntity), `object` the
    resolved config (PropertyValue "config", a JSON string) and the data and base-model sources,
    `additionalProperty` "config_sha256", "git_commit", "git_dirty", "git_diff_sha256",
    "lock_sha256", the data and base-model source fields and the hardware;
  - the root Dataset's `mentions`: "#run", then every job action in DAG order.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
from pathlib import Path

from rocrate.rocrate import ROCrate

from amber_repro.errors import AmberError
from amber_repro.provenance.crate_files import (
    add_file,
    add_files,
    add_outputs,
    add_scratch,
    as_list,
    entity,
    expand,
    modified_at,
    sha256_of,
    single_values,
)
from amber_repro.provenance.crate_workflow import (
    COMPLETED,
    LICENSE,
    credits,
    orchestration,
    settings_parameters,
    tools_and_steps,
    workflow_entity,
)
from amber_repro.provenance.job_metadata import job_metadata
from amber_repro.provenance.run_context import (
    RECORD_SUFFIX,
    config_sha256,
    cpu_model,
    hardware,
    run_context,
)
from amber_repro.provenance.verify import RECORD_NAMES
from amber_repro.storage import read_json, write_json

WFRUN = "https://w3id.org/ro/terms/workflow-run"  # the Workflow Run Crate terms (ContainerImage)
PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
    "https://w3id.org/ro/wfrun/provenance/0.5": "Provenance Run Crate",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": "Workflow RO-Crate",
}
RAW_DIR = "raw/pku-saferlhf"
DATA_SOURCE = f"{RAW_DIR}/source.json"
BASE_MODEL_SOURCES = ["base_model/amber_repro_source.json", "base_model/amber_repro.json"]
# base_model.source amberchat: AmberSafe starts from this run's AmberChat (chat-sft's record),
# trained from the Amber folder (downloaded, or tiny and built here).
CHAT_MODEL_DIR = "amberchat/model"
AMBER_SOURCES = ["amberchat/amber/amber_repro_source.json", "amberchat/amber/amber_repro.json"]


# --- what the stages recorded ---------------------------------------------------------------------


def read_record(path: Path) -> dict:
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def job_records(outputs: list[Path]) -> list[dict]:
    """The records among a job's outputs (ref_logps/{split}.json is the ref-logps one; a stage
    whose outputs hold none writes <output>.record.json)."""
    return [
        read_record(f)
        for f in outputs
        if f.suffix == ".json"
        and (
            f.name in RECORD_NAMES or f.name.endswith(RECORD_SUFFIX) or f.parent.name == "ref_logps"
        )
    ]


def job_facts(records: list[dict]) -> dict:
    """Command line, software versions, GPU numerics (TF32, deterministic kernels), seed, run
    context and hardware a job's records name."""
    facts = {}
    for record in records:
        settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
        found = {
            "command": record.get("command"),
            "software": record.get("software") or record.get("versions", {}).get("software"),
            "kernels": record.get("kernels"),
            "seed": record.get("seed", settings.get("seed")),
            "run_context": record.get("run"),
            "hardware": record.get("hardware") or (record.get("run") or {}).get("hardware"),
        }
        for name, value in found.items():
            if value is not None:
                facts.setdefault(name, value)
    if isinstance(facts.get("command"), list):
        facts["command"] = shlex.join(map(str, facts["command"]))
    return facts


def first_record(results: Path, names: list[str]) -> dict:
    return next((read_record(results / n) for n in names if (results / n).is_file()), {})


# --- entities -------------------------------------------------------------------------------------


def property_value(crate, identifier: str, name: str, value):
    """A PropertyValue (its value null when unknown); dicts and lists are stored as JSON."""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    pv = entity(crate, identifier, "PropertyValue", name=name)
    pv["value"] = value
    return pv


def property_values(crate, owner: str, values: dict) -> list:
    return [property_value(crate, f"{owner}-{k}", k, v) for k, v in values.items()]


def container_image(crate, image: str | None):
    """The image a job ran in: a local .sif (its sha256) or a registry URI (its @sha256: digest)."""
    if not image:
        return None
    digest = image.rpartition("@sha256:")[2] if "@sha256:" in image else None
    if "://" not in image and Path(image).is_file():
        digest = sha256_of(Path(image))
    kind = {"@id": f"{WFRUN}#{'SIFImage' if image.endswith('.sif') else 'DockerImage'}"}
    found = entity(crate, f"#image-{image}", "ContainerImage", name=image, additionalType=kind)
    found["sha256"] = digest
    return found


def source_entities(crate, data: dict, model: dict) -> dict:
    """The dataset and models the download jobs fetched, as web entities at the revision asked (the
    commit it resolved to as `identifier`), keyed by the rule that fetched them."""
    found = {}
    amber = model.get("trained_from", {})
    for rule, source, name, url in [
        ("download_data", data, data.get("dataset"), "https://huggingface.co/datasets/"),
        ("download_base_model", model, model.get("model"), "https://huggingface.co/"),
        ("download_amber", amber, amber.get("model"), "https://huggingface.co/"),
    ]:
        if source.get("kind") == "hub":
            version, commit = source.get("revision"), source.get("commit")
            found[rule] = entity(crate, url + name, "Dataset", name=name, version=version)
            found[rule]["identifier"] = commit
    return found


def add_job(crate, job: dict, results: Path, sources: dict, tool, agent):
    """The CreateAction of one job (`instrument` its rule's tool, `agent` the author): inputs,
    outputs (a folder as a Dataset), start and end, status, log, image, and what its records (or
    Snakemake's) say."""
    identifier = f"#job-{job['job']}"
    outputs = expand(job["outputs"], missing_ok=False)
    inputs = add_files(crate, expand(job["inputs"]), results)
    if not inputs and job["rule"] in sources:  # a download's input: the hub repository
        inputs = [sources[job["rule"]]]
    # Snakemake's record of the job: its times, whether it completed, and its shell command, the
    # command of a stage that writes no record of its own (generate, safety answers, figures).
    ran = job_metadata(results.resolve().parent, job["outputs"][0]) if job["outputs"] else {}
    facts = job_facts(job_records(outputs))
    if "command" not in facts and "command" in ran:
        facts["command"] = ran["command"]
    action = entity(
        crate,
        identifier,
        "CreateAction",
        name=job["job"],
        description=f"Snakemake job {job['job']} of rule {job['rule']}",
        instrument=tool,
        agent=agent,
        object=inputs,
        result=add_outputs(crate, job["outputs"], results),
        startTime=ran.get("startTime"),
        endTime=ran.get("endTime") or modified_at(outputs),
        actionStatus=COMPLETED if ran.get("completed") else None,
        containerImage=container_image(crate, job.get("container")),
        additionalProperty=property_values(crate, identifier, facts),
    )
    for kind in ("log", "benchmark"):  # a finished job's log (and benchmark, when the table has it)
        if job.get(kind) and Path(job[kind]).is_file():
            about = {"about": action, "name": f"{kind} of {job['job']}"}
            add_file(crate, Path(job[kind]), results, about)
    return action


def host_hardware() -> dict:
    """hardware() of the host that builds the crate; without an NVIDIA driver there is
    no GPU to find, and importing torch to find none would cost a second."""
    if shutil.which("nvidia-smi") is None:
        return {"cpu": cpu_model(), "cpus": os.cpu_count(), "gpus": []}
    return hardware()


def downloaded_or_tiny(results: Path, names: list[str]) -> dict:
    """The first of a model folder's records; the tiny model's record names no kind."""
    record = first_record(results, names)
    return {"kind": "tiny", **record} if record else {}


def base_model_record(config: dict, results: Path) -> dict:
    """The record of the model AmberSafe starts from: base_model/ (hub or tiny), or with
    base_model.source amberchat this run's AmberChat, with the Amber it was trained from."""
    if config.get("base_model", {}).get("source") != "amberchat":
        return downloaded_or_tiny(results, BASE_MODEL_SOURCES)
    chat = first_record(results, [f"{CHAT_MODEL_DIR}/amber_repro.json"])
    if not chat:
        return {}
    return {
        "kind": "amberchat",
        "model": f"results/{CHAT_MODEL_DIR}",
        "stage": chat.get("stage"),
        "template": chat.get("template"),
        "trained_from": downloaded_or_tiny(results, AMBER_SOURCES),
    }


def run_facts(config: dict, results: Path) -> dict:
    """The run context: commit, dirty flag, diff hash, config hash, lock hash, sources, hardware."""
    context = run_context()
    data = first_record(results, [DATA_SOURCE])
    model = base_model_record(config, results)
    data_files = {f.name: sha256_of(f) for f in sorted((results / RAW_DIR).glob("*.parquet"))}
    return {
        "config_sha256": config_sha256(config),
        **{k: context.get(k) for k in ("git_commit", "git_dirty", "git_diff_sha256")},
        "lock_sha256": context.get("lock_sha256"),
        **{f"data_{k}": data.get(k) for k in ("kind", "dataset", "revision", "commit")},
        "data_sha256": data_files,
        **{f"base_model_{k}": model.get(k) for k in ("kind", "revision", "commit")},
        "base_model_name": model.get("model"),
        "hardware": host_hardware(),
        "data": data,
        "model": model,
    }


# --- the crate ------------------------------------------------------------------------------------


def datasets_cache(config: dict, results: Path) -> Path | None:
    """config eval.datasets_cache, relative to the working directory (results/'s parent)."""
    cache = config.get("eval", {}).get("datasets_cache")
    return None if cache is None else results.absolute().parent / cache


def build_crate(results: Path, jobs: list[dict], config: dict):
    """The crate of a finished run: the workflow (tools, steps, settings), one action per job (DAG
    order), the run, the engine's orchestration of it, the root."""
    crate = ROCrate(gen_preview=False, version="1.1")
    crate.metadata.extra_contexts.append(f"{WFRUN}/context")
    profiles = [
        entity(crate, uri, "CreativeWork", name=name, version=uri.rsplit("/", 1)[1])
        for uri, name in PROFILES.items()
    ]
    crate.metadata["conformsTo"] = [{"@id": "https://w3id.org/ro/crate/1.1"}, profiles[-1]]
    credit = config.get("crate", {})
    author, publisher = credits(crate, credit)
    tools, steps = tools_and_steps(crate, jobs, results, credit.get("workflow_url"))
    parameters, settings = settings_parameters(crate, config)
    workflow = workflow_entity(
        crate, results, author, tools, steps, parameters, credit.get("workflow_url")
    )
    facts = run_facts(config, results)
    sources = source_entities(crate, facts.pop("data"), facts.pop("model"))
    actions = [add_job(crate, job, results, sources, tools[job["rule"]], author) for job in jobs]
    images = {i["name"]: i["sha256"] for i in (a.get("containerImage") for a in actions) if i}
    facts["image_sha256"] = images or None  # {image: sha256} of the images jobs ran in
    completed = all(a.get("actionStatus") == COMPLETED for a in actions)
    run = entity(
        crate,
        "#run",
        "CreateAction",
        name="amber-repro workflow run",
        description="One run of the amber-repro Snakemake DAG; its jobs are the root's mentions",
        instrument=workflow,
        agent=author,
        object=[
            property_value(crate, "#run-config", "config", config),
            *settings,
            *sources.values(),
        ],
        result=list({f.id: f for a in actions for f in as_list(a.get("result"))}.values()),
        startTime=min(filter(None, (a.get("startTime") for a in actions)), default=None),
        endTime=max(filter(None, (a.get("endTime") for a in actions)), default=None),
        actionStatus=COMPLETED if completed else None,
        additionalProperty=property_values(crate, "#run", facts),
    )
    orchestration(crate, run, actions, jobs, steps, author)
    license_ = entity(crate, LICENSE["@id"], "CreativeWork", name=LICENSE["name"])
    license_["identifier"] = LICENSE["identifier"]
    root = crate.root_dataset
    root["name"] = "amber-repro results"
    root["description"] = (
        "Every output of one amber-repro run (LLM360 AmberSafe reproduction). The license is the "
        "workflow's; the data and models keep their sources' licenses."
    )
    root["license"] = license_
    root["datePublished"] = run.get("endTime") or root.get("datePublished")
    if author is not None:
        root["author"] = author
    if publisher is not None:
        root["publisher"] = publisher
    root["conformsTo"] = profiles
    root["mainEntity"] = workflow
    root["mentions"] = [run, *actions]
    add_scratch(crate, results, datasets_cache(config, results))
    return crate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, required=True, help="the results folder (root)")
    parser.add_argument("--jobs-json", required=True, help="the DAG's jobs in order, as JSON")
    parser.add_argument("--config-json", required=True, help="the resolved config as JSON")
    parser.add_argument("--out", type=Path, required=True, help="results/ro-crate-metadata.json")


def main(args: argparse.Namespace) -> None:
    if not args.results.is_dir():
        raise AmberError(f"{args.results}: no such folder")
    jobs, config = json.loads(args.jobs_json), json.loads(args.config_json)
    crate = build_crate(args.results, jobs, config)
    write_json(args.out, single_values(crate.metadata.generate()))
    print(f"wrote {args.out} ({len(crate.data_entities)} files, {len(jobs)} jobs)")


def dag_order(jobs: list[dict]) -> list[dict]:
    """The jobs (each with "inputs" and "outputs" paths) reordered so that every job comes after
    the jobs making its inputs, otherwise keeping their order: the crate lists them so. An input
    inside an output folder counts as that folder's. A cycle (impossible in a Snakemake DAG) is
    an error naming the jobs left."""
    maker = {Path(path): i for i, job in enumerate(jobs) for path in job["outputs"]}

    def makers(job: dict) -> set[int]:
        found = set()
        for path in map(Path, job["inputs"]):
            found |= {maker[p] for p in (path, *path.parents) if p in maker}
        return found

    needs = [makers(job) - {i} for i, job in enumerate(jobs)]
    placed: list[int] = []
    while len(placed) < len(jobs):
        ready = [i for i in range(len(jobs)) if i not in placed and needs[i] <= set(placed)]
        if not ready:
            left = [jobs[i]["job"] for i in range(len(jobs)) if i not in placed]
            raise ValueError(f"the jobs {left} depend on each other in a cycle")
        placed.append(ready[0])
    return [jobs[i] for i in placed]
