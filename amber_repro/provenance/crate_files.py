"""The entities of a crate (amber_repro/provenance/crate.py): contextual entities, File entities
with sha256, size and format, a job's outputs (a folder as a Dataset of its files), modification
times."""

from __future__ import annotations

import functools
import mimetypes
import os
from datetime import UTC, datetime
from pathlib import Path

from rocrate.model.contextentity import ContextEntity

from amber_repro.errors import AmberError
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.verify import SNAKEMAKE_BOOKKEEPING

FORMATS = {".parquet": "application/vnd.apache.parquet", ".jsonl": "application/jsonl"}
FORMATS |= {".log": "text/plain", ".tsv": "text/tab-separated-values"}
# A bundle's own members (bundle_crate.py): the lock, the commit object, the diff, config files.
FORMATS |= dict.fromkeys((".lock", ".commit", ".diff", ".yaml"), "text/plain")


def entity(crate, identifier: str, type_: str | list[str], **properties):
    """A contextual entity; properties that are None or empty are left out."""
    kept = {k: v for k, v in properties.items() if v is not None and v != []}
    return crate.add(ContextEntity(crate, identifier, properties={"@type": type_, **kept}))


def encoding_format(name: str) -> str:
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    return FORMATS.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


@functools.cache
def sha256_of(path: Path) -> str:
    """Each file is read once, however many jobs name it (a .sif image included)."""
    return sha256_file(path)


def expand(paths: list[str], missing_ok: bool = True) -> list[Path]:
    """The files of a job's paths, folders expanded recursively (without Snakemake's own
    bookkeeping in them)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = path.rglob("*")
            files += sorted(f for f in found if f.is_file() and f.name not in SNAKEMAKE_BOOKKEEPING)
        elif path.is_file():
            files.append(path)
        elif not missing_ok:
            raise AmberError(f"{path}: an output of the DAG is missing; run the workflow first")
    return files


def crate_id(path: Path, results: Path) -> str | None:
    """`path` relative to results/ (the crate root), or None for a file outside it."""
    relative = Path(os.path.relpath(path.absolute(), results.absolute()))
    return None if relative.parts[0] == ".." else relative.as_posix()


def add_file(crate, path: Path, results: Path, properties: dict | None = None):
    """The File entity of one file under results/ (added once), with its sha256 and size."""
    identifier = crate_id(path, results)
    if identifier is None:
        return None
    if crate.get(identifier) is None:
        facts = {"sha256": sha256_of(path), "contentSize": str(path.stat().st_size)}
        facts["encodingFormat"] = encoding_format(path.name)
        crate.add_file(dest_path=identifier, properties={**facts, **(properties or {})})
    return crate.get(identifier)


def add_files(crate, files: list[Path], results: Path) -> list:
    """The File entities of those files that lie under results/."""
    return [f for f in (add_file(crate, path, results) for path in files) if f is not None]


def add_outputs(crate, paths: list[str], results: Path) -> list:
    """A job's outputs under results/: a file as its File; a folder (a directory() output) as a
    Dataset "<folder>/" whose hasPart are its files."""
    entities = []
    for path in map(Path, paths):
        identifier = crate_id(path, results)
        if identifier is None:
            continue
        if not path.is_dir():
            entities += add_files(crate, [path], results)
            continue
        parts = add_files(crate, expand([str(path)]), results)
        folder = crate.get(f"{identifier}/") or crate.add_dataset(dest_path=f"{identifier}/")
        folder["hasPart"] = parts
        entities.append(folder)
    return entities


def modified_at(files: list[Path]) -> str | None:
    if not files:
        return None
    newest = max(f.stat().st_mtime for f in files)
    return datetime.fromtimestamp(newest, UTC).replace(microsecond=0).isoformat()


def as_list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def add_scratch(crate, results: Path, datasets_cache: Path | None) -> None:
    """Files the evaluate jobs leave beside their outputs (lm-eval's copy of the preference split,
    the datasets library's cache, config eval.datasets_cache, when it lies under results/), and
    this job's own log, which is still being written: listed so that every file under results/ is
    accounted for, not compared by a replay."""
    folders = [*sorted(results.glob("**/.eval_work")), *filter(None, [datasets_cache])]
    for folder in filter(Path.is_dir, folders):
        identifier = crate_id(folder, results)
        if identifier is None:  # a datasets cache outside results/
            continue
        dataset = crate.add_dataset(dest_path=f"{identifier}/")
        dataset["description"] = "working files of the evaluate jobs (not compared by a replay)"
        dataset["hasPart"] = add_files(crate, expand([str(folder)]), results)
    log = results / "logs" / "provenance.log"
    if log.is_file() and crate.get(log.relative_to(results).as_posix()) is None:
        crate.add_file(
            dest_path=log.relative_to(results).as_posix(),
            properties={
                "name": "log of the job writing this crate",
                "encodingFormat": "text/plain",
                "description": "written while the crate is: no sha256",
            },
        )


def single_values(metadata: dict) -> dict:
    """RO-Crate 1.1 writes a property with one value as that value, not a one-element list."""
    for item in metadata["@graph"]:
        for key, value in item.items():
            if key != "@type" and isinstance(value, list) and len(value) == 1:
                item[key] = value[0]
    return metadata
