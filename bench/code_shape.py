"""The package's shape, as a newcomer meets it: files per package, long functions, the highest
cyclomatic complexity, and import cycles (module level, and counting imports inside functions).

    python bench/code_shape.py [PACKAGE_DIR]     # default: amber_repro

Complexity is radon's (`pip install radon`; the figure is skipped without it). Function length is
counted from the `def` line to the last line of the body, decorators excluded.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LONG = 60


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package folder `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, known: set[str], top_only: bool) -> set[str]:
    """The package's modules that `name` imports (its own package's __init__ excluded)."""
    tree = ast.parse(path.read_text())
    # Imports for type checkers only (`if TYPE_CHECKING:`) never run.
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    nodes = tree.body if top_only else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def long_functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > LONG
    ]


def highest_complexity(paths: list[Path]) -> tuple[int, str] | None:
    try:
        from radon.complexity import cc_visit
    except ImportError:
        return None
    best = (0, "")
    for path in paths:
        for block in cc_visit(path.read_text()):
            if block.complexity > best[0]:
                best = (block.complexity, f"{path}:{block.lineno} {block.fullname}")
    return best


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "amber_repro").resolve()
    found = modules(root)
    known = set(found)
    files = {name: path for name, path in found.items() if path.name != "__init__.py"}
    print("files per package (excluding __init__.py):")
    for package in sorted({name.rpartition(".")[0] for name in files}):
        count = sum(1 for name in files if name.rpartition(".")[0] == package)
        print(f"  {package}: {count}")
    long = [
        (str(path.relative_to(root.parent)), function, lines)
        for path in files.values()
        for function, lines in long_functions(path)
    ]
    print(f"functions over {LONG} lines: {len(long)}")
    for where, name, lines in sorted(long, key=lambda row: -row[2]):
        print(f"  {lines:4d}  {where} {name}")
    complexity = highest_complexity(list(found.values()))
    if complexity:
        print(f"highest cyclomatic complexity (radon): {complexity[0]} at {complexity[1]}")
    for label, top_only in (("module level", True), ("including imports inside functions", False)):
        graph = {n: imports(p, n, known, top_only) for n, p in found.items()}
        found_cycles = cycles(graph)
        print(f"import cycles, {label}: {len(found_cycles)}")
        for component in found_cycles:
            print("  " + " <-> ".join(component))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
