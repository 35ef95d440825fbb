"""The workflow side of the provenance crate (amber_repro/provenance/crate.py), as the Provenance
Run Crate profile (https://w3id.org/ro/wfrun/provenance/0.5) describes a workflow and its run:

  - the Snakefile, a ComputationalWorkflow (and HowTo) whose `hasPart` are its tools, one
    SoftwareApplication "#rule-<rule>" per rule (its `url` the rule's file), whose `step` are
    HowToSteps "#step-<rule>" (`workExample` the tool, `position` the DAG order), and whose `input`
    are the config's settings as FormalParameters "#param-<key>" (dotted keys, e.g. dpo.beta);
  - the run's values of those settings, PropertyValues "#run-setting-<key>" (`exampleOfWork` the
    FormalParameter);
  - Snakemake, the engine, and its OrganizeAction "#organize" (`object` one ControlAction
    "#control-<job>" per job, whose `instrument` is the job's step and `object` its CreateAction;
    `result` the run);
  - who is credited: the author (also every action's `agent`) and the publisher, from config
    `crate`, else git.
"""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import version
from pathlib import Path

from amber_repro import __version__
from amber_repro.provenance.crate_files import entity, sha256_of
from amber_repro.provenance.git_tree import ArchiveError, git
from amber_repro.provenance.run_context import REPO_DIR

SNAKEMAKE_LANGUAGE = "https://w3id.org/workflowhub/workflow-ro-crate#snakemake"
SNAKEMAKE_ENGINE = "https://snakemake.github.io"
BIOSCHEMAS_WORKFLOW = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
BIOSCHEMAS_PARAMETER = "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
COMPLETED = "http://schema.org/CompletedActionStatus"  # a string, as the profiles check it
LICENSE = {
    "@id": "https://spdx.org/licenses/Apache-2.0",
    "name": "Apache License 2.0",
    "identifier": "Apache-2.0",
}
# The schema.org DataType of a setting's value; lists, mappings and nulls are stored as JSON text.
VALUE_TYPES = {bool: "Boolean", int: "Integer", float: "Float", str: "Text"}


def repo_file(crate, results: Path, relative: str, properties: dict):
    """A file of the workflow (outside results/), as a File whose @id leaves the crate root
    ("../rules/sft.smk"): a bundle's crate maps it to code/ (bundle_crate.py)."""
    path = REPO_DIR / relative
    if path.is_file():
        properties = {"sha256": sha256_of(path), **properties}
    identifier = Path(os.path.relpath(path, results.absolute())).as_posix()
    return crate.get(identifier) or crate.add_file(dest_path=identifier, properties=properties)


def git_identity(key: str) -> str | None:
    """git's configured user.name or user.email, else the commit's author's."""
    for args in (["config", f"user.{key}"], ["log", "-1", f"--format=%a{key[0]}", "HEAD"]):
        try:
            found = git(REPO_DIR, *args).decode().strip()
        except ArchiveError:
            continue
        if found:
            return found
    return None


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "unnamed"


def credits(crate, settings: dict) -> tuple:
    """The author (a Person) and the publisher (an Organization), or None where unknown."""
    name, email = settings.get("author"), None
    if not name:  # git's identity, with its email (a configured author has only author_id)
        name, email = git_identity("name"), git_identity("email")
    author = None
    if name:
        mailbox = f"mailto:{email}" if email else None
        identifier = settings.get("author_id") or mailbox or f"#person-{slug(name)}"
        author = entity(crate, identifier, "Person", name=name, email=email)
    publisher = organization(crate, settings.get("publisher"), settings.get("publisher_id"))
    affiliation = settings.get("author_affiliation")
    if publisher is not None and affiliation == publisher["name"]:
        affiliation = publisher  # the same organisation, with its identifier
    else:
        affiliation = organization(crate, affiliation, None)
    if author is not None and affiliation is not None:
        author["affiliation"] = affiliation
    return author, publisher


def organization(crate, name: str | None, identifier: str | None):
    if not name:
        return None
    url = {"@id": identifier} if identifier else None
    return entity(
        crate, identifier or f"#organization-{slug(name)}", "Organization", name=name, url=url
    )


