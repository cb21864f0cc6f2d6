"""The package's layers (issue 33): ``.importlinter`` fixes the order cli > leaderboard and facades > bench > tasks >
methods, models, datasets > core, and ``lint-imports`` (part of ``make lint``) enforces it, function-level imports
included. Imports of compbench's own modules inside functions make the structure hard to see: each one must defer a
heavy library, say which (``# heavy: torch``), and the claim is checked: the imported module pulls that library in
at import time (directly or through compbench modules it imports at the top) and the importing module does not.
Anything else (an import dodging a cycle, an unexplained one) is refused: 0 allowed."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "compbench"
#: the libraries worth deferring: importing any of them costs a noticeable fraction of a second (``compbench --help``
#: and the CLI's usage errors stay fast because the command modules import them only when a command runs)
HEAVY = {"torch", "numpy", "pandas", "pydantic", "matplotlib", "faiss", "ray", "mteb", "transformers",
         "sentence_transformers", "datasets", "scipy", "sklearn"}
#: in-function imports of compbench modules today, all deferring a heavy library; the count may only go down
MAX_IN_FUNCTION = 40


def in_function_imports() -> list[str]:
    """``path:line`` of every ``import compbench...`` / ``from compbench... import`` inside a function."""
    found: list[str] = []

    class Visitor(ast.NodeVisitor):
        def __init__(self, path: Path) -> None:
            self.path, self.depth = path, 0

        def visit_FunctionDef(self, node: ast.AST) -> None:  # noqa: N802
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

        def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
            if self.depth and any(a.name.split(".")[0] == "compbench" for a in node.names):
                found.append(f"{self.path.relative_to(REPO)}:{node.lineno}")

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
            if self.depth and node.level == 0 and (node.module or "").split(".")[0] == "compbench":
                found.append(f"{self.path.relative_to(REPO)}:{node.lineno}")

    for path in sorted(SRC.rglob("*.py")):
        Visitor(path).visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports() -> dict[str, set[str]]:
    """Module -> the modules it imports at import time (module level, ``if TYPE_CHECKING`` blocks excluded)."""
    out: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name, deps = _module_name(path), set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for sub in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
                if isinstance(sub, ast.Import):
                    deps.update(a.name for a in sub.names)
                elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                    deps.add(sub.module)
                    deps.update(f"{sub.module}.{a.name}" for a in sub.names)  # from pkg import submodule
        out[name] = deps
    return out


def _pulls_in(module: str, graph: dict[str, set[str]]) -> set[str]:
    """The third-party top-level packages importing ``module`` loads (its parents' ``__init__`` included)."""
    seen: set[str] = set()
    libs: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            seen.add(prefix)
            if prefix in graph:
                for dep in graph[prefix]:
                    if dep.split(".")[0] == "compbench":
                        todo.append(dep)
                    else:
                        libs.add(dep.split(".")[0])
    return libs


def in_function_import_lines() -> list[tuple[Path, int, str, str]]:
    """(file, line, imported module, the line's text) of every in-function import of a compbench module."""
    rows = []
    for loc in in_function_imports():
        rel, line = loc.rsplit(":", 1)
        path = REPO / rel
        text = path.read_text(encoding="utf-8").splitlines()[int(line) - 1]
        node = next(n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                    if isinstance(n, ast.Import | ast.ImportFrom) and n.lineno == int(line))
        module = str(node.module if isinstance(node, ast.ImportFrom) else node.names[0].name)
        if isinstance(node, ast.ImportFrom) and (SRC.parent / module.replace(".", "/") / node.names[0].name).with_suffix(
                ".py").is_file():
            module = f"{module}.{node.names[0].name}"  # from compbench import artifact
        rows.append((path, int(line), module, text))
    return rows


def test_in_function_imports_only_defer_heavy_libraries() -> None:
    graph = _top_level_imports()
    found = in_function_import_lines()
    bad = []
    for path, line, module, text in found:
        where = f"{path.relative_to(REPO)}:{line} {module}"
        if "# heavy:" not in text:
            bad.append(f"{where}: no '# heavy: LIB' (import it at the top of the module)")
            continue
        lib = text.split("# heavy:", 1)[1].split()[0].strip(",;")
        if lib not in HEAVY:
            bad.append(f"{where}: '{lib}' is not a heavy library ({', '.join(sorted(HEAVY))})")
        elif lib not in _pulls_in(module, graph):
            bad.append(f"{where}: importing it does not load {lib}")
        elif lib in _pulls_in(_module_name(path), graph):
            bad.append(f"{where}: {_module_name(path)} already loads {lib} at import time")
    assert not bad, "\n".join(bad)
    assert len(found) <= MAX_IN_FUNCTION, (f"{len(found)} in-function imports of compbench modules (at most "
                                           f"{MAX_IN_FUNCTION}); import at the top of the module instead")


def test_the_core_and_the_tasks_import_nothing_above_them() -> None:
    """The shared primitives live low (stats at the package root, token frequencies in datasets, the mteb task
    adapter in tasks): no task, method, model or dataset module imports the harness, even inside a function."""
    bad = []
    for pkg in ("tasks", "methods", "models", "datasets"):
        for path in sorted((SRC / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("compbench.bench",
                                                                                          "compbench.leaderboard",
                                                                                          "compbench.cli")):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} {node.module}")
    assert not bad, bad


@pytest.mark.skipif(shutil.which("lint-imports") is None and not (REPO / ".venv/bin/lint-imports").is_file(),
                    reason="import-linter not installed (make setup installs it)")
def test_lint_imports_keeps_the_layer_contract() -> None:
    exe = shutil.which("lint-imports") or str(REPO / ".venv/bin/lint-imports")
    proc = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "BROKEN" not in proc.stdout, proc.stdout[-3000:]


def test_no_two_modules_share_a_name() -> None:
    """One name, one module: ``report.py`` in two packages made every stack trace and every grep ambiguous."""
    by_name: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.name not in ("__init__.py", "__main__.py"):
            by_name.setdefault(path.name, []).append(str(path.relative_to(SRC)))
    assert {n: p for n, p in by_name.items() if len(p) > 1} == {}
