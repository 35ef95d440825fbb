"""Which package files a stage runs, found from its imports: the code inputs of its Snakemake rule.

Editing a file reruns exactly the stages that import it (directly or through other package
modules), and what depends on them; no hand-kept list to go stale.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "amber_repro"


def imported_package_modules(path: Path) -> set[str]:
    """Modules of this package that a source file imports, anywhere in it (lazy imports
    included)."""
    stat = path.stat()
    return set(parsed_imports(str(path), stat.st_mtime_ns, stat.st_size))


# Every rule's code inputs walk the same modules: each file is parsed once per process (its
# mtime and size in the key, so an edited file is parsed again). Without it, parsing was about
# 40% of a dry run's time (docs/measurements.md).
@functools.cache
def parsed_imports(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=path)):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == PACKAGE
        ):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
    return frozenset(found)


def stage_files(package_dir: Path, *modules: str) -> list[str]:
    """Files of `modules` (dotted names) and every package module they import, plus the CLI
    entry."""
    root = package_dir.parent
    todo = [*modules, f"{PACKAGE}.__main__", PACKAGE]
    files: set[Path] = set()
    while todo:
        parts = todo.pop().split(".")
        candidates = [
            root.joinpath(*parts).with_suffix(".py"),
            root.joinpath(*parts, "__init__.py"),
        ]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None or path in files:
            continue  # a name imported from a module, not a module itself
        files.add(path)
        todo.extend(imported_package_modules(path))
    return sorted(str(f) for f in files)
