# Reference log-probs: the frozen SFT model scores every pair once; DPO reads the result.
# One job scores both splits, so the model loads (and, on a cluster, queues for a GPU) once.


rule ref_logps:
    input:
        model=SFT_MODEL,
        train=f"{DATA_DIR}/pairs-train.parquet",
        test=f"{DATA_DIR}/pairs-test.parquet",
        code=stage_code("ref-logps"),
        image=image_input(),
    output:
        train=f"{REF_LOGPS_DIR}/train.parquet",
        train_record=f"{REF_LOGPS_DIR}/train.json",
        test=f"{REF_LOGPS_DIR}/test.parquet",
        test_record=f"{REF_LOGPS_DIR}/test.json",
    log:
        "results/logs/ref_logps.log",
    benchmark:
        "results/benchmarks/ref_logps.tsv"
    conda:
        "../envs/train.yaml"
    container:
        job_container("ref_logps")
    threads: job_threads("ref_logps")
    resources:
        **job_resources("ref_logps"),
    params:
        launcher=launcher("ref_logps"),
        flags=stage_flags(
            "reference", "tokenization", "reproducibility", ("data", ["on_malformed"])
        ),
    shell:
        "{params.launcher} -m amber_repro ref-logps --model {input.model} "
        "--pairs {input.train} {input.test} --out {output.train} {output.test} "
        "{params.flags} > {log} 2>&1"
