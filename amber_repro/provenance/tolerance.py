"""Tolerance mode of a replay (`reproduce --tolerance`): a file whose bytes differ from the run's
is compared by its numbers (amber_repro/provenance/verify.py compares bytes and records), with a
tolerance per kind of value (`Tolerances`), and the largest difference per artifact reported.
Figures, tables and generations are judged by what they are drawn from (`judge_by_inputs`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from amber_repro.errors import AmberError
from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.verify import (
    PRESENTATION_SUFFIXES,
    Row,
    comparable,
    comparison,
    load_json,
    load_lines,
)

# Eval records: their numbers are scores (accuracies, rates), compared absolutely.
EVAL_RECORD = re.compile(r"(^|/)eval(/[^/]+)?\.json$")


@dataclass(frozen=True)
class Tolerances:
    """How far a replay's numbers may be from the run's, per kind of value."""

    weights: float  # per tensor: largest |a - b| over the tensor's largest |a|
    values: float  # log-probs, losses, metrics: |a - b| / max(1, |a|) (relative above 1)
    scores: float  # eval scores (eval.json, eval/*.json): |a - b|

    @classmethod
    def parse(cls, text: str) -> Tolerances:
        """From "1e-3" (every kind), "1e-3,scores=5e-3" (one kind otherwise) or
        "weights=1e-3,values=1e-4,scores=1e-2" (each kind named)."""
        kinds = [f.name for f in fields(cls)]
        default, given = None, {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.rpartition("=")
            if name and name not in kinds:
                raise AmberError(f"--tolerance {text}: unknown kind {name!r} (kinds: {kinds})")
            try:
                number = float(value)
            except ValueError:
                raise AmberError(f"--tolerance {text}: {value!r} is not a number") from None
            if not number >= 0:
                raise AmberError(f"--tolerance {text}: {value!r} must be 0 or more")
            if name:
                given[name] = number
            else:
                default = number
        missing = [kind for kind in kinds if kind not in given]
        if missing and default is None:
            raise AmberError(f"--tolerance {text}: no tolerance for {', '.join(missing)}")
        return cls(**{kind: given.get(kind, default) for kind in kinds})

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(a))


def numeric_differences(
    expected: Any, got: Any, path: str = "", relative: bool = False
) -> tuple[dict[str, float], list]:
    """Differences of the numbers in two JSON values ({json path: |a - b|, or with `relative`
    |a - b| / max(1, |a|)}) and the paths where anything else differs (text, structure)."""
    numbers: dict[str, float] = {}
    other: list[str] = []
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in expected or key not in got:
                other.append(f"{path}/{key}")
                continue
            n, o = numeric_differences(expected[key], got[key], f"{path}/{key}", relative)
            numbers.update(n)
            other += o
    elif isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            n, o = numeric_differences(a, b, f"{path}/{i}", relative)
            numbers.update(n)
            other += o
    elif _is_number(expected) and _is_number(got):
        if math.isnan(expected) and math.isnan(got):
            numbers[path or "/"] = 0.0
        else:
            a, b = float(expected), float(got)
            numbers[path or "/"] = _relative(a, b) if relative else abs(a - b)
    elif expected != got and not (_is_sha256(expected) and _is_sha256(got)):
        # A file's hash follows its bytes; the file is compared in its own row.
        other.append(path or "/")
    return numbers, other


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def tensor_differences(expected: Path, got: Path) -> tuple[dict[str, float], list[str]]:
    """Largest absolute difference per tensor of two safetensors files (read without pickle),
    relative to the tensor's largest absolute value, and the tensors present in one file only or
    with another shape or dtype."""
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
        x, y = a[name].double(), b[name].double()
        scale = x.abs().max().item()
        delta = (x - y).abs().max().item()
        differences[name] = delta / scale if scale > 0 else delta
    return differences, other


def table_differences(expected: Path, got: Path) -> tuple[dict[str, float], list[str]]:
    """Largest difference per numeric column of two parquet tables, |a - b| / max(1, |a|) (log-prob
    sums run in the hundreds); other columns must be equal."""
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
            x, y = x.cast("float64"), y.cast("float64")
            scale = pc.max_element_wise(pc.abs(x), 1.0)
            delta = pc.max(pc.divide(pc.abs(pc.subtract(x, y)), scale)).as_py()
            differences[name] = 0.0 if delta is None else float(delta)
        elif not x.equals(y):
            other.append(name)
    return differences, other


def is_presentation(artifact: str) -> bool:
    """Figures, tables and text for people (PRESENTATION_SUFFIXES): judged by what they are drawn
    from, not by their bytes."""
    return PurePosixPath(artifact).suffix in PRESENTATION_SUFFIXES


def compare_tolerant(row: Row, got: Path, original: Path | None, tolerances: Tolerances) -> Row:
    """Tolerance mode for a row that differs in bytes: weights, JSON records, training metrics and
    parquet tables by their numbers, each kind with its tolerance (the details list the
    differences). Presentation files are left to `judge_by_inputs`."""
    if row.ok or not got.is_file() or is_presentation(row.artifact):
        return row
    if original is None or not original.is_file() or sha256_file(original) != row.expected:
        row.match = "NO (no original in the bundle to compare numbers; archive WITH_RESULTS=1)"
        return row
    suffix = PurePosixPath(row.artifact).suffix
    if suffix == ".safetensors":
        numbers, other = tensor_differences(original, got)
        unit, tolerance, how = "tensor", tolerances.weights, "relative |diff|"
    elif suffix == ".parquet":
        numbers, other = table_differences(original, got)
        unit, tolerance, how = "column", tolerances.values, "relative |diff|"
    elif comparison(row.artifact, original) == "json":
        scores = EVAL_RECORD.search(row.artifact) is not None
        numbers, other = numeric_differences(
            comparable(load_json(original)), comparable(load_json(got)), relative=not scores
        )
        tolerance = tolerances.scores if scores else tolerances.values
        unit, how = "value", "|diff|" if scores else "relative |diff|"
    elif suffix == ".jsonl":  # training metrics, one JSON object a step
        numbers, other = numeric_differences(load_lines(original), load_lines(got), relative=True)
        unit, tolerance, how = "value", tolerances.values, "relative |diff|"
    else:
        return row
    worst = max(numbers.values(), default=0.0)
    row.ok = not other and worst <= tolerance
    verdict = "within" if row.ok else "NOT within"
    row.match = f"{verdict} {tolerance:g} (max {how} {worst:.3g} over {len(numbers)} {unit}s)"
    differing = sorted(((n, d) for n, d in numbers.items() if d > 0), key=lambda item: -item[1])
    more = max(0, len(differing) - 5)
    row.details = [f"{name}: {delta:.3g}" for name, delta in differing[:5]]
    row.details += [f"... and {more} smaller differences"] if more else []
    row.details += [f"{name}: differs (not a number)" for name in other]
    return row


def judge_by_inputs(row: Row, sources: list[Row]) -> Row:
    """A presentation file whose bytes differ, judged by the compared rows it is drawn from (its
    job's inputs and the job's other results): within tolerance when all of them are."""
    if row.ok or row.got is None or not is_presentation(row.artifact):
        return row
    compared = [s for s in sources if not is_presentation(s.artifact) and s.expected is not None]
    failed = [s.artifact for s in compared if not s.ok]
    row.ok = bool(compared) and not failed
    if failed:
        row.match = f"NOT within: drawn from {failed[0]}, which is not"
    elif compared:
        row.match = f"differs; drawn from {len(compared)} artifacts within tolerance"
    else:
        row.match = "NO (drawn from nothing compared)"
    return row
