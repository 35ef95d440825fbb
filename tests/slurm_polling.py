"""`python -m snakemake` for the SLURM tests, with the SLURM executor's status checks kept at their
first interval (`--slurm-init-seconds-before-status-checks`).

snakemake-executor-plugin-slurm waits 10 s longer after each status check that finds no job
finished (up to 180 s), so that a large cluster's controller is not flooded; it has no setting for
that step. On this one-machine test cluster that back-off was most of a SLURM test's time: a job
that had finished was noticed 15 to 25 s later. Only the wait between checks changes here; what
Snakemake submits, and how it reads the job's state, is the plugin's own.
"""

from __future__ import annotations

import sys

from snakemake.cli import main
from snakemake_executor_plugin_slurm import Executor

_interval = Executor.next_seconds_between_status_checks  # the property the plugin sets


def _never_longer_than_the_first(executor: Executor, seconds: float) -> None:
    first = executor.workflow.executor_settings.init_seconds_before_status_checks
    _interval.fset(executor, min(seconds, first))


Executor.next_seconds_between_status_checks = property(_interval.fget, _never_longer_than_the_first)

if __name__ == "__main__":
    sys.exit(main())
