# Provenance: a Workflow Run RO-Crate describing every output of the DAG (sha256, the job that made
# it, its inputs, the commit, config, lock, image, data and model sources, hardware). Rebuilt whenever
# an output changes; cheap, so it runs on the submit host.


# Expanded once: every rule's jobs, inputs and outputs.
DAG_JOBS = dag_jobs()


rule provenance:
    input:
        dag_outputs(DAG_JOBS),
    output:
        CRATE,
    log:
        "results/logs/provenance.log",
    localrule: is_local("provenance")
    conda:
        "../envs/data.yaml"
    params:
        jobs=json.dumps(DAG_JOBS),
        config=json.dumps(config, sort_keys=True),
    shell:
        "python -m amber_repro crate --results results --jobs-json {params.jobs:q} "
        "--config-json {params.config:q} --out {output} > {log} 2>&1"
