"""Print every rule of the workflow as Snakemake itself loads it, as JSON (one object a rule):
its name, whether it is a local rule, its container and its constant resources (threads as
`_cores`). Run in a subprocess: loading a Snakefile changes the process's environment.

    python tests/workflow_rules.py SNAKEFILE WORKDIR [CONFIGFILE ...]

Reads Snakemake's Workflow object (`_workflow`, `_localrules`): the test that uses this pins the
Snakemake version through the lock, and fails loudly if those names change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DeploymentMethod,
    DeploymentSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)


def main() -> None:
    snakefile, workdir, *configfiles = sys.argv[1:]
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
            storage_settings=StorageSettings(),
            deployment_settings=DeploymentSettings(deployment_method={DeploymentMethod.APPTAINER}),
            snakefile=Path(snakefile),
            workdir=Path(workdir),
        )._workflow
        rules = [
            {
                "rule": rule.name,
                "local": rule.name in workflow._localrules or rule.norun,
                "container": rule.container_img,
                "resources": {
                    name: resource.raw
                    for name, resource in rule.resources.items()
                    if not resource.is_evaluable()
                },
            }
            for rule in workflow.rules
        ]
    print(json.dumps(rules))


if __name__ == "__main__":
    main()
