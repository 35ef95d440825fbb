"""List forward references between a Snakemake workflow's files.

Each file (the Snakefile's parts before and after its includes, and every included .smk in include
order) is compiled to Python with Snakemake's own parser, so rule directives count as module-level
code. A name a file uses (at module level or inside a function, not bound locally there) that is
not defined in it or an earlier file but is defined (def, class, assignment, import) in a later
file is reported as FILE: NAME (defined in LATER).

usage: python tests/workflow_order.py [REPO]   (exit status 1 when anything is reported)
tests/test_workflow_layout.py keeps the workflow free of them.
"""

import ast
import sys
from pathlib import Path

from snakemake.parser import parse


class _Source:
    def __init__(self, path):
        self.path = str(path)

    def get_path_or_uri(self, secret_free=True):
        return self.path


class _SourceCache:
    def open(self, source):
        return open(source.path)


class _Workflow:
    sourcecache = _SourceCache()


def compile_smk(path: Path) -> ast.Module:
    code, _ = parse(_Source(path), _Workflow(), {})
    return ast.parse(code)


def bound_names(node) -> set[str]:
    """Names a function, lambda or comprehension binds: arguments, assignments, imports."""
    names = set()
    args = getattr(node, "args", None)
    if isinstance(args, ast.arguments):
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                names.add(arg.arg)
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, (ast.Store, ast.Del)):
            names.add(child.id)
        elif (
            isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and child is not node
        ):
            names.add(child.name)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in child.names)
        elif isinstance(child, ast.arg):
            names.add(child.arg)
    return names


def module_definitions(statements) -> set[str]:
    """Module-level definitions, also inside if/else, try and with blocks (not inside functions)."""
    names = set()
    for stmt in statements:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(stmt, field, None)
            if block and not isinstance(
                stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ):
                names |= module_definitions(block)
    return names


def global_uses(statements) -> set[str]:
    """Names loaded anywhere that are not bound by an enclosing function/lambda/comprehension."""
    uses = set()

    def visit(node, local):
        if isinstance(
            node,
            (
                ast.FunctionDef,
                ast.AsyncFunctionDef,
                ast.Lambda,
                ast.ListComp,
                ast.SetComp,
                ast.DictComp,
                ast.GeneratorExp,
            ),
        ):
            # Decorators and defaults are evaluated in the enclosing scope.
            outer = [*getattr(node, "decorator_list", [])]
            if hasattr(node, "args"):
                outer += [*node.args.defaults, *[d for d in node.args.kw_defaults if d]]
            for child in outer:
                visit(child, local)
            inner = local | bound_names(node)
            skip = {id(c) for c in outer}
            for child in ast.iter_child_nodes(node):
                if id(child) not in skip:
                    visit(child, inner)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local:
            uses.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child, local)

    for stmt in statements:
        visit(stmt, frozenset())
    return uses


def include_target(stmt):
    """The path of `include: "..."` as compiled (workflow.include("...", ...)), or None."""
    if (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and isinstance(stmt.value.func, ast.Attribute)
        and stmt.value.func.attr == "include"
        and stmt.value.args
        and isinstance(stmt.value.args[0], ast.Constant)
    ):
        return stmt.value.args[0].value
    return None


def units(repo: Path):
    """(label, statements) in include order: Snakefile parts around its includes, each .smk."""
    snakefile = repo / "Snakefile"
    part, parts, index = [], [], 0
    for stmt in compile_smk(snakefile).body:
        target = include_target(stmt)
        if target is None:
            part.append(stmt)
            continue
        if part:
            parts.append((f"Snakefile (part {index})", part))
            index += 1
            part = []
        parts.append((target, compile_smk(repo / target).body))
    if part:
        parts.append((f"Snakefile (part {index})", part))
    return parts


def forward_references(repo: Path) -> list[str]:
    """ "FILE: NAME (defined in LATER)" for each name a file uses before the file defining it."""
    order = units(repo)
    definitions = [(label, module_definitions(body)) for label, body in order]
    found = []
    defined = set()
    for i, (label, body) in enumerate(order):
        defined |= definitions[i][1]
        for name in sorted(global_uses(body) - defined):
            later = [other for other, names in definitions[i + 1 :] if name in names]
            if later:
                found.append(f"{label}: {name} (defined in {', '.join(later)})")
    return found


def main():
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    print("include order:", ", ".join(label for label, _ in units(repo)))
    found = forward_references(repo)
    print("\n".join([*found, f"{len(found)} forward reference(s)"]))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
