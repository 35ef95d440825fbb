"""What Snakemake recorded of a finished job, for the crate: its shell command, when it started and
ended, and whether it completed.

Snakemake (9.x, file persistence, record format 6) keeps one JSON file per output in
.snakemake/metadata/, named by the urlsafe base64 of the output's path (split into folders of
NAME_MAX - 1 characters, each but the last prefixed with "@"). This reads those files and never
writes them; a missing or unreadable one gives an empty record.
"""

from __future__ import annotations

import json
import os
from base64 import urlsafe_b64encode
from datetime import UTC, datetime
from pathlib import Path


def metadata_path(workdir: Path, output: str) -> Path:
    """The metadata file of `output` (a path relative to the working directory)."""
    folder = workdir / ".snakemake" / "metadata"
    limit = (os.pathconf(folder, "PC_NAME_MAX") if folder.is_dir() else 255) or 255
    encoded = urlsafe_b64encode(output.encode()).decode()
    chunks = [encoded[i : i + limit - 1] for i in range(0, len(encoded), limit - 1)]
    return folder.joinpath(*(f"@{c}" for c in chunks[:-1]), chunks[-1])


def job_metadata(workdir: Path, output: str) -> dict:
    """Snakemake's record of the job that made `output`: {"command", "startTime", "endTime",
    "completed"} where known."""
    try:
        record = json.loads(metadata_path(workdir, output).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    facts = {}
    if isinstance(record.get("shellcmd"), str):
        facts["command"] = record["shellcmd"]
    for key, name in (("starttime", "startTime"), ("endtime", "endTime")):
        if isinstance(record.get(key), int | float):
            moment = datetime.fromtimestamp(record[key], UTC).replace(microsecond=0)
            facts[name] = moment.isoformat()
    if "incomplete" in record:
        facts["completed"] = record["incomplete"] is False
    return facts
