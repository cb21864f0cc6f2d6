"""The package's layers (issue 33): ``.importlinter`` fixes the order cli > leaderboard and facades > bench > tasks >
methods, models, datasets > core, and ``lint-imports`` (part of ``make lint``) enforces it, function-level imports
included. Imports of compbench's own modules inside functions make the structure hard to see; they may only go
down: this test counts them and fails when the count grows (lower ``MAX_IN_FUNCTION`` when you remove some)."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "compbench"
#: in-function imports of compbench modules today (the CLI's lazy subcommand imports among them); only downwards
MAX_IN_FUNCTION = 44


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


def test_in_function_imports_only_go_down() -> None:
    found = in_function_imports()
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
