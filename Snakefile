# amber-repro: LLM360 AmberSafe as one DAG.
# raw PKU-SafeRLHF -> preference pairs -> SFT -> reference log-probs -> DPO -> eval.json
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "rules/captions/workflow.rst"


# The rule files in DAG order (a rule after those making its inputs): the provenance crate lists
# the jobs in this order.
include: "rules/common.smk"
include: "rules/amberchat_common.smk"
include: "rules/safety_common.smk"
include: "rules/experiments_common.smk"
include: "rules/provenance_common.smk"
include: "rules/data.smk"
include: "rules/amberchat_data.smk"
include: "rules/amberchat_model.smk"
include: "rules/model.smk"
include: "rules/sft.smk"
include: "rules/ref_logps.smk"
include: "rules/dpo.smk"
include: "rules/safety.smk"
include: "rules/eval.smk"
include: "rules/experiments.smk"
include: "rules/container.smk"
include: "rules/provenance.smk"


rule all:
    input:
        final_targets(),
