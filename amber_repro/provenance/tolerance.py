"""Tolerance mode of a replay (`reproduce --tolerance`): a file whose bytes differ from the run's
is compared by its numbers (amber_repro/provenance/verify.py compares bytes and records)."""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath
from typing import Any

from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.verify import (
    PRESENTATION_SUFFIXES,
    Row,
    comparable,
    comparison,
    load_json,
    load_lines,
)


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
            comparable(load_json(original)), comparable(load_json(got))
        )
        unit = "value"
    elif suffix == ".jsonl":  # training metrics, one JSON object a step
        numbers, other = numeric_differences(load_lines(original), load_lines(got))
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
