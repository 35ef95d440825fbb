"""Snakemake's record of a finished job (amber_repro/provenance/job_metadata.py), which gives the
crate each job's times, status and, for stages without a record of their own, the command: read
from small files written here, where Snakemake writes them."""

from __future__ import annotations

import json
import os
from base64 import urlsafe_b64encode

from amber_repro.provenance.job_metadata import job_metadata, metadata_path


def test_snakemakes_record_of_a_job_is_read_where_snakemake_writes_it(tmp_path):
    """.snakemake/metadata/<urlsafe base64 of the output>, cut into folders of NAME_MAX - 1
    characters ("@" before all but the last) when longer; "incomplete" gives the status."""
    folder = tmp_path / ".snakemake" / "metadata"
    folder.mkdir(parents=True)
    output = "results/" + "~" * 300 + "/model"  # "~~~" encodes to "fn5-": urlsafe, not "fn5+"
    encoded = urlsafe_b64encode(output.encode()).decode()
    assert "-" in encoded and len(encoded) > 255
    limit = os.pathconf(folder, "PC_NAME_MAX")
    path = metadata_path(tmp_path, output)
    assert path.relative_to(folder).parts == ("@" + encoded[: limit - 1], encoded[limit - 1 :])
    path.parent.mkdir(parents=True)
    record = {"shellcmd": "python -m amber_repro plots ...", "incomplete": False}
    path.write_text(json.dumps(record | {"starttime": 1796426253.19, "endtime": 1796426255.93}))
    assert job_metadata(tmp_path, output) == {
        "command": "python -m amber_repro plots ...",
        "startTime": "2026-12-04T23:17:33+00:00",
        "endTime": "2026-12-04T23:17:35+00:00",
        "completed": True,
    }
    path.write_text(json.dumps({"incomplete": True}))
    assert job_metadata(tmp_path, output) == {"completed": False}
    path.write_text("not json")
    assert job_metadata(tmp_path, output) == {}
    assert job_metadata(tmp_path, "results/never-made") == {}
