"""Run one benchmark cell: resolve it (:func:`compbench.bench.cell.context.prepare`), run its planned dense reference first in a fresh
process when the store lacks it (:mod:`compbench.bench.cell.references`), execute it through the one lifecycle
(:func:`compbench.bench.cell.lifecycle.execute`) and write the record.

Tracks are looked up lazily in :data:`TRACK_RUNNERS` (``"module:attr"``): ``attr(ctx)`` returns the
track's hooks (:class:`~compbench.bench.cell.lifecycle.TrackHooks`), which the lifecycle runs. An
out-of-tree plugin may instead return a finished :class:`~compbench.bench.results.record.Record` (the tests'
fast fake track does); it is written as returned.
"""

from __future__ import annotations

import importlib
from typing import Any

from compbench.bench.cell.context import (
    TRACK_RUNNERS,
    CellContext,
    prepare,
    seed_everything,
)
from compbench.bench.cell.lifecycle import execute
from compbench.bench.cell.references import ensure_reference
from compbench.bench.measure.core import apply_threads
from compbench.bench.results.record import Record
from compbench.bench.results.record_store import ResultStore
from compbench.config import RunConfig


def track_hooks(ctx: CellContext) -> Any:
    """The track's hooks for ``ctx`` (or, for an out-of-tree plugin runner, its finished Record)."""
    module_name, attr = TRACK_RUNNERS[ctx.config.track].split(":")
    return getattr(importlib.import_module(module_name), attr)(ctx)


def execute_planned(ctx: CellContext) -> Record:
    """Execute a prepared cell through the lifecycle (threads and seeds applied here); no writing."""
    apply_threads(ctx.threads)
    seed_everything(ctx.config.seed)
    hooks = track_hooks(ctx)
    if isinstance(hooks, Record):
        return hooks
    return execute(ctx, hooks)


def run_cell(config: RunConfig, store: ResultStore | None = None, *, write: bool = True,
             cache: dict[str, Any] | None = None, references: bool = True, imports: tuple[str, ...] = (),
             progress: Any = None) -> Record:
    """Run one cell and (by default) write its record atomically into ``store``.

    With a store and ``references`` (default), the cell's dense reference is planned first: when the
    store has no current record of it, it runs in a fresh process of its own
    (:func:`compbench.bench.cell.references.ensure_reference`), never inside this one.
    Raises UsageError (bad names, budgets, devices; unattainable budget) before any work is done.
    """
    ctx = prepare(config, store, cache)
    ctx.progress = progress
    if references and store is not None:
        ensure_reference(ctx, imports=imports)  # ``imports``: plugins the reference's worker must import
    record = execute_planned(ctx)
    if write and store is not None:
        store.write(record)
    return record