def flat_settings(config: dict, prefix: str = "") -> dict:
    """Every leaf of the config as dotted key -> value (lists and empty mappings are leaves)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def settings_parameters(crate, config: dict) -> tuple[list, list]:
    """The workflow's inputs (a FormalParameter per setting) and the run's values of them."""
    parameters, values = [], []
    for key, value in flat_settings(config).items():
        kind = VALUE_TYPES.get(type(value), "Text")
        parameter = entity(
            crate,
            f"#param-{key}",
            "FormalParameter",
            name=key,
            additionalType=kind,
            valueRequired="False",
            description="a config setting (docs/settings.md)",
            conformsTo={"@id": BIOSCHEMAS_PARAMETER},
        )
        if isinstance(value, list | dict) or value is None:
            value = json.dumps(value, sort_keys=True, ensure_ascii=False)
        pv = entity(
            crate, f"#run-setting-{key}", "PropertyValue", name=key, exampleOfWork=parameter
        )
        pv["value"] = value  # set apart: entity() leaves out None and empty values
        parameters.append(parameter)
        values.append(pv)
    return parameters, values


def tools_and_steps(
    crate, jobs: list[dict], results: Path, workflow_url: str | None
) -> tuple[dict, dict]:
    """rule -> its tool (SoftwareApplication: "<workflow_url>#rule-<rule>", or "#rule-<rule>"
    when the workflow has no published address) and rule -> its HowToStep, in DAG order."""
    tools, steps = {}, {}
    for job in jobs:
        rule = job["rule"]
        if rule in tools:
            continue
        source = job.get("snakefile")
        text = {"encodingFormat": "text/plain"}
        url = repo_file(crate, results, source, text) if source else None
        tools[rule] = entity(
            crate,
            f"{workflow_url or ''}#rule-{rule}",
            "SoftwareApplication",
            name=f"rule {rule}",
            description=f"the Snakemake rule {rule} ({source})",
            version=__version__,
            url=url,
        )
        steps[rule] = entity(
            crate,
            f"#step-{rule}",
            "HowToStep",
            name=f"step {rule}",
            position=str(len(steps)),
            workExample=tools[rule],
        )
    return tools, steps


def workflow_entity(
    crate, results: Path, author, tools: dict, steps: dict, inputs: list, url: str | None
):
    """The Snakefile: the crate's mainEntity and the run's instrument."""
    language = entity(
        crate,
        SNAKEMAKE_LANGUAGE,
        "ComputerLanguage",
        name="Snakemake",
        url={"@id": SNAKEMAKE_ENGINE},
        version=version("snakemake"),
    )
    properties = {
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
        "conformsTo": {"@id": BIOSCHEMAS_WORKFLOW},
        "name": "amber-repro",
        "description": "LLM360 AmberSafe (and AmberChat before it) as one Snakemake DAG: raw "
        "PKU-SafeRLHF, preference pairs, SFT, reference log-probs, DPO, evaluation",
        "version": __version__,
        "programmingLanguage": language,
        "encodingFormat": "text/plain",
        "license": {"@id": LICENSE["@id"]},
        "hasPart": list(tools.values()),
        "step": list(steps.values()),
        "input": inputs,
    }
    if author is not None:
        properties["creator"] = author
    if url:
        properties["url"] = url
    return repo_file(crate, results, "Snakefile", properties)


def engine(crate):
    """Snakemake, the engine that ran the jobs."""
    return entity(
        crate,
        SNAKEMAKE_ENGINE,
        "SoftwareApplication",
        name="Snakemake",
        url={"@id": SNAKEMAKE_ENGINE},
        version=version("snakemake"),
    )


def orchestration(crate, run, actions: list, jobs: list[dict], steps: dict, author):
    """The engine's OrganizeAction and a ControlAction per job (its step, its CreateAction)."""
    controls = [
        entity(
            crate,
            f"#control-{job['job']}",
            "ControlAction",
            name=f"orchestrate {job['job']}",
            instrument=steps[job["rule"]],
            object=action,
            actionStatus=action.get("actionStatus"),
        )
        for job, action in zip(jobs, actions, strict=True)
    ]
    return entity(
        crate,
        "#organize",
        "OrganizeAction",
        name="Snakemake's run of the DAG",
        instrument=engine(crate),
        object=controls,
        result=run,
        agent=author,
        startTime=run.get("startTime"),
        endTime=run.get("endTime"),
        actionStatus=run.get("actionStatus"),
    )
