"""Whether two runs of the workflow made the same outputs, file by file, as their crates list them.

    python bench/same_outputs.py BEFORE/results AFTER/results

Used to show that a change with no intended change in behaviour (a restructuring) leaves every
artifact as it was. Each file the first run's crate lists is compared as a replay compares it
(amber_repro/provenance/verify.py): by sha256, or for a stage's JSON record without its timing and
run blocks (and without the hashes it holds of other JSON records); records that hold timings
(model cards, amber_repro.json, TensorBoard events, logs, benchmarks) are listed, not compared.
Exit status 1 when any compared file differs or is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from amber_repro.provenance.hashing import sha256_file
from amber_repro.provenance.verify import CRATE_NAME, comparable, comparison


def crate_files(results: Path) -> dict[str, str | None]:
    """Path (relative to results/) -> sha256 of every File the crate lists."""
    graph = json.loads((results / CRATE_NAME).read_text())["@graph"]
    return {e["@id"]: e.get("sha256") for e in graph if e.get("@type") == "File"}


def without_record_hashes(value):
    """A record without the hashes it holds of other JSON records (source.json, in the data
    manifest): those hash the other record's run block too, which names the commit."""
    if isinstance(value, dict):
        return {
            key: without_record_hashes(item)
            for key, item in value.items()
            if not (isinstance(key, str) and key.endswith(".json") and isinstance(item, str))
        }
    if isinstance(value, list):
        return [without_record_hashes(item) for item in value]
    return value


def verdict(path: str, before: Path, after: Path, digest: str | None) -> str:
    kind = comparison(path, before / path)
    if kind == "record":
        return "record"
    if not (after / path).is_file():
        return "MISSING"
    if kind == "json":
        same = without_record_hashes(
            comparable(json.loads((before / path).read_text()))
        ) == without_record_hashes(comparable(json.loads((after / path).read_text())))
    else:
        same = (digest or sha256_file(before / path)) == sha256_file(after / path)
    return f"same ({kind})" if same else f"DIFFERENT ({kind})"


def main(argv: list[str]) -> int:
    before, after = map(Path, argv)
    rows = {path: verdict(path, before, after, d) for path, d in crate_files(before).items()}
    width = max(map(len, rows))
    for path, result in rows.items():
        print(f"{path:<{width}}  {result}")
    counts: dict[str, int] = {}
    for result in rows.values():
        counts[result.split(" ")[0]] = counts.get(result.split(" ")[0], 0) + 1
    print(", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    return 1 if counts.get("DIFFERENT") or counts.get("MISSING") else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
