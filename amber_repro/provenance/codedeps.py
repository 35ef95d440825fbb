"""Which package files a stage runs, found from its imports: the code inputs of its Snakemake rule.

Editing a file reruns exactly the stages that import it (directly or through other package
modules), and what depends on them; no hand-kept list to go stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "amber_repro"


def imported_package_modules(path: Path) -> set[str]:
    """Modules of this package that a source file imports, anywhere in it (lazy imports
    included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == PACKAGE
        ):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
    return found


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
