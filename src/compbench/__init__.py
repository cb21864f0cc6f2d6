"""compbench: a benchmark suite for embedding compression.

Public API (library first; the CLI is a thin layer over these):

- :func:`compbench.bench.runner.run_cell` runs one (method, budget, task, device, seed) cell.
- :class:`compbench.bench.budget.Budget` parses and resolves memory budgets.
- :func:`compbench.methods.get_method` / :func:`compbench.methods.list_methods` query the method registry.
- :func:`compbench.tasks.get_task` / :func:`compbench.tasks.list_tasks` query the task registry.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
