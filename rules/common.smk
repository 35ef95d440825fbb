# Helpers shared by the rules: config validation, paths, and what each stage's code is.
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from amber_repro.codedeps import stage_files
from amber_repro.configuration import cli_flags, config_errors

CONFIG_SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"

try:
    validate(config, schema=str(CONFIG_SCHEMA), set_default=False)
except WorkflowError:
    # Snakemake reports the first violation with the whole schema; name every bad key instead.
    raise WorkflowError(
        "invalid config (files: {}):\n  {}".format(
            ", ".join(map(str, workflow.configfiles)),
            "\n  ".join(config_errors(config, CONFIG_SCHEMA)),
        )
    )

SPLITS = ["train", "test"]
RAW_DIR = "results/raw/pku-saferlhf"
DATA_DIR = "results/ambersafe/data"
BASE_MODEL = "results/base_model"
SFT_MODEL = "results/ambersafe/sft"
REF_LOGPS_DIR = "results/ambersafe/ref_logps"
DPO_MODEL = "results/ambersafe/dpo"
# Resumable checkpoints live outside the outputs: Snakemake deletes a job's outputs before it runs.
STATE_DIR = "results/ambersafe/.state"
PACKAGE_DIR = Path(workflow.basedir) / "amber_repro"


def stage_code(*modules):
    """The package files a stage runs (found from its imports), as inputs: editing one reruns that
    stage and what depends on it, nothing else."""
    return stage_files(PACKAGE_DIR, *(f"amber_repro.{m}" for m in modules))


def folder_of(output_name):
    """A params function giving the folder of one named output (so no path prefix is hard-coded)."""

    def folder(wildcards, output):
        return str(Path(output[output_name]).parent)

    return folder


def raw_files():
    return expand(f"{RAW_DIR}/{{split}}.parquet", split=SPLITS)


def data_targets():
    return expand(
        f"{DATA_DIR}/{{kind}}-{{split}}.parquet", kind=["pairs", "sft"], split=SPLITS
    ) + [f"{DATA_DIR}/manifest.json"]


def hub_split_flags():
    splits = config["data"]["hub"]["splits"]
    return " ".join(f"--split {ours}={theirs}" for ours, theirs in splits.items())
