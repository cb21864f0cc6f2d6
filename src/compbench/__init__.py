"""compbench: a benchmark suite for embedding compression.

Public API (library first; the CLI is a thin layer over these):

- :func:`compbench.bench.cell.runner.run_cell` runs one (method, budget, task, device, seed) cell.
- :class:`compbench.bench.cell.budget.Budget` parses and resolves memory budgets.
- :func:`compbench.methods.get_method` / :func:`compbench.methods.list_methods` query the method registry.
- :func:`compbench.tasks.get_task` / :func:`compbench.tasks.list_tasks` query the task registry.
- :func:`compbench.load_embedding` loads an artifact written by ``compbench export``; :func:`compbench.apply` puts
  it into a transformers or sentence-transformers model (:mod:`compbench.artifact`).
"""

from __future__ import annotations

from typing import Any

from compbench.version import __version__

__all__ = ["__version__", "apply", "load_embedding"]


def __getattr__(name: str) -> Any:  # lazy: ``import compbench`` stays light
    if name in ("apply", "load_embedding"):
        from compbench import artifact  # heavy: torch

        return getattr(artifact, name)
    raise AttributeError(f"module 'compbench' has no attribute {name!r}")
