# Data stage: raw PKU-SafeRLHF (or its synthetic stand-in) -> preference pairs and SFT targets.

if config["data"]["source"] == "hub":

    rule download_data:
        output:
            raw=raw_files(),
            source=f"{RAW_DIR}/source.json",
        log:
            "results/logs/download_data.log",
        # Runs on the submit host: compute nodes often have no internet. HF_TOKEN is read from the
        # environment by huggingface_hub and never written anywhere.
        localrule: is_local("download_data")
        conda:
            "../envs/data.yaml"
        params:
            dataset=config["data"]["hub"]["dataset"],
            revision=config["data"]["hub"]["revision"],
            splits=hub_split_flags(),
            out_dir=folder_of("source"),
        shell:
            "python -m amber_repro download-data --dataset {params.dataset:q} "
            "--revision {params.revision:q} {params.splits} --out-dir {params.out_dir} > {log} 2>&1"

else:

    rule synthesize_data:
        input:
            code=stage_code("synthesize"),
        output:
            raw=raw_files(),
            source=f"{RAW_DIR}/source.json",
        log:
            "results/logs/synthesize_data.log",
        conda:
            "../envs/data.yaml"
        params:
            flags=stage_flags("data.synthetic"),
            out_dir=folder_of("source"),
        shell:
            "python -m amber_repro synthesize {params.flags} --out-dir {params.out_dir} > {log} 2>&1"


rule filter_pairs:
    input:
        raw=raw_files(),
        source=f"{RAW_DIR}/source.json",
        code=stage_code("filter"),
    output:
        pairs=expand(f"{DATA_DIR}/pairs-{{split}}.parquet", split=SPLITS),
        sft=expand(f"{DATA_DIR}/sft-{{split}}.parquet", split=SPLITS),
        manifest=f"{DATA_DIR}/manifest.json",
    log:
        "results/logs/filter_pairs.log",
    conda:
        "../envs/data.yaml"
    threads: job_threads("filter_pairs")
    resources:
        **job_resources("filter_pairs"),
    params:
        flags=stage_flags(("data", ["on_malformed"])),
        out_dir=folder_of("manifest"),
    shell:
        "python -m amber_repro filter --raw {input.raw} --source {input.source} "
        "--out-dir {params.out_dir} {params.flags} > {log} 2>&1"
