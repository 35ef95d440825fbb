"""A bundle's own crate: ro-crate-metadata.json at the bundle's root, with README.md and
ro-crate-preview.html beside it. The bundle's folder holds the workflow (code/), its config, its
lock and the run's results, so this crate is one a workflow registry can take: a Workflow Run Crate
(and Provenance Run Crate) whose mainEntity, code/Snakefile, is inside it.

It is the run's crate (results/ro-crate-metadata.json, crate.py) moved into the bundle's layout,
not a second description: the workflow's files ("../Snakefile") become code/..., the results
("ambersafe/eval.json") results/...; a result the bundle does not hold (a plain bundle holds the
records, not the checkpoints: the replay makes them again) keeps its description under the local
identifier "#results/<path>", RO-Crate's way of describing a file that is deliberately absent.
Every member the run's crate does not describe (config/, the lock, code.commit, BUNDLE.json, ...)
is added as a File with its sha256; code/ and wheels/ as folders.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from rocrate.model.preview import Preview
from rocrate.rocrate import ROCrate

from amber_repro.provenance.bundle_checks import MANIFEST
from amber_repro.provenance.crate_files import encoding_format
from amber_repro.provenance.verify import CRATE_NAME

PREVIEW = "ro-crate-preview.html"
FOLDERS = {
    "code/": "the workflow's source: `git archive` of the commit the run was made from",
    "wheels/": "every package of requirements.lock as a wheel, for an offline install",
    "image/": "the Apptainer image the GPU jobs ran in",
}
DESCRIPTIONS = {
    MANIFEST: "the bundle's manifest: commit, interpreter, and the sha256 of every other member",
    "README.md": "what this bundle is and how to replay it",
    "requirements.lock": "the resolved Python dependencies the run was made with",
    "code.commit": "the commit object: with code/ it makes the commit again",
    "code.diff": "the uncommitted changes the run was made with",
    "config/run.yaml": "every setting the run used (what a replay runs with)",
    f"results/{CRATE_NAME}": "the run's own provenance crate, rooted at results/",
}


def is_path(identifier: str) -> bool:
    """A relative path (a data entity of the run's crate), not "#local", "./" or a URI."""
    return not (
        identifier.startswith(("#", "./"))
        or ":" in identifier.split("/", 1)[0]
        or identifier == CRATE_NAME
    )


def moved(identifier: str, held: set[str]) -> str:
    """Where an @id of the run's crate lies in the bundle (see the module's docstring)."""
    if not is_path(identifier):
        return identifier
    if identifier.startswith("../"):
        path = "code/" + identifier.removeprefix("../")
    else:
        path = "results/" + identifier
    if path in held or (path.endswith("/") and any(m.startswith(path) for m in held)):
        return path
    return "#" + path


def rewrite(value, held: set[str]):
    """A property value with every reference moved."""
    if isinstance(value, list):
        return [rewrite(v, held) for v in value]
    if isinstance(value, dict):
        return {k: moved(v, held) if k == "@id" else rewrite(v, held) for k, v in value.items()}
    return value


def member_entity(name: str, sha256: dict[str, str]) -> dict:
    entity = {"@id": name, "@type": "File", "name": PurePosixPath(name).name}
    if name in DESCRIPTIONS:
        entity["description"] = DESCRIPTIONS[name]
    if name != MANIFEST:  # it holds the others' hashes, not its own
        entity["sha256"] = sha256[name]
    entity["encodingFormat"] = encoding_format(name)
    return entity


def bundle_metadata(run_crate: dict, sha256: dict[str, str], commit: str) -> dict:
    """The bundle's ro-crate-metadata.json from the run's (its JSON-LD) and the members' hashes
    (README.md among them)."""
    held = set(sha256)
    graph = {item["@id"]: item for item in run_crate["@graph"]}
    moved_graph = {}
    for identifier, item in graph.items():
        if identifier in (CRATE_NAME, "./"):
            continue
        entity = rewrite(item, held)
        if entity["@id"].startswith("#results/"):
            entity["description"] = (
                "a result of the run that this bundle does not hold: a replay makes it again at "
                + entity["@id"][1:]
            )
        moved_graph[entity["@id"]] = entity
    for folder, description in FOLDERS.items():
        if any(m.startswith(folder) for m in held):
            moved_graph[folder] = {"@id": folder, "@type": "Dataset", "description": description}
    if "code/" in moved_graph:
        moved_graph["code/"]["identifier"] = commit
    for name in sorted(held):
        if name not in moved_graph and not name.startswith(tuple(FOLDERS)):
            moved_graph[name] = member_entity(name, sha256)
    moved_graph["README.md"]["about"] = {"@id": "./"}

    root = rewrite(graph["./"], held)
    root["name"] = "amber-repro run bundle"
    root["description"] = (
        f"One run of the amber-repro workflow at commit {commit[:12]}: the workflow (code/), its "
        "config, its lock and its results, which `make reproduce` replays offline. "
        + graph["./"].get("description", "")
    )
    parts = [i for i in moved_graph if is_path(i) and i != PREVIEW]
    root["hasPart"] = [{"@id": i} for i in sorted(parts)]
    descriptor = {**graph[CRATE_NAME], "about": {"@id": "./"}}
    items = [descriptor, root, *(moved_graph[i] for i in sorted(moved_graph))]
    return {"@context": run_crate["@context"], "@graph": items}


def preview_html(metadata: dict) -> str:
    """ro-crate-preview.html, as the rocrate library renders a crate's metadata."""
    return Preview(ROCrate(source=json.loads(json.dumps(metadata)))).generate_html()


def readme(commit: str, included: dict, with_results: bool) -> str:
    """The bundle's README.md."""
    parts = [
        "# amber-repro run bundle",
        "",
        f"One finished run of amber-repro (LLM360 AmberSafe as a Snakemake DAG) at commit {commit},"
        " packed so that it can be replayed, offline, years later.",
        "",
        "- `code/`: the workflow at that commit; `code/README.md` says how to run it.",
        "- `config/run.yaml`: every setting the run used.",
        "- `requirements.lock`: the Python packages it ran with.",
        "- `results/`: the run's provenance crate (`results/ro-crate-metadata.json`), its records"
        " and what came from the network" + (", and every other output." if with_results else "."),
    ]
    if included.get("wheels"):
        parts.append("- `wheels/`: the lock as wheels.")
    if included.get("image"):
        parts.append(f"- `{included['image']}`: the Apptainer image.")
    parts += [
        f"- `{MANIFEST}`: the sha256 of every member.",
        "",
        "Replay it from a checkout of amber-repro (or from `code/`):",
        "",
        "    make reproduce ARCHIVE=<this bundle> DIR=<new folder>",
        "",
        "which installs the lock, reruns every job that can run offline and compares each output"
        " with the run's (`code/docs/reproducibility.md`).",
        "",
        "`ro-crate-metadata.json` describes all of it as a Workflow Run RO-Crate (profiles Workflow"
        " Run Crate 0.5 and Provenance Run Crate 0.5); `ro-crate-preview.html` shows it.",
        "",
    ]
    return "\n".join(parts)
