"""Sweeps: a suite (a YAML grid) -> cells (RunConfig) -> an executor -> one record per cell in the store.

A **suite** is a YAML file, shipped (``src/compbench/suites/<name>.yaml``: ``smoke``,
``default``, ``full``) or given by path. Top-level keys are defaults for its
``grids`` (or, without ``grids``, the suite is one grid)::

    name: smoke
    threads: 1
    devices: [cpu]
    seeds: [0]
    grids:
      - tasks: [posthoc/fidelity]
        methods: [dense, svd, quant-int2]
        budgets: [10x]

Grid keys: ``methods``, ``budgets``, ``tasks`` (``track/name`` or ``{track:, name:}``),
``devices``, ``seeds``, ``threads``, ``options`` (``{method: {key: value}}``),
``aggregate_seeds`` (train track: one cell aggregating all seeds, mean +- std),
``batch_size``, ``lookup_iters``, ``lookup_workload`` (``zipf`` or ``uniform``), ``model``, ``extra`` (track settings, e.g. for train:
``{backbone: bag, max_steps: 30, max_train_samples: 512, recipe: {lr: 0.003}}``). CLI overrides (``--methods`` ...) replace
the field in every grid; duplicate cells are dropped.

**Planning** resolves each cell (names are validated first: a typo stops the sweep
before any work, exit 2) and decides, against the records already in the store and
the ``--overwrite`` policy, whether it runs, is reused, or is known to be skipped
(unsupported track, unavailable device) -- skipped cells get a ``skipped`` record
with the reason. Unattainable budgets are found by the method's ``configure``: up front
when the table shape is known without loading a model (posthoc and train cells on the bundled
vocabulary, words cells on GloVe), else inside the cell; they are recorded as ``skipped`` too. Every cell
needs the dense reference of its identity frame (retention, :mod:`compbench.bench.cell.references`); the sweep
adds those ``dense`` / ``1x`` cells and runs them first, each in its own worker, so no two cells compute the
same reference and no candidate runs one.

This module runs planned cells (:func:`run_sweep`); suites live in :mod:`compbench.bench.sweeps.suite`, planning
in :mod:`compbench.bench.cell.plan`, records of cells without a result in :mod:`compbench.bench.cell.outcomes`.

**Resume**: a record is *up to date* when it exists, is valid, has the current
method and task versions, was run with the same cell configuration (recorded in
``provenance.sweep.fingerprint``) and did not fail. ``only-missing`` (default)
re-runs everything else; ``never`` never replaces an existing file; ``always``
re-runs every cell. A cell aggregating several seeds (``aggregate_seeds``) without its own record is
also up to date when up-to-date single-seed records of the same configuration hold all its seeds
(:func:`seed_records_covering`; the leaderboard pools them); when they hold only some of them, the plan
replaces the cell by single-seed cells for the missing seeds (:func:`seed_coverage`), so no recorded seed
runs twice. Records are written atomically
(temp file + rename), so a killed sweep leaves whole records or none, and re-running the same
command completes exactly the missing cells.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from compbench.bench.cell.outcomes import outcome_record
from compbench.bench.cell.plan import (
    Cell,
)
from compbench.bench.results.record import Record
from compbench.bench.results.record_store import ResultStore
from compbench.bench.sweeps import executors
from compbench.errors import UsageError


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
@dataclass
class SweepEvent:
    """Progress notification: ``plan`` (once, with the cells), ``start`` and ``done`` per executed cell."""

    kind: str
    cell: Cell | None = None
    record: Record | None = None
    cells: list[Cell] | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    """What a sweep did."""

    cells: list[Cell]
    records: dict[str, Record] = field(default_factory=dict)  # key -> record written by this sweep
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, action: str) -> int:
        """Number of cells with this planned action."""
        return sum(c.action == action for c in self.cells)

    @property
    def statuses(self) -> dict[str, int]:
        """Status counts of the records written by this sweep."""
        out: dict[str, int] = {}
        for r in self.records.values():
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def missing(self) -> list[Cell]:
        """Cells that should have run but have no record from this sweep (interrupted)."""
        return [c for c in self.cells if c.action in ("run", "skip") and c.key not in self.records]

    @property
    def failed(self) -> list[Record]:
        """Records of cells that failed (or timed out) in this sweep."""
        return [r for r in self.records.values() if r.status in ("failed", "timeout")]

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (``compbench sweep --json``)."""
        return {
            "cells": len(self.cells),
            "ran": sum(1 for c in self.cells if c.action == "run" and c.key in self.records),
            "cached": self.count("cached"),
            "skipped_known": self.count("skip"),
            "statuses": self.statuses,
            "missing": [c.key for c in self.missing],
            "failed": {r.key: r.error for r in self.failed},
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 2),
        }


EventCallback = Callable[[SweepEvent], None]


def run_sweep(cells: Sequence[Cell], store: ResultStore, executor: Any, *,
              on_event: EventCallback | None = None) -> SweepResult:
    """Execute planned cells: write skipped records, then run the dense references, then the rest.

    Returns a SweepResult; on SIGINT (KeyboardInterrupt) the executor stops its running cells, finished
    records stay, and the result has ``interrupted=True``. Re-running completes the missing cells.
    """
    store.check_writable()
    t0 = time.perf_counter()
    result = SweepResult(cells=list(cells))
    emit = on_event or (lambda e: None)
    emit(SweepEvent("plan", cells=list(cells)))

    def done(cell: Cell, record: Record, seconds: float = 0.0) -> None:
        result.records[cell.key] = record
        emit(SweepEvent("done", cell=cell, record=record, seconds=seconds))

    try:
        for cell in cells:
            if cell.action == "skip":
                rec = outcome_record(cell.config, "skipped", cell.skip_reason or "", key=cell.key, skip=cell.skip_kind,
                                     reference_bytes=cell.reference_bytes)
                store.write(rec)
                done(cell, rec)
        to_run = [c for c in cells if c.action == "run"]
        first = [c for c in to_run if c.config.method == "dense" and c.config.budget.strip() in ("1x", "1.0x")]
        rest = [c for c in to_run if c not in first]
        for wave in (first, rest):
            if wave:
                executor.run(wave, store, done, lambda c: emit(SweepEvent("start", cell=c)))
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()
    result.seconds = time.perf_counter() - t0
    return result


def make_executor(kind: str, *, jobs: int = 1, address: str | None = None, imports: Sequence[str] = (),
                  cell_timeout: float | None = None) -> Any:
    """``local`` (a pool of fresh processes), ``ray`` (Ray tasks) or ``inline`` (this process, for debugging)."""
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if cell_timeout is not None and cell_timeout <= 0:
        raise UsageError(f"--cell-timeout must be > 0, got {cell_timeout}")
    if kind == "local":
        return executors.LocalExecutor(jobs=jobs, imports=imports, cell_timeout=cell_timeout)
    if kind == "ray":
        return executors.RayExecutor(address=address, imports=imports)
    if kind == "inline":
        return executors.InlineExecutor(imports=imports)
    hint = difflib.get_close_matches(kind, ["local", "ray", "inline"], n=1)
    raise UsageError(f"unknown executor '{kind}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
                     + " (executors: local, ray, inline)")


__all__ = ["SweepEvent", "SweepResult", "make_executor", "run_sweep"]
