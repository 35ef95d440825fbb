# Helpers of the provenance crate (rules/provenance.smk): every job of the DAG with its files.
import itertools
import json

from snakemake.iocontainers import Wildcards

from amber_repro.provenance.crate import dag_order

NOT_JOBS = rules(part="workflow")  # targets and bookkeeping
CRATE = "results/ro-crate-metadata.json"


def not_code(paths):
    """Paths other than the package's files (the crate records the commit instead)."""
    package = PACKAGE_DIR.resolve()
    return [
        str(path) for path in paths if not Path(path).resolve().is_relative_to(package)
    ]


def job_wildcards(step):
    """Each job of a rule, as its wildcards: download_chat_data runs once per source, an
    experiment's rules once per configured experiment, evaluate once per evaluated model (an
    experiment's only for its DPO model), the others once."""
    values = {
        "chat_source": CHAT_SOURCES,
        "experiment": list(config["experiments"]),
        "model": (
            ["dpo"]
            if "experiment" in step.wildcard_names
            else list(config["eval"]["models"])
        ),
    }
    names = sorted(step.wildcard_names)
    return [
        dict(zip(names, combination))
        for combination in itertools.product(*(values[name] for name in names))
    ]


def dag_jobs():
    """Every job of the DAG in order (raw data first, report last), with its inputs, outputs, log and
    the image it runs in: the crate's record of which job made which file."""
    jobs = []
    for step in workflow.rules:
        if step.name in NOT_JOBS:
            continue
        if step.name in CHAT_RULES and not amberchat_targets():
            continue  # AmberChat is built by name unless AmberSafe starts from it
        for values in job_wildcards(step):
            wildcards = Wildcards(fromdict=values)
            label = ",".join(f"{k}={v}" for k, v in values.items())
            jobs.append(
                {
                    "job": f"{step.name}[{label}]" if label else step.name,
                    "rule": step.name,
                    # The rule's file, relative to the workflow's folder (the crate's tool url).
                    "snakefile": Path(step.snakefile)
                    .resolve()
                    .relative_to(REPO_DIR.resolve())
                    .as_posix(),
                    # Snakemake's own expansion of the rule for these wildcards.
                    "inputs": not_code(step.expand_input(wildcards)[0]),
                    "outputs": not_code(step.expand_output(wildcards)[0]),
                    "log": str(step.expand_log(wildcards)[0]),
                    "benchmark": (
                        str(step.expand_benchmark(wildcards))
                        if step.benchmark
                        else None
                    ),
                    "container": (
                        config["container"]["image"]
                        if runs_in_apptainer() and job(step.name).gpu
                        else None
                    ),
                }
            )
    # The rule files' order is not always the DAG's (AmberChat's data rules surround its model's).
    return dag_order(jobs)


def dag_outputs(jobs):
    return sorted({path for job in jobs for path in job["outputs"]})
