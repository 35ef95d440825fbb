# The base model: LLM360/AmberChat at a pinned revision, or the embedded tiny LLaMA. With
# base_model.source: amberchat there is no rule here: BASE_MODEL is the workflow's own AmberChat
# (rules/amberchat_model.smk).

if config["base_model"]["source"] == "hub":

    rule download_base_model:
        output:
            directory(BASE_MODEL),
        log:
            "results/logs/download_base_model.log",
        # Runs on the submit host; training jobs read the folder with local_files_only.
        localrule: is_local("download_base_model")
        conda:
            "../envs/train.yaml"
        params:
            name=config["base_model"]["hub"]["name"],
            revision=config["base_model"]["hub"]["revision"],
        shell:
            "python -m amber_repro download-model --name {params.name:q} --revision {params.revision:q} "
            "--out-dir {output} > {log} 2>&1"

elif config["base_model"]["source"] == "tiny":

    rule build_tiny_model:
        input:
            pairs=f"{DATA_DIR}/pairs-train.parquet",
            sft=f"{DATA_DIR}/sft-train.parquet",
            code=stage_code("base-model"),
        output:
            directory(BASE_MODEL),
        log:
            "results/logs/build_tiny_model.log",
        conda:
            "../envs/train.yaml"
        params:
            flags=stage_flags("base_model.tiny"),
        shell:
            "python -m amber_repro base-model --pairs {input.pairs} --sft {input.sft} "
            "--out-dir {output} {params.flags} > {log} 2>&1"
