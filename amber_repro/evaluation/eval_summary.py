"""`eval-summary`: the per-model evaluations (the `eval` stage's parts) and the safety verdicts
gathered into one eval.json.

eval.json (schema_version 1): the parts' keys, merged
  models.<name>                                each part's model entry, with harmless_rate
                                               {value, ci_low, ci_high, safe, total, empty} when
                                               the verdicts judged that same checkpoint
  safety                                       the judge's identity and accuracy, the interval's
                                               level, the verdicts file and its content's sha256
  dpo_rewards                                  from the part that evaluated the DPO model
  pairs_dropped, versions, kernels             as the parts have them (versions.tasks merged)
  parts.<name>.{path, content_sha256, command} which part each model's entry came from (the hash
                                               of its content without run and timing, as the
                                               verdicts'), and how it was made
  config                                       dpo_model, and each part's settings (by_model)
  run, command                                 this summary's own
  timing                                       seconds_per_model from the parts; the only part
                                               that changes between identical runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from amber_repro.errors import DataError
from amber_repro.provenance.run_context import command_line, run_context
from amber_repro.storage import read_json, write_json


def content_sha256(record: dict) -> str:
    """sha256 of a JSON record's canonical form without its run-specific blocks."""
    reproducible = {k: v for k, v in record.items() if k not in ("run", "timing")}
    text = json.dumps(reproducible, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def merge_safety(report: dict, verdicts_path: Path) -> None:
    """Copy each evaluated model's harmless_rate from the verdicts, for the same checkpoint only
    (an experiment's DPO model is not the default one)."""
    verdicts = read_json(verdicts_path)
    for name, entry in report["models"].items():
        judged = verdicts["models"].get(name)
        if judged and judged["path"] == entry["path"]:
            entry["harmless_rate"] = judged["harmless_rate"]
    report["safety"] = {
        "judge": verdicts["judge"],
        "confidence": verdicts["confidence"],
        # Of the verdicts without their `run` block (host, time, commit): a replay that judges
        # the same answers the same way gives the same eval.json.
        "verdicts": {"path": str(verdicts_path), "content_sha256": content_sha256(verdicts)},
    }


def read_part(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: no such evaluation part (the eval stage writes it)")
    part = read_json(path)
    if not isinstance(part, dict) or not isinstance(part.get("models"), dict):
        raise DataError(f"{path}: not an evaluation part (no `models` object)")
    return part


def summarize(part_paths: list[Path], dpo_model: str) -> dict:
    """One report from the parts, in their order; a model in two parts is refused."""
    report: dict = {"schema_version": 1, "models": {}, "parts": {}}
    report["config"] = {"dpo_model": dpo_model, "by_model": {}}
    seconds: dict[str, float] = {}
    tasks: dict = {}
    for path in part_paths:
        part = read_part(path)
        for name, entry in part["models"].items():
            if name in report["models"]:
                raise DataError(f"{path}: model {name} is in two evaluation parts")
            report["models"][name] = entry
            report["parts"][name] = {
                "path": str(path),
                "content_sha256": content_sha256(part),
                "command": part.get("command"),
            }
            report["config"]["by_model"][name] = part.get("config")
        if "dpo_rewards" in part:
            report["dpo_rewards"] = part["dpo_rewards"]
        for key in ("pairs_dropped", "kernels"):
            report.setdefault(key, part.get(key))
        versions = part.get("versions") or {}
        tasks.update(versions.get("tasks") or {})
        report.setdefault("versions", {k: v for k, v in versions.items() if k != "tasks"})
        seconds.update((part.get("timing") or {}).get("seconds_per_model") or {})
    report.setdefault("versions", {})["tasks"] = dict(sorted(tasks.items()))
    report["timing"] = {"seconds_per_model": seconds}
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--part", type=Path, action="append", required=True, help="an eval part (repeatable)"
    )
    parser.add_argument("--safety", type=Path, help="the safety-judge verdicts JSON")
    parser.add_argument(
        "--dpo-model", default="dpo", help="which model name is the DPO model (for the sweep)"
    )
    parser.add_argument("--out", type=Path, required=True, help="eval.json")


def main(args: argparse.Namespace) -> None:
    report = summarize(args.part, args.dpo_model)
    if args.safety:
        merge_safety(report, args.safety)
    report["run"] = run_context()
    report["command"] = command_line()
    report["timing"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(args.out, report)
    print(f"wrote {args.out}: {', '.join(report['models'])}")
