# Supervised finetuning on one safe target per prompt.


rule sft:
    input:
        data=f"{DATA_DIR}/sft-train.parquet",
        eval_data=f"{DATA_DIR}/sft-test.parquet",
        model=BASE_MODEL,
        code=stage_code("sft"),
        image=image_input(),
    output:
        directory(SFT_MODEL),
    log:
        "results/logs/sft.log",
    benchmark:
        "results/benchmarks/sft.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("sft")
    threads: job_threads("sft")
    resources:
        **job_resources("sft"),
    params:
        launcher=launcher("sft"),
        state_dir=f"{STATE_DIR}/sft",
        flags=stage_flags(
            "sft", "tokenization", "reproducibility", ("data", ["on_malformed"])
        ),
    shell:
        "{params.launcher} -m amber_repro sft --data {input.data} --eval-data {input.eval_data} "
        "--model {input.model} --out-dir {output} "
        "--state-dir {params.state_dir} {params.flags} > {log} 2>&1"
