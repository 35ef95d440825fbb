# Helpers of the image's build (rules/container.smk). The GPU rules' image helpers (image_input,
# job_container) are in rules/common.smk.
import shutil

from amber_repro.provenance.hashing import sha256_file

REPO_DIR = Path(workflow.basedir)


def package_files():
    """Every file of the package, as %files copies it into the image: editing one makes the image stale."""
    return relative(
        sorted(
            path
            for path in PACKAGE_DIR.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        )
    )


def build_image(input, output, log):
    """`apptainer build` run from the repository root (the definition's %files are relative to it), with
    the lock's sha256 as the LOCK_SHA256 build argument (the image's label, checked in %post); then a
    `sha256sum -c` record of the image, the definition and the lock, paths relative to the working
    directory."""
    if shutil.which("apptainer") is None:
        raise WorkflowError(
            "build_container needs Apptainer >= 1.2 on PATH (see the README, 'Containers')"
        )
    build = [
        "apptainer",
        "build",
        "--force",
        "--build-arg",
        f"LOCK_SHA256={sha256_file(input.lock)}",
        os.path.abspath(output.sif),
        os.path.relpath(input.definition, REPO_DIR),
    ]
    shell(
        f"cd {shlex.quote(str(REPO_DIR))} && {shlex.join(build)} "
        f"> {shlex.quote(os.path.abspath(log[0]))} 2>&1"
    )
    with open(output.record, "w") as record:
        for path in (output.sif, input.definition, input.lock):
            record.write(f"{sha256_file(path)}  {os.path.relpath(path)}\n")
