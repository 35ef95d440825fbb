# Reference log-probs: the frozen SFT model scores every pair once; DPO reads the result.


rule ref_logps:
    input:
        model=SFT_MODEL,
        pairs=f"{DATA_DIR}/pairs-{{split}}.parquet",
        code=stage_code("ref_logps"),
        image=image_input(),
    output:
        logps=f"{REF_LOGPS_DIR}/{{split}}.parquet",
        record=f"{REF_LOGPS_DIR}/{{split}}.json",
    log:
        "results/logs/ref_logps-{split}.log",
    benchmark:
        "results/benchmarks/ref_logps-{split}.tsv"
    conda:
        "../envs/train.yaml"
    container:
        gpu_container("ref_logps")
    threads: job_resource("ref_logps", "cpus")
    resources:
        **gpu_job_resources("ref_logps"),
    params:
        launcher=launcher("ref_logps"),
        flags=stage_flags(
            "reference", "tokenization", "reproducibility", ("data", ["on_malformed"])
        ),
    shell:
        "{params.launcher} -m amber_repro ref-logps --model {input.model} --pairs {input.pairs} "
        "--out {output.logps} {params.flags} > {log} 2>&1"
