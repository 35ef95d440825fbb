"""Check that the running Python environment holds exactly requirements.lock.

Runs inside the image at build time (%post, so a build that drifted from the lock fails) and again
under `apptainer test`:

    python check_environment.py /opt/amber-repro/requirements.lock --torch-local cu126

Every `name==version` line of the lock must be installed at exactly that version. torch is the one
exception, by design: the lock pins the release (torch==2.13.0, installed as 2.13.0+cpu by the CPU
set-up) and the image installs that release's CUDA build, so with --torch-local TAG torch must be
`<version>+TAG`. Besides the lock, only what a CUDA torch build brings (nvidia-*, triton), pip, and
amber-repro itself may be installed (--allow NAME adds to that list). Prints one line per problem
and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import distributions
from pathlib import Path

# packaging is pinned in requirements.lock, which the image installs before running this check.
from packaging.utils import canonicalize_name as canonical

ALWAYS_ALLOWED = {"pip", "amber-repro"}
CUDA_TORCH_EXTRAS = ("nvidia-", "triton")


def read_lock(path: Path) -> dict[str, str]:
    """The lock's pins; the `--hash=` lines after each, and its continuation backslash, skipped."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip().removesuffix("\\").strip()
        if not line or line.startswith(("#", "--hash=")):
            continue
        name, sep, version = line.partition("==")
        if not sep or not name or not version:
            raise SystemExit(f"{path}:{number}: not a name==version pin: {line!r}")
        pins[canonical(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    return {canonical(dist.metadata["Name"]): dist.version for dist in distributions()}


def problems(
    lock: dict[str, str],
    installed: dict[str, str],
    torch_local: str | None = None,
    allowed: set[str] = frozenset(),
) -> list[str]:
    found = []
    for name, version in sorted(lock.items()):
        want = f"{version}+{torch_local}" if name == "torch" and torch_local else version
        have = installed.get(name)
        if have is None:
            found.append(f"{name}: locked {want}, not installed")
        elif have != want:
            found.append(f"{name}: locked {want}, installed {have}")
    for name in sorted(set(installed) - set(lock)):
        if name in ALWAYS_ALLOWED or name in allowed or name.startswith(CUDA_TORCH_EXTRAS):
            continue
        found.append(f"{name}: installed {installed[name]}, not in the lock")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "locks", type=Path, nargs="+", metavar="LOCK", help="the lock(s) the environment holds"
    )
    parser.add_argument("--torch-local", help="local build tag torch must carry, e.g. cu126")
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME",
        help="a package that may be installed besides the lock (repeatable)",
    )
    args = parser.parse_args(argv)
    lock = {name: v for path in args.locks for name, v in read_lock(path).items()}
    names = " and ".join(map(str, args.locks))
    found = problems(
        lock, installed_versions(), args.torch_local, {canonical(n) for n in args.allow}
    )
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(f"the environment differs from {names} ({len(found)} problem(s))", file=sys.stderr)
        return 1
    print(f"the environment matches {names}: {len(lock)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
