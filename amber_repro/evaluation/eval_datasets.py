"""Fill the datasets cache for lm-eval tasks on the submit host, so eval jobs run offline.

Loading a task through lm-eval's TaskManager downloads its dataset (at the revision the task's own
config pins) into HF_DATASETS_CACHE; the eval job later loads the same task with the offline
switches set. Writes a small record naming the tasks, their versions and the lm-eval version.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amber_repro.provenance.run_context import run_context, software_versions
from amber_repro.storage import write_json


def prepare(task_names: list[str]) -> dict:
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(task_names, TaskManager())
    versions = {}
    for name, task in tasks.items():
        versions[str(name)] = (
            getattr(task, "VERSION", None) if not isinstance(task, dict) else "group"
        )
    return versions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", action="append", default=[], metavar="NAME[:SHOTS]", help="repeatable"
    )
    parser.add_argument("--out", type=Path, required=True, help="record of what was cached (JSON)")


def main(args: argparse.Namespace) -> None:
    names = sorted({item.partition(":")[0] for item in args.task})
    versions = prepare(names) if names else {}
    record = {"tasks": names, "versions": versions, "software": software_versions()}
    write_json(args.out, {**record, "run": run_context()})
    print(f"cached datasets for {len(names)} lm-eval task(s): {', '.join(names) or 'none'}")
