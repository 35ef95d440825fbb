"""What a run made, as its provenance crate records it, and how a replay's files are compared to it.

The crate (results/ro-crate-metadata.json, amber_repro/provenance/crate.py) is read by its
conventions: File entities are named by their path relative to results/ and carry `sha256`; the
root's `mentions` holds "#run" and then one CreateAction per job in DAG order, whose `result` lists
the files it made; the run's settings are PropertyValues linked from "#run" ("config", "git_commit",
...).

Verification policy (`comparison`), one rule per kind of file:
  bytes     sha256 equality: raw data, pairs, reference log-probs, weights, tokenizer and model
            config files, training metrics (metrics.jsonl), generations.md, the figures and the
            eval table. These are deterministic on one platform (checked on two runs of the
            embedded DAG).
  json      a stage's JSON record (a JSON object with a `run` or `timing` block: eval.json,
            manifest.json, a model's amber_repro.json, ref_logps/*.json, source.json): parsed and
            compared without what was measured rather than computed (`measured`: its `timing` and
            `speed` blocks, wall times, rates, dates), its `run` block (commit, config and lock
            hashes, which the replay checks once, before it runs) and the hashes it holds of files
            with measurements in them.
  card      a model card (README.md): its text without the table rows of measured values.
  presence  TensorBoard event files, whose names hold the time, host and pid of the run: one must
            exist in the same folder.
  record    logs/ and benchmarks/ (wall times, progress bars) and the crate itself: must exist,
            not compared.
Tolerance mode (tolerance.py) compares the numbers of files whose bytes differ, with a tolerance
per kind of value, and judges figures, tables and generations by what they are drawn from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from amber_repro.errors import AmberError
from amber_repro.provenance.hashing import sha256_file

CRATE_NAME = "ro-crate-metadata.json"
RECORD = "record (not compared: holds timings)"
UNCOMPARED_BLOCKS = ("timing", "run")
# What a run measured rather than computed: blocks of a record, and keys anywhere in it.
MEASURED_BLOCKS = ("timing", "speed")
MEASURED_KEY = re.compile(r"(seconds|/s|_per_second)$")
# The records stages write beside their outputs (each with "command", "software", "run", ...).
RECORD_NAMES = {"source.json", "manifest.json", "amber_repro.json", "amber_repro_source.json"}
RECORD_NAMES |= {"eval.json", "eval_datasets.json", "verdicts.json"}
# Files whose bytes hold measurements (the records, the model cards): no record's hash of one is
# compared, the file itself is, in its own row.
MEASURED_FILES = {*RECORD_NAMES, "README.md"}
TENSORBOARD_EVENTS = "events.out.tfevents.*"  # the rest of the name: time, host, pid
# Snakemake's own bookkeeping inside output folders (the time it marked a folder complete): not an
# output of any stage, so neither listed in the crate nor compared.
SNAKEMAKE_BOOKKEEPING = frozenset({".snakemake_timestamp"})
# Files that follow from the weights and are meant for people; tolerance mode reports them only.
PRESENTATION_SUFFIXES = (".md", ".png", ".html")


class VerifyError(AmberError):
    exit_code = 2


def _parts(path: str) -> tuple[str, ...]:
    parts = PurePosixPath(path).parts
    return parts[1:] if parts[:1] == ("results",) else parts


def is_record(path: str) -> bool:
    """Whether a file (path relative to results/, or to its model folder) is only checked to
    exist: logs, benchmarks, the crate, TensorBoard event files (whose names change)."""
    parts = _parts(path)
    if not parts:
        return False
    return parts[-1] == CRATE_NAME or "tensorboard" in parts or parts[0] in ("logs", "benchmarks")


def is_stage_record(data: Any) -> bool:
    return isinstance(data, dict) and any(block in data for block in UNCOMPARED_BLOCKS)


def comparison(path: str, expected: Path | None = None) -> str:
    """How a result file is compared: "bytes", "json", "card", "presence" or "record" (see the
    module's docstring). `expected`, the original when the bundle holds it, tells a stage's
    record from a model's config."""
    parts = _parts(path)
    if parts and "tensorboard" in parts:
        return "presence"
    if is_record(path):
        return "record"
    if parts and parts[-1] == "README.md":
        return "card"
    if path.endswith(".json") and expected is not None and expected.is_file():
        try:
            data = json.loads(expected.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "bytes"
        if is_stage_record(data):
            return "json"
    return "bytes"


def measured(key: Any) -> bool:
    return isinstance(key, str) and (key in MEASURED_BLOCKS or MEASURED_KEY.search(key) is not None)


def comparable(record: Any, top: bool = True) -> Any:
    """A JSON record without its uncompared blocks, what it measured, and its hashes of files
    that hold measurements."""
    if isinstance(record, dict):
        return {
            key: comparable(value, top=False)
            for key, value in record.items()
            if not (top and key in UNCOMPARED_BLOCKS)
            and not measured(key)
            and not _names_measured_file(key)
        }
    if isinstance(record, list):
        return [comparable(value, top=False) for value in record]
    return record


def _names_measured_file(key: Any) -> bool:
    """A key that names a file with measurements in it (the key of its hash), e.g. "README.md"."""
    if not (isinstance(key, str) and ("/" in key or "." in key)):
        return False
    return is_record(key) or PurePosixPath(key).name in MEASURED_FILES


def card_text(path: Path) -> list[str]:
    """A model card's lines without the table rows of measured values ("| train tokens/s | ...")."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if not measured(line.strip("| ").split(" |")[0])]


def uncompared_differences(expected: dict, got: dict) -> list[str]:
    """What differs in the parts of two JSON records that are not compared, for the table."""
    blocks = tuple(dict.fromkeys((*UNCOMPARED_BLOCKS, *MEASURED_BLOCKS)))
    found = [block for block in blocks if expected.get(block) != got.get(block)]
    tops = [{k: v for k, v in r.items() if k not in blocks} for r in (expected, got)]
    if tops[0] != tops[1]:
        found.append("measured values and hashes of files holding them")
    return found


# --- the crate ------------------------------------------------------------------------------------


def _refs(value: Any) -> list[str]:
    """The @ids of a JSON-LD property value: one reference or a list of them."""
    values = value if isinstance(value, list) else [value] if value is not None else []
    return [v["@id"] if isinstance(v, dict) else v for v in values]


@dataclass
class Job:
    id: str
    name: str
    results: list[str] = field(default_factory=list)
    container: str | None = None  # the image it ran in
    inputs: list[str] = field(default_factory=list)  # the files it read (its `object`)
    folders: list[str] = field(default_factory=list)  # its directory() outputs, "<folder>/"

    @property
    def rule(self) -> str:
        return self.name.partition("[")[0]


class Crate:
    """The parts of a Workflow Run RO-Crate that a replay needs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.metadata = json.loads(self.path.read_text(encoding="utf-8"))
            graph = self.metadata["@graph"]
        except (OSError, ValueError, KeyError) as error:
            raise VerifyError(f"{path}: not a readable RO-Crate ({error})") from None
        self.entities = {entity["@id"]: entity for entity in graph}
        descriptor = self.entities.get(CRATE_NAME, {})
        root_id = next(iter(_refs(descriptor.get("about"))), "./")
        if root_id not in self.entities:
            raise VerifyError(f"{path}: no root dataset {root_id!r}")
        self.root = self.entities[root_id]
        mentioned = _refs(self.root.get("mentions"))
        self.jobs = [self._job(ref) for ref in mentioned if ref != "#run"]
        if not self.jobs:
            raise VerifyError(f"{path}: the root's `mentions` lists no jobs")

    def _job(self, ref: str) -> Job:
        action = self.entities.get(ref)
        if action is None:
            raise VerifyError(f"{self.path}: {ref} is mentioned but not described")
        image = next(iter(_refs(action.get("containerImage"))), None)
        container = self.entities.get(image, {}).get("name", image) if image else None
        name = action.get("name", ref.removeprefix("#job-"))
        folders = [r for r in _refs(action.get("result")) if r.endswith("/")]
        inputs = self._files(action, "object")
        return Job(ref, name, self._files(action), container, inputs, folders)

    def _files(self, action: dict, key: str = "result") -> list[str]:
        """The File ids of a job's results (or inputs), datasets (folders) expanded to parts."""
        files: list[str] = []
        pending = list(_refs(action.get(key)))
        while pending:
            ref = pending.pop(0)
            entity = self.entities.get(ref, {})
            parts = _refs(entity.get("hasPart"))
            if parts:
                pending[:0] = parts
            elif ref not in files:
                files.append(ref)
        return files

    def sha256(self, file_id: str) -> str | None:
        return self.entities.get(file_id, {}).get("sha256")

    def value(self, name: str) -> Any:
        """The value of the run's PropertyValue `name` (those linked from "#run" first)."""
        run = self.entities.get("#run", {})
        linked = _refs(run.get("object")) + _refs(run.get("additionalProperty"))
        candidates = [self.entities[ref] for ref in linked if ref in self.entities]
        candidates += [e for e in self.entities.values() if e not in candidates]
        for entity in candidates:
            types = _refs(entity.get("@type"))
            if "PropertyValue" in types and entity.get("name") == name:
                return entity.get("value")
        return None

    def json_property(self, name: str) -> Any:
        value = self.value(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    @property
    def config(self) -> dict:
        config = self.json_property("config")
        if not isinstance(config, dict):
            raise VerifyError(f"{self.path}: no PropertyValue 'config' with the resolved config")
        return config


# --- comparing one file ---------------------------------------------------------------------------


@dataclass
class Row:
    artifact: str
    job: str
    expected: str | None
    got: str | None
    match: str
    ok: bool
    details: list[str] = field(default_factory=list)


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "-"


def compare_exact(
    artifact: str, job: str, expected_sha: str | None, got: Path, original: Path | None
) -> Row:
    """One artifact of a replay against the crate: byte equality, or a JSON record's comparable
    content (the original from the bundle), or listed only (a record)."""
    kind = comparison(artifact, original)
    if kind == "presence":  # the replay's file has its own name: time, host, pid
        found = sorted(got.parent.glob(TENSORBOARD_EVENTS))
        if not found:
            return Row(artifact, job, expected_sha, None, "NO (missing)", False)
        return Row(
            artifact, job, expected_sha, sha256_file(found[0]), "present (named by time)", True
        )
    got_sha = sha256_file(got) if got.is_file() else None
    if got_sha is None:
        return Row(artifact, job, expected_sha, None, "NO (missing)", False)
    if kind == "record":
        return Row(artifact, job, expected_sha, got_sha, RECORD, True)
    if got_sha == expected_sha:
        return Row(artifact, job, expected_sha, got_sha, "yes", True)
    same_original = (
        kind in ("card", "json")
        and original is not None
        and original.is_file()
        and sha256_file(original) == expected_sha
    )
    if same_original and kind == "card":
        if card_text(original) != card_text(got):
            return Row(artifact, job, expected_sha, got_sha, "NO", False)
        return Row(artifact, job, expected_sha, got_sha, "yes (without measured rows)", True)
    if same_original:  # a stage record
        before, after = load_json(original), load_json(got)
        if not isinstance(after, dict) or comparable(before) != comparable(after):
            return Row(artifact, job, expected_sha, got_sha, "NO", False)
        ignored = ", ".join(uncompared_differences(before, after))
        return Row(artifact, job, expected_sha, got_sha, f"yes (without {ignored})", True)
    return Row(artifact, job, expected_sha, got_sha, "NO", False)


def load_lines(path: Path) -> list | None:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def format_table(rows: list[Row]) -> str:
    header = ("artifact", "job", "expected sha256", "got", "match")
    cells = [header] + [
        (r.artifact, r.job, _short(r.expected), _short(r.got), r.match) for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(4)]
    lines = []
    for n, line in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(line[:4], widths, strict=True)) + "  " + line[4]
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)
