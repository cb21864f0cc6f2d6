"""Hooks for "compress a fixed table, evaluate it": shared by the ``words`` and ``store`` tracks.

The table is the object being compressed (the GloVe word table; a corpus' sentence
vectors); the budget is relative to it as fp32 (``rows x dim x 4`` bytes). The lifecycle
(:mod:`compbench.bench.cell.lifecycle`) configures the method, compresses, counts stored bytes on
the module, and compares lookup throughput with the dense table in the same run; these hooks
evaluate the *materialised* table. Retention is against the dense cell of the same task (a
planned dependency, :mod:`compbench.bench.cell.references`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compbench.bench.cell.context import data_sha256
from compbench.bench.cell.lifecycle import Outcome, Subject
from compbench.datasets.user_table import load_user_table


class TableHooks(ABC):
    """Subclasses implement :meth:`load` (returning a Subject whose ``state`` holds ``table`` and ``evaluate``,
    a ``(task, candidate_table, dense_table, seed) -> (scores, items or None)`` function; ``task`` is the evaluating
    context's task, so tuning's validation task is the one that runs)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx

    @abstractmethod
    def load(self, ctx: Any) -> Subject:
        """The table and its evaluation (each track's own)."""

    @staticmethod
    def subject(ctx: Any, table: torch.Tensor, model: dict[str, Any],
                evaluate: Callable[[Any, torch.Tensor, torch.Tensor, int], tuple[dict[str, float], Any]] | None = None,
                measurements: dict[str, Any] | None = None) -> Subject:
        """A Subject for the fp32 ``table [n, d]`` (its fp32 size is the reference bytes); ``evaluate`` is what
        :meth:`evaluate` calls (None for tracks that override :meth:`evaluate`)."""
        table = table.float()
        v, d = table.shape
        return Subject(num_embeddings=v, dim=d, model=dict(model), data_sha256=data_sha256(ctx.task),
                       measurements=dict(measurements or {}), revision=model.get("revision"),
                       state={"table": table, "evaluate": evaluate})

    def produce(self, ctx: Any, subject: Subject, config: dict[str, Any], seed: int) -> nn.Module:
        """Compress the table."""
        return ctx.method.compress(subject.state["table"].to(ctx.device), config, seed=seed).eval()

    def evaluate(self, ctx: Any, subject: Subject, module: nn.Module, config: dict[str, Any], seed: int) -> Outcome:
        """Evaluate the materialised table against the dense one."""
        with torch.inference_mode():
            table = module.materialize().float().cpu()  # type: ignore[operator]
        scores, items = subject.state["evaluate"](ctx.task, table, subject.state["table"], seed)
        return Outcome(scores=scores, items=items)

    def dense_module(self, ctx: Any, subject: Subject) -> nn.Module:
        """The dense table as an ``nn.Embedding``."""
        return nn.Embedding.from_pretrained(subject.state["table"], freeze=True)


class UserTableHooks(TableHooks):
    """The ``table`` track: a user's table (``--table FILE``, :mod:`compbench.datasets.user_table`), scored by
    :class:`compbench.tasks.table_fidelity.TableFidelity`. No dense reference (fidelity is to the table itself)."""

    def load(self, ctx: Any) -> Subject:
        """Read and validate the user's table."""
        table, info = load_user_table(str(ctx.config.model), (ctx.config.extra or {}).get("tensor"))
        return self.subject(ctx, table, info, evaluate=ctx.task.score)
