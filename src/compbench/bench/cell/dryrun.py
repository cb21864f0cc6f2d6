"""Plan one cell without running it: ``compbench run --dry-run`` (and the pre-flight of every ``run``).

:func:`plan_cell` resolves the method (options checked against their ranges), budget, task, device,
threads, seed, cell key (and identity, where the runner provides one) through
:func:`compbench.bench.cell.context.prepare`, with no store: nothing is written, no model is loaded, nothing
is compressed. When the table's shape is known without loading a model it also checks attainability
exactly as the cell would: ``Budget.resolve(V * d * 4)`` (an absolute budget above the dense size is
refused) and ``method.configure(V, d, allowed)`` (an unattainable budget raises the usual one-line
error naming the smallest budget the method can meet).

Known shapes (``--model`` not given):

======= ================================================================================
track   table
======= ================================================================================
posthoc the bundled all-MiniLM-L6-v2 token table, ``vocab_size x hidden_size`` from its config.json
        (30522 x 384)
words   GloVe 6B 50d, 400,000 x 50
train   MiniLM's WordPiece vocabulary (30522) x the resolved ``d_model`` (128 by default; 384 for
        methods initialised from the pretrained table)
store   the task's corpus (one row per text) x the bundled encoder's width (384)
======= ================================================================================

With ``--model``, the shape is known only after loading it; the plan then says so, and the cell checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compbench.bench.cell.context import prepare
from compbench.bench.cell.identity import bundled_table_shape
from compbench.bench.cell.memory_guard import check_cell_memory
from compbench.bench.cell.plan import table_shape
from compbench.bench.cell.references import REFERENCE_TRACKS, find_reference, reference_config
from compbench.bench.results.record_store import ResultStore
from compbench.config import RunConfig


def known_table_shape(ctx: Any) -> tuple[int, int] | None:
    """``(V, d)`` of the table the prepared cell ``ctx`` compresses, when known without loading a model
    (:func:`compbench.bench.cell.plan.table_shape`; the store track's corpus size comes from its task)."""
    shape = table_shape(ctx.config, ctx.identity)
    if shape is None and ctx.config.track == "store" and ctx.config.model is None:
        bundled = bundled_table_shape()
        corpus = getattr(ctx.task, "corpus", None)
        return (len(corpus()), bundled[1]) if bundled and callable(corpus) else None
    return shape


@dataclass
class CellPlan:
    """A resolved cell that was not run: what ``run`` would do and where its record would go."""

    ctx: Any  # compbench.bench.cell.context.CellContext
    shape: tuple[int, int] | None
    reference_bytes: int | None
    allowed_bytes: int | None
    method_config: dict[str, Any] | None
    record_path: Path
    reference: dict[str, Any] | None = None  # the planned dense reference: key and whether the store holds it

    @property
    def identity(self) -> Any:
        """The cell identity, when the runner resolves one (None otherwise)."""
        return getattr(self.ctx, "identity", None)

    def to_dict(self) -> dict[str, Any]:
        """JSON view (``compbench run --dry-run --json``)."""
        ctx = self.ctx
        ident = self.identity
        if ident is not None and hasattr(ident, "to_dict"):
            ident = ident.to_dict()
        return {
            "method": ctx.method.card.name, "method_version": ctx.method.card.version,
            "options": dict(ctx.config.options), "resolved_options": ctx.method.resolved_options(),
            "track": ctx.config.track, "task": ctx.task.card.name,
            "task_version": ctx.task.card.version, "budget": str(ctx.budget),
            "table_shape": list(self.shape) if self.shape else None, "reference_bytes": self.reference_bytes,
            "allowed_bytes": self.allowed_bytes, "attainable": True if self.method_config is not None else None,
            "method_config": self.method_config, "device": str(ctx.device), "threads": ctx.threads,
            "seed": ctx.config.seed, "seeds": list(ctx.config.seeds) if ctx.config.seeds else None,
            "key": ctx.key, "identity": ident, "record": str(self.record_path), "reference": self.reference,
        }


def plan_cell(config: RunConfig, results: Path | str) -> CellPlan:
    """Resolve ``config`` and check its budget without running it (see the module docstring).

    Raises the same one-line UsageErrors as the cell would (unknown names, bad options, a malformed,
    oversized or unattainable budget, a missing device) and DataError for a bad user data file.
    """
    ctx = prepare(config)
    shape = known_table_shape(ctx)
    ref = allowed = None
    method_config = None
    if shape is not None:
        v, d = shape
        ref = v * d * 4
        allowed = ctx.budget.resolve(ref)
        method_config = ctx.method.configure(v, d, allowed)

        check_cell_memory(config.track, ctx.method, v, d, method_config)  # refuse now, in one line
    return CellPlan(ctx=ctx, shape=shape, reference_bytes=ref, allowed_bytes=allowed, method_config=method_config,
                    record_path=Path(results) / f"{ctx.key}.json", reference=planned_reference(ctx, results))


def planned_reference(ctx: Any, results: Path | str) -> dict[str, Any] | None:
    """The dense reference ``run`` plans before the cell: its key, and whether ``results`` holds a current record
    of it (else ``run`` runs it first, in a fresh process). None for ``dense`` itself."""
    if ctx.method.card.name == "dense" or ctx.config.track not in REFERENCE_TRACKS:
        return None
    rctx = prepare(reference_config(ctx.config, ctx))
    root = Path(results)
    found = find_reference(ResultStore(root), rctx) if root.is_dir() else None
    return {"key": rctx.key, "held": found is not None, "held_by": found.key if found is not None else None,
            "system": ctx.identity.is_system(rctx.identity)}


__all__ = ["CellPlan", "known_table_shape", "plan_cell"]
