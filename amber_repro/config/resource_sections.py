"""The `resources` section: what each job asks the scheduler for. One field per rule of
amber_repro/config/jobs.py that has a size, with that size as its default (the 7B recipe's,
on 8-GPU nodes). Kept apart from sections.py; schema.py gathers it into the one Config."""

from __future__ import annotations

import dataclasses

from pydantic import Field, create_model

from amber_repro.config.jobs import MULTI_NODE, SIZED, Size
from amber_repro.config.types import Section


class JobResources(Section):
    gpus: int = Field(ge=0, description="GPUs per node (and processes per node); 0: a CPU job")
    nodes: int = Field(
        1, ge=1, description=f"nodes ({', '.join(MULTI_NODE)} only: the others run on one)"
    )
    cpus: int = Field(ge=1, description="CPUs per node (also the local thread count)")
    mem_mb: int = Field(ge=100, description="memory per node, MB")
    runtime_min: int = Field(ge=1, description="time limit, minutes")


def _sized(size: Size):
    return Field(
        default_factory=lambda: JobResources(**dataclasses.asdict(size)),
        description=f"{size.gpus} GPU(s), {size.cpus} CPUs, {size.mem_mb} MB, "
        f"{size.runtime_min} min",
    )


Resources = create_model(
    "Resources",
    __base__=Section,
    __doc__="What each job asks the scheduler for; sized for the 6.7B model on 8-GPU nodes.",
    **{rule: (JobResources, _sized(size)) for rule, size in SIZED.items()},
)
