# amber-repro: LLM360 AmberSafe as one DAG.
# raw PKU-SafeRLHF -> preference pairs -> SFT -> reference log-probs -> DPO -> eval.json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from amber_repro.config.load import read_yaml
from amber_repro.errors import ConfigError

min_version("9.0")

# Snakemake names neither file nor line when the config file is not YAML: read it first, so that
# the error does (one line: file, line, column).
CONFIG_FILE = "config/config.yaml"
try:
    if Path(CONFIG_FILE).exists():
        read_yaml(CONFIG_FILE)
except ConfigError as error:
    raise WorkflowError(str(error)) from None


configfile: CONFIG_FILE


report: "rules/captions/workflow.rst"


# Each stage's helpers (rules/<stage>_common.smk: `snakemake --lint` wants functions and rules in
# separate files) come right before its rules; the rule files in DAG order (a rule after those making
# its inputs): the provenance crate lists the jobs in this order.
include: "rules/common.smk"
include: "rules/data_common.smk"
include: "rules/data.smk"
include: "rules/amberchat_common.smk"
include: "rules/amberchat_data.smk"
include: "rules/amberchat_model.smk"
include: "rules/model.smk"
include: "rules/sft.smk"
include: "rules/ref_logps.smk"
include: "rules/dpo.smk"
include: "rules/safety_common.smk"
include: "rules/safety.smk"
include: "rules/eval_common.smk"
include: "rules/eval.smk"
include: "rules/experiments_common.smk"
include: "rules/experiments.smk"
include: "rules/container_common.smk"
include: "rules/container.smk"
include: "rules/provenance_common.smk"
include: "rules/provenance.smk"


# What `rule all` builds, here after the files that define its targets. The checkpoints and reference
# log-probs are listed too, although later stages consume them: users come for them, so a deleted one
# must be rebuilt, not left missing as an intermediate Snakemake no longer needs.
rule all:
    input:
        SFT_MODEL,
        DPO_MODEL,
        *expand(f"{REF_LOGPS_DIR}/{{split}}.parquet", split=SPLITS),
        *experiment_targets(),
        *amberchat_targets(),
        CRATE,
        f"{EVAL_DIR}/eval.json",
        SAFETY_VERDICTS,
        f"{EVAL_DIR}/generations.md",
        f"{EVAL_DIR}/report/sft_curves.png",
        f"{EVAL_DIR}/report/dpo_curves.png",
        f"{EVAL_DIR}/report/eval_table.html",
