# Direct preference optimisation from the SFT checkpoint against the stored reference log-probs.


rule dpo:
    input:
        model=SFT_MODEL,
        pairs=f"{DATA_DIR}/pairs-train.parquet",
        ref_logps=f"{REF_LOGPS_DIR}/train.parquet",
        eval_pairs=f"{DATA_DIR}/pairs-test.parquet",
        eval_ref_logps=f"{REF_LOGPS_DIR}/test.parquet",
        code=stage_code("dpo"),
        image=image_input(),
    output:
        directory(DPO_MODEL),
    log:
        "results/logs/dpo.log",
    benchmark:
        "results/benchmarks/dpo.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("dpo")
    threads: job_threads("dpo")
    resources:
        **job_resources("dpo"),
    params:
        launcher=launcher("dpo"),
        state_dir=f"{STATE_DIR}/dpo",
        flags=stage_flags(
            "dpo", "tokenization", "reproducibility", ("data", ["on_malformed"])
        ),
    shell:
        "{params.launcher} -m amber_repro dpo --model {input.model} --pairs {input.pairs} "
        "--ref-logps {input.ref_logps} --eval-pairs {input.eval_pairs} "
        "--eval-ref-logps {input.eval_ref_logps} --out-dir {output} "
        "--state-dir {params.state_dir} {params.flags} > {log} 2>&1"
