"""Write the conda environment files from requirements.lock, so their versions are the lock's.

Each environment is one concern: the closure of a few top-level packages, pinned as in the lock.
Run inside the project's virtual environment (it reads installed metadata to follow requirements):
    python envs/render.py
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical

HERE = Path(__file__).parent
CONCERNS = {
    # Every stage reads its settings through pydantic and YAML; the crate is written with rocrate.
    # The AmberChat data stage counts tokens with a LLaMA SentencePiece tokenizer.
    "data": [
        "polars",
        "pyarrow",
        "datasets",
        "huggingface-hub",
        "pydantic",
        "pyyaml",
        "rocrate",
        "tokenizers",
        "transformers",
        "sentencepiece",
    ],
    "train": [
        "torch",
        "transformers",
        "tokenizers",
        "sentencepiece",
        "accelerate",
        "safetensors",
        "tensorboard",
        "lm-eval",
        "datasets",
        "polars",
        "pyarrow",
        "tqdm",
        "matplotlib",
        "jinja2",
        "pydantic",
        "pyyaml",
    ],
}


def read_lock(path: Path) -> dict[str, str]:
    """name -> version of a lock's (or `pip freeze`'s) `name==version` lines; the lines of hashes
    that follow a pin, and its continuation backslash, are skipped."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip().removesuffix("\\").strip()
        if line and not line.startswith(("#", "--")):
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def closure(roots: list[str], pins: dict[str, str]) -> set[str]:
    """Every locked package that `roots` need, following installed metadata: a requirement's own
    dependencies, and those of the extras it asks for (typepy[datetime] needs pytz), not those of
    extras nobody asks for."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonical(r), "") for r in roots]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen or name not in pins:
            continue
        seen.add((name, extra))
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        for spec in needs:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                wanted = canonical(requirement.name)
                todo += [(wanted, "")] + [(wanted, e) for e in sorted(requirement.extras)]
    return {name for name, _ in seen}


def render(concern: str, pins: dict[str, str]) -> str:
    lines = [
        (
            f"# conda environment '{concern}', generated from requirements.lock by envs/render.py: "
            "do not edit."
        ),
        f"name: amber-repro-{concern}",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {name}=={pins[name]}" for name in sorted(closure(CONCERNS[concern], pins))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    lock = read_lock(HERE.parent / "requirements.lock")
    for concern in CONCERNS:
        (HERE / f"{concern}.yaml").write_text(render(concern, lock))
        print(f"wrote envs/{concern}.yaml")
