# amber-repro: LLM360 AmberSafe as one DAG.
# raw PKU-SafeRLHF -> preference pairs -> SFT -> reference log-probs -> DPO -> eval.json
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"


rule all:
    input:
        data_targets(),
