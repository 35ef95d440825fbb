# The Apptainer image of the GPU rules, built from containers/amber-repro.def on the submit host.
# Not part of `rule all` (it needs Apptainer >= 1.2 and the network); build it once with
#   snakemake --cores 1 results/containers/amber-repro.sif
# and point config `container.image` at it (the default does). The manual command is in the
# definition's header; the helpers are in rules/container_common.smk.


rule build_container:
    input:
        definition=os.path.relpath(REPO_DIR / "containers" / "amber-repro.def"),
        lock=os.path.relpath(REPO_DIR / "requirements.lock"),
        pyproject=os.path.relpath(REPO_DIR / "pyproject.toml"),
        check=os.path.relpath(REPO_DIR / "containers" / "check_environment.py"),
        code=package_files(),
    output:
        sif="results/containers/amber-repro.sif",
        record="results/containers/amber-repro.sif.sha256",
    log:
        "results/logs/build_container.log",
    # A `run` rule: its software is the host's Apptainer (set-uid or user namespaces, configured by
    # the site), which no conda environment or container can supply.
    localrule: is_local("build_container")
    run:
        build_image(input, output, log)
