"""What a run made, as its provenance crate records it, and how a replay's files are compared to it.

The crate (results/ro-crate-metadata.json, amber_repro/provenance/crate.py) is read by its
conventions: File entities are named by their path relative to results/ and carry `sha256`; the
root's `mentions` holds "#run" and then one CreateAction per job in DAG order, whose `result` lists
the files it made; the run's settings are PropertyValues linked from "#run" ("config", "git_commit",
...).

Verification policy (`comparison`), one rule per kind of file:
  bytes   sha256 equality: raw data, pairs, reference log-probs, weights, tokenizer and model
          config files, training metrics (metrics.jsonl), generations.md, the figures and the eval
          table. These are deterministic on one platform (checked on two runs of the embedded DAG).
  json    a stage's JSON record (a JSON object with a `run` or `timing` block: eval.json,
          manifest.json, ref_logps/*.json, source.json): parsed and compared without its `timing`
          block (wall times), its `run` block (commit, config and lock hashes, which the replay
          checks once, before it runs) and the hashes it holds of records (below).
  record  not compared, listed: it holds timings. A model folder's amber_repro.json and model card
          README.md (train tokens/s), TensorBoard event files (wall times; host name and pid in the
          file name), logs/ and benchmarks/, and the crate itself.
In tolerance mode (`compare_tolerant`) weights are compared by the largest absolute difference per
tensor, JSON records, training metrics and parquet tables by the absolute difference of each number
(hashes of files inside a record are left to those files' rows); figures, the eval table and the
generations are reported, not judged: they follow from the weights.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from amber_repro.errors import AmberError
from amber_repro.provenance.hashing import sha256_file

CRATE_NAME = "ro-crate-metadata.json"
RECORD = "record (not compared: holds timings)"
UNCOMPARED_BLOCKS = ("timing", "run")
# Files that follow from the weights and are meant for people; tolerance mode reports them only.
PRESENTATION_SUFFIXES = (".md", ".png", ".html")


class VerifyError(AmberError):
    exit_code = 2


def is_record(path: str) -> bool:
    """Whether a file (path relative to results/, or to its model folder) holds timings."""
    parts = PurePosixPath(path).parts
    if parts[:1] == ("results",):
        parts = parts[1:]
    if not parts:
        return False
    return (
        parts[-1] in ("amber_repro.json", "README.md", CRATE_NAME)
        or "tensorboard" in parts
        or parts[0] in ("logs", "benchmarks")
    )


def is_stage_record(data: Any) -> bool:
    return isinstance(data, dict) and any(block in data for block in UNCOMPARED_BLOCKS)


def comparison(path: str, expected: Path | None = None) -> str:
    """How a result file is compared: "bytes", "json" or "record" (see the module's docstring).
    `expected`, the original when the bundle holds it, tells a stage's record from a model's
    config."""
    if is_record(path):
        return "record"
    if path.endswith(".json") and expected is not None and expected.is_file():
        try:
            data = json.loads(expected.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "bytes"
        if is_stage_record(data):
            return "json"
    return "bytes"


def comparable(record: Any, top: bool = True) -> Any:
    """A JSON record without its uncompared blocks and without its hashes of records."""
    if isinstance(record, dict):
        return {
            key: comparable(value, top=False)
            for key, value in record.items()
            if not (top and key in UNCOMPARED_BLOCKS) and not _is_record_path(key)
        }
    if isinstance(record, list):
        return [comparable(value, top=False) for value in record]
    return record


def _is_record_path(key: Any) -> bool:
    """A key that names a record file (the key of its hash), e.g. "README.md"."""
    return isinstance(key, str) and ("/" in key or "." in key) and is_record(key)


def uncompared_differences(expected: dict, got: dict) -> list[str]:
    """What differs in the parts of two JSON records that are not compared, for the table."""
    found = [block for block in UNCOMPARED_BLOCKS if expected.get(block) != got.get(block)]
    tops = [{k: v for k, v in r.items() if k not in UNCOMPARED_BLOCKS} for r in (expected, got)]
    if tops[0] != tops[1]:
        found.append("hashes of records")
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

    @property
    def rule(self) -> str:
        return self.name.partition("[")[0]


class Crate:
    """The parts of a Workflow Run RO-Crate that a replay needs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            graph = json.loads(self.path.read_text(encoding="utf-8"))["@graph"]
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
        return Job(ref, name, self._files(action), container)

    def _files(self, action: dict) -> list[str]:
        """The File ids of a job's results, datasets (folders) expanded to their parts."""
        files: list[str] = []
        pending = list(_refs(action.get("result")))
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
    got_sha = sha256_file(got) if got.is_file() else None
    kind = comparison(artifact, original)
    if kind == "record":
        return Row(artifact, job, expected_sha, got_sha, RECORD, True)
    if got_sha is None:
        return Row(artifact, job, expected_sha, None, "NO (missing)", False)
    if got_sha == expected_sha:
        return Row(artifact, job, expected_sha, got_sha, "yes", True)
    if kind == "json" and original is not None and sha256_file(original) == expected_sha:
        before, after = _load_json(original), _load_json(got)
        if not isinstance(after, dict) or comparable(before) != comparable(after):
            return Row(artifact, job, expected_sha, got_sha, "NO", False)
        ignored = ", ".join(uncompared_differences(before, after))
        return Row(artifact, job, expected_sha, got_sha, f"yes (without {ignored})", True)
    return Row(artifact, job, expected_sha, got_sha, "NO", False)


def _load_lines(path: Path) -> list | None:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


# --- tolerance mode -------------------------------------------------------------------------------


def numeric_differences(expected: Any, got: Any, path: str = "") -> tuple[dict[str, float], list]:
    """Absolute differences of the numbers in two JSON values ({json path: |a - b|}) and the paths
    where anything else differs (text, structure)."""
    numbers: dict[str, float] = {}
    other: list[str] = []
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in expected or key not in got:
                other.append(f"{path}/{key}")
                continue
            n, o = numeric_differences(expected[key], got[key], f"{path}/{key}")
            numbers.update(n)
            other += o
    elif isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            n, o = numeric_differences(a, b, f"{path}/{i}")
            numbers.update(n)
            other += o
    elif _is_number(expected) and _is_number(got):
        if math.isnan(expected) and math.isnan(got):
            numbers[path or "/"] = 0.0
        else:
            numbers[path or "/"] = abs(float(expected) - float(got))
    elif expected != got and not (_is_sha256(expected) and _is_sha256(got)):
        # A file's hash follows its bytes; the file is compared in its own row.
        other.append(path or "/")
    return numbers, other


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def tensor_differences(expected: Path, got: Path) -> tuple[dict[str, float], list[str]]:
    """Largest absolute difference per tensor of two safetensors files (read without pickle), and
    the tensors present in one file only or with another shape or dtype."""
    from safetensors.torch import load_file

    a, b = load_file(str(expected)), load_file(str(got))
    differences, other = {}, []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b or a[name].shape != b[name].shape:
            other.append(name)
            continue
        if a[name].dtype != b[name].dtype:
            other.append(f"{name} (dtype {a[name].dtype} vs {b[name].dtype})")
            continue
        if a[name].numel() == 0:
            differences[name] = 0.0
            continue
        delta = (a[name].double() - b[name].double()).abs().max().item()
        differences[name] = delta
    return differences, other


def table_differences(expected: Path, got: Path) -> tuple[dict[str, float], list[str]]:
    """Largest absolute difference per numeric column of two parquet tables; other columns must be
    equal."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    a, b = pq.read_table(expected), pq.read_table(got)
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return {}, ["schema or row count"]
    differences, other = {}, []
    for name in a.column_names:
        x, y = a[name], b[name]
        if pt.is_floating(x.type):
            delta = pc.max(pc.abs(pc.subtract(x.cast("float64"), y.cast("float64")))).as_py()
            differences[name] = 0.0 if delta is None else float(delta)
        elif not x.equals(y):
            other.append(name)
    return differences, other


def compare_tolerant(row: Row, got: Path, original: Path | None, tolerance: float) -> Row:
    """Tolerance mode for a row that differs in bytes: weights, JSON records and parquet tables by
    their numbers (the details list every difference); presentation files are reported only."""
    if row.ok or not got.is_file():
        return row
    suffix = PurePosixPath(row.artifact).suffix
    if suffix in PRESENTATION_SUFFIXES:
        row.match, row.ok = "differs (follows from the weights; reported only)", True
        return row
    if original is None or not original.is_file() or sha256_file(original) != row.expected:
        row.match = "NO (no original in the bundle to compare numbers; archive WITH_RESULTS=1)"
        return row
    if suffix == ".safetensors":
        numbers, other = tensor_differences(original, got)
        unit = "tensor"
    elif suffix == ".parquet":
        numbers, other = table_differences(original, got)
        unit = "column"
    elif comparison(row.artifact, original) == "json":
        numbers, other = numeric_differences(
            comparable(_load_json(original)), comparable(_load_json(got))
        )
        unit = "value"
    elif suffix == ".jsonl":  # training metrics, one JSON object a step
        numbers, other = numeric_differences(_load_lines(original), _load_lines(got))
        unit = "value"
    else:
        return row
    worst = max(numbers.values(), default=0.0)
    row.ok = not other and worst <= tolerance
    verdict = "within" if row.ok else "NOT within"
    row.match = f"{verdict} {tolerance:g} (max |diff| {worst:.3g} over {len(numbers)} {unit}s)"
    differing = [(name, delta) for name, delta in numbers.items() if delta > 0]
    more = 0
    if suffix == ".jsonl":  # every step's values: the largest differences only
        differing = sorted(differing, key=lambda item: -item[1])
        differing, more = differing[:5], max(0, len(differing) - 5)
    row.details = [f"{name}: {delta:.3g}" for name, delta in differing]
    row.details += [f"... and {more} smaller differences"] if more else []
    row.details += [f"{name}: differs (not a number)" for name in other]
    return row


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
