"""Split a resolved environment into the run's lock and the development tools' lock, with hashes.

Run by `make lock` inside a fresh environment holding `.[dev]` (resolved together, so that both
locks agree), after `pip freeze --all` wrote FREEZE (setuptools is a run requirement):
    python envs/lock.py FREEZE

requirements.lock is what amber-repro itself needs (the closure of its requirements, followed
through installed metadata); requirements-dev.lock is the rest (tests, linters, the crate
validator), installed on top of it. Each pin carries the sha256 of every file of that release on
PyPI, and of the file pip picks here (a local wheel, such as the CPU build of torch, is not on
PyPI): `pip install --require-hashes` then refuses any other bytes. A release installed here as a
local build (torch 2.13.0+cpu) is hashed as that file only: the CPU set-up installs exactly it,
and GPU hosts get torch's CUDA build in the image (containers/amber-repro.def), which
containers/check_environment.py checks against the lock's release.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from render import closure, read_lock

from amber_repro.provenance.hashing import sha256_file

HERE = Path(__file__).parent
HEADERS = {
    "requirements.lock": [
        "# The resolved dependencies of amber-repro (Python 3.11, Linux x86-64), with hashes: what",
        "# `make run` installs (pip install --require-hashes). Regenerate: make lock. torch is the",
        "# same release on CPU and CUDA hosts; its hash is its CPU build's (2.13.0+cpu), which the",
        "# CPU set-up installs (envs/lock.py says why). Development tools: requirements-dev.lock.",
    ],
    "requirements-dev.lock": [
        "# The development tools (the `dev` extra: tests, linters, the crate validator), resolved",
        "# together with requirements.lock, which they are installed on top of, with hashes.",
        "# Regenerate: make lock.",
    ],
}


def pypi_hashes(name: str, version: str) -> set[str]:
    """The sha256 of every file of the release on PyPI, from its simple index (PEP 691 JSON)."""
    request = urllib.request.Request(
        f"https://pypi.org/simple/{name}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    wanted = Version(version)
    parsed = {f["hashes"].get("sha256"): parse_file_name(f["filename"]) for f in files}
    return {digest for digest, found in parsed.items() if digest and found and found[1] == wanted}


def parse_file_name(filename: str) -> tuple[str, Version] | None:
    """(canonical project name, version) of a wheel or sdist file name; None for another file."""
    try:
        if filename.endswith(".whl"):
            name, version = parse_wheel_filename(filename)[:2]
        else:
            name, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return canonicalize_name(name), version


def picked_hashes(pins: dict[str, str]) -> tuple[dict[str, set[str]], set[str]]:
    """The sha256 of the file pip downloads here for each pin (name -> hashes), and the names
    whose file is a local build (a version with a local label, e.g. torch 2.13.0+cpu)."""
    found: dict[str, set[str]] = {}
    local_builds: set[str] = set()
    with tempfile.TemporaryDirectory() as folder:
        requirements = Path(folder) / "pins.txt"
        requirements.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", folder]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        for path in Path(folder).iterdir():
            if path.name == "pins.txt":
                continue
            name, version = parse_file_name(path.name)
            found.setdefault(name, set()).add(sha256_file(path))
            if version.local:
                local_builds.add(name)
    return found, local_builds


def lock_text(header: list[str], pins: dict[str, str], hashes: dict[str, set[str]]) -> str:
    lines = [*header]
    for name in sorted(pins):
        digests = sorted(hashes[name])
        lines.append(f"{name}=={pins[name]}" + (" \\" if digests else ""))
        lines += [
            f"    --hash=sha256:{d}" + (" \\" if i < len(digests) - 1 else "")
            for i, d in enumerate(digests)
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("freeze", type=Path, help="`pip freeze --all --exclude-editable` output")
    args = parser.parse_args()
    pins = read_lock(args.freeze)
    # The release, not the build; pip itself is pinned apart (containers/amber-repro.def).
    pins = {n: v.removesuffix("+cpu") for n, v in pins.items() if n != "pip"}
    run = closure(["amber-repro"], pins | {"amber-repro": "0"}) - {"amber-repro"}
    parts = {
        "requirements.lock": {n: v for n, v in pins.items() if n in run},
        "requirements-dev.lock": {n: v for n, v in pins.items() if n not in run},
    }
    picked, local_builds = picked_hashes(pins)
    for name, part in parts.items():
        # A local build (torch's CPU wheel) is hashed alone: with PyPI's hashes beside it, pip
        # would prefer PyPI's file of the release (its link carries an allowed hash; a local
        # file's does not), the CUDA build, whose NVIDIA dependencies the lock does not hold.
        hashes = {
            n: picked[n] if n in local_builds else pypi_hashes(n, v) | picked.get(n, set())
            for n, v in part.items()
        }
        (HERE.parent / name).write_text(lock_text(HEADERS[name], part, hashes))
        print(f"{name}: {len(part)} packages")


if __name__ == "__main__":
    main()
