"""The one cell lifecycle: every entry point (``run``, ``sweep``, ``mteb``, the lookup benchmarks) executes a
planned cell through :func:`execute`, which returns its record.

The lifecycle owns every step that must be the same for every track:

1. **load** the subject (the table or the data) through the track's hook;
2. **configure** the method for the budget (``UnattainableBudgetError`` before any work);
3. per seed: **produce** the module (``compress`` or ``build``) under the ``fit`` phase, **count** its
   stored bytes (harness accounting; over budget: the record says so and nothing is evaluated),
   **evaluate** it under the ``evaluate`` phase, count the bytes again (a module must not grow);
4. **measure** lookup throughput against the dense module in the same run (``lookup`` phase);
5. read the **dense reference** of the same identity from the store (never run it here: references
   are planned dependencies that ran first in their own process, see :mod:`compbench.bench.cell.references`);
6. **assemble** the record: identity, method, task, budget, device, params, metrics, measurements
   (memory as deltas over the process baseline, by phase; executor and concurrency), provenance.

A track contributes only a :class:`TrackHooks` object (``load``, ``produce``, ``evaluate``,
``dense_module``, optionally ``aggregate`` and ``context``): the posthoc, words, store and train tracks
(:mod:`compbench.bench.tracks.posthoc_track`, :mod:`compbench.bench.tracks.table_track`, :mod:`compbench.bench.tracks.train_track`) and
mteb tasks (:mod:`compbench.tasks.mteb_tasks`, run by :mod:`compbench.bench.tracks.mteb_interop`).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from compbench import stats
from compbench.bench.cell.accounting import count_params, stored_bytes, stored_bytes_breakdown
from compbench.bench.cell.budget import reference_bytes
from compbench.bench.cell.context import prepare, seed_everything
from compbench.bench.cell.memory_guard import check_cell_memory
from compbench.bench.cell.provenance import collect
from compbench.bench.cell.references import find_reference, reference_config
from compbench.bench.cell.tuning import tune
from compbench.bench.cell.watchdog import FitTimeout, FitWatchdog, timeout_facts
from compbench.bench.measure import core as measure
from compbench.bench.measure.core import compare_lookup
from compbench.bench.results.record import Metrics, Params, Record
from compbench.datasets.table_check import check_table
from compbench.errors import CompbenchError


class CellFailed(CompbenchError):
    """A cell ran but produced no result (diverged training, out of memory): recorded as ``failed``."""

    def __init__(self, message: str, measurements: dict[str, Any] | None = None):
        super().__init__(message)
        self.measurements = dict(measurements or {})


@dataclass
class Subject:
    """What a track's ``load`` hands the lifecycle.

    Attributes:
        num_embeddings, dim: the shape of the table being compressed (its fp32 size is the reference).
        model: the record's ``model`` section (identity of the table / encoder / tokenizer).
        data_sha256: sha256 of every data file the task reads.
        backbone_params: parameters outside the embedding (the frozen encoder), for ``params``.
        measurements: merged into the record's measurements (encode time, recipe, splits ...).
        revision: the table's revision (weights sha256); a stored dense reference must match it.
        state: anything the track's other hooks need (the table, the encoder, tokenised splits).
    """

    num_embeddings: int
    dim: int
    model: dict[str, Any]
    data_sha256: dict[str, str]
    backbone_params: int = 0
    measurements: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one seed's evaluation produced: scores (the task's metric among them), measurements, params."""

    scores: dict[str, float]
    measurements: dict[str, Any] = field(default_factory=dict)
    params: Params | None = None
    items: Any = None  # compbench.stats.Items of this seed, when the task gives per-item outcomes


class TrackHooks(Protocol):
    """The track-specific part of a cell (see the module docstring)."""

    def load(self, ctx: Any) -> Subject: ...

    def produce(self, ctx: Any, subject: Subject, config: dict[str, Any], seed: int) -> nn.Module: ...

    def evaluate(self, ctx: Any, subject: Subject, module: nn.Module, config: dict[str, Any],
                 seed: int) -> Outcome: ...

    def dense_module(self, ctx: Any, subject: Subject) -> nn.Module: ...


def _aggregate_default(ctx: Any, outcomes: Sequence[Outcome]) -> tuple[dict[str, float], dict[str, Any]]:
    """One seed: its scores; several: mean of every score, ``main_std`` and ``<metric>_s<seed>``."""
    if len(outcomes) == 1:
        return dict(outcomes[0].scores), dict(outcomes[0].measurements)
    metric = ctx.task.card.metric
    keys = [k for k in outcomes[0].scores if all(k in o.scores for o in outcomes)]
    scores = {k: statistics.fmean(o.scores[k] for o in outcomes) for k in keys}
    scores["main_std"] = statistics.stdev(o.scores[metric] for o in outcomes)
    for s, o in zip(ctx.seeds, outcomes):
        scores[f"{metric}_s{s}"] = o.scores[metric]
    return scores, {"per_seed": [o.measurements for o in outcomes]}


@contextlib.contextmanager
def _no_context(ctx: Any) -> Iterator[None]:
    yield


def reference_score(ctx: Any, subject: Subject) -> tuple[float | None, dict[str, Any] | None, Record | None]:
    """The dense reference's main score from the store (:func:`compbench.bench.cell.references.find_reference`).

    Returns ``(score, facts)``; facts name the reference key and whether this cell is a *system* (its own
    head, or another initialisation than the dense reference of its frame): a system's retention is not
    computed, since it is not the same comparison.
    """
    if ctx.method.card.name == "dense" or ctx.store is None:
        return None, None, None
    try:
        rctx = prepare(reference_config(ctx.config, ctx), None, ctx.cache)
    except CompbenchError:
        return None, None, None
    facts: dict[str, Any] = {"key": rctx.key, "system": ctx.identity.is_system(rctx.identity)}
    rec = find_reference(ctx.store, rctx)
    if rec is None:
        facts["missing"] = True
        return None, facts, None
    if subject.revision is not None and (rec.model or {}).get("revision") not in (None, subject.revision):
        facts["stale"] = "model revision differs"
        return None, facts, None
    facts["key"] = rec.key
    return rec.metrics.main, facts, rec


def execute(ctx: Any, hooks: Any) -> Record:
    """Run the planned cell ``ctx`` (a :class:`~compbench.bench.cell.context.CellContext`) with a track's hooks."""
    phases = measure.MemoryPhases(ctx.device, on_phase=getattr(ctx, "progress", None))
    with phases.phase("load"):
        subject = hooks.load(ctx)
        table = subject.state.get("table")
        if isinstance(table, torch.Tensor):  # the one data gate: every track's table, whoever loaded it
            check_table(table, f"the {ctx.config.track} track's table ({subject.model.get('name', '?')})")
    v, d = subject.num_embeddings, subject.dim
    ref = reference_bytes(v, d)
    budget = ctx.budget_info(ref)
    config = ctx.method.configure(v, d, budget.allowed_bytes)  # raises UnattainableBudgetError
    tuning: dict[str, Any] | None = None
    if ctx.config.tune:  # choose the options on validation data; the test split is read once, below
        own = getattr(hooks, "tune_recipe", None)  # a track that tunes its own recipe (train: lr, patience)
        with phases.phase("tune"):
            if own is not None:
                tuning = own(ctx, subject, config, ctx.seeds[0])
            else:
                ctx.method, tuning = tune(ctx, hooks, subject, budget.allowed_bytes, ctx.seeds[0])
        config = ctx.method.configure(v, d, budget.allowed_bytes)
    memory_check = check_cell_memory(ctx.config.track, ctx.method, v, d, config)  # MemoryRefusal before the fit
    provenance = collect()
    provenance["run_config"] = ctx.config.to_dict()
    measurements: dict[str, Any] = dict(subject.measurements)
    if tuning is not None:
        measurements["tuning"] = tuning
    if memory_check is not None:  # the estimate, not the machine's free memory (which varies run to run)
        measurements["memory_check"] = {k: memory_check[k] for k in ("estimate_bytes", "table_bytes")}
    seeds = list(ctx.seeds)
    multi = bool(getattr(hooks, "multi_seed", False))
    params = Params()

    def record(status: str, error: str | None = None, metrics: Metrics | None = None) -> Record:
        measurements["memory"] = {**phases.to_dict(), "fresh_process": bool(ctx.config.fresh_process)}
        measurements.update(measure.concurrency_info())
        return Record(status=status, error=error, key=ctx.key, track=ctx.config.track, seed=seeds[0],  # type: ignore[arg-type]
                      identity=ctx.identity.to_dict(), method=ctx.method_info(config),
                      task=ctx.task_info(subject.data_sha256), budget=budget, device=ctx.device_info(),
                      params=params, metrics=metrics or Metrics(seeds=seeds if multi else None),
                      measurements=measurements, model=dict(subject.model), provenance=provenance)

    def count(module: nn.Module) -> None:
        n = stored_bytes(module)
        if budget.stored_bytes is None or n > budget.stored_bytes:
            budget.stored_bytes = n
            budget.breakdown = stored_bytes_breakdown(module)
            budget.achieved_ratio = ref / n if n else None

    def module_params(module: nn.Module) -> Params:
        pc = count_params(module)
        return Params(total=subject.backbone_params + pc.total, trainable=pc.trainable, embedding=pc.total,
                      backbone=subject.backbone_params)

    outcomes: list[Outcome] = []
    first: nn.Module | None = None
    limit = ctx.config.max_fit_seconds if ctx.config.max_fit_seconds and ctx.config.max_fit_seconds > 0 else None
    fit_spent = 0.0

    def timed_out(elapsed: float, message: str) -> Record:
        measurements["timeout"] = timeout_facts(limit, elapsed)
        return record("timeout", message)

    def phase_hard_stop(what: str, t0: float) -> Callable[[], None]:
        def stop() -> None:  # the watchdog thread, before it ends the process
            rec = timed_out(time.perf_counter() - t0,
                            f"the {what} ran past --max-fit-seconds {limit:g} s inside a native call; stopped")
            if ctx.store is not None:
                ctx.store.write(rec)
        return stop

    with getattr(hooks, "context", _no_context)(ctx):
        for s in seeds:
            seed_everything(s)
            t_fit = time.perf_counter()

            def hard_stop(t0: float = t_fit, spent: float = fit_spent) -> None:  # watchdog thread, before the exit
                rec = timed_out(spent + time.perf_counter() - t0,
                                f"the fit ran past --max-fit-seconds {limit:g} s inside a native call; stopped")
                if ctx.store is not None:
                    ctx.store.write(rec)

            remaining = None if limit is None else max(limit - fit_spent, 1e-3)
            try:
                with phases.phase("fit") as fit, FitWatchdog(remaining, hard_stop=bool(ctx.config.fresh_process),
                                                             on_hard_stop=hard_stop):
                    module = hooks.produce(ctx, subject, config, s)
                    module = module.to(ctx.device)
            except FitTimeout:
                return timed_out(fit_spent + time.perf_counter() - t_fit,
                                 f"the fit ran past --max-fit-seconds {limit:g} s and was stopped")
            fit_spent += time.perf_counter() - t_fit
            measurements["fit_time_s"] = fit.seconds  # summed over the seeds by the phase
            count(module)
            if params.total is None:
                params = module_params(module)
            if budget.stored_bytes is not None and budget.stored_bytes > budget.allowed_bytes:
                when = " after training" if outcomes else ""
                return record("over_budget", f"stored {budget.stored_bytes:,} B{when} > allowed {budget.allowed_bytes:,} B")
            t_eval = time.perf_counter()
            try:
                with phases.phase("evaluate") as ev, FitWatchdog(limit, hard_stop=bool(ctx.config.fresh_process),
                                                                 on_hard_stop=phase_hard_stop("evaluation", t_eval),
                                                                 what="evaluation"):
                    outcome = hooks.evaluate(ctx, subject, module, config, s)
            except FitTimeout as exc:
                return timed_out(time.perf_counter() - t_eval, str(exc))
            except CellFailed as exc:
                measurements.update(exc.measurements)
                return record("failed", str(exc))
            except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
                return record("failed", f"CUDA out of memory: {exc}".splitlines()[0])
            measurements["eval_time_s"] = ev.seconds
            if outcome.params is not None:
                params = outcome.params
            outcomes.append(outcome)
            count(module)  # the harness' figure is taken on the evaluated (trained) module too
            if first is None:
                first = module
            else:
                del module
    if budget.stored_bytes is not None and budget.stored_bytes > budget.allowed_bytes:
        return record("over_budget", f"stored {budget.stored_bytes:,} B after training > allowed {budget.allowed_bytes:,} B")
    aggregate = getattr(hooks, "aggregate", None)
    scores, extra = aggregate(ctx, subject, outcomes) if aggregate else _aggregate_default(ctx, outcomes)
    measurements.update(extra)
    main = float(scores[ctx.task.card.metric])
    if not math.isfinite(main):  # a non-finite score is never written as a success
        return record("failed", f"the task's {ctx.task.card.metric} is not finite ({main}); nothing is ranked")
    assert first is not None
    t_lookup = time.perf_counter()
    try:
        with phases.phase("lookup"), FitWatchdog(limit, hard_stop=bool(ctx.config.fresh_process),
                                                 on_hard_stop=phase_hard_stop("lookup timing", t_lookup),
                                                 what="lookup timing"):
            measurements["lookup"] = compare_lookup(first, hooks.dense_module(ctx, subject), num_embeddings=v,
                                                    device=ctx.device, iters=ctx.config.lookup_iters, seed=seeds[0],
                                                    workload=ctx.config.lookup_workload,
                                                    variants=ctx.method.lookup_variants(first),
                                                    **dict(getattr(hooks, "lookup_options", {})))
    except FitTimeout as exc:
        return timed_out(time.perf_counter() - t_lookup, str(exc))
    dense_rec: Record | None = None
    if ctx.method.card.name == "dense":
        dense_score: float | None = main
        facts: dict[str, Any] | None = None
    else:
        dense_score, facts, dense_rec = reference_score(ctx, subject)
    retention = None
    if facts is not None:
        measurements["reference"] = facts
        if facts.get("system"):
            retention = None  # another head or init than the dense reference: a system, not a ranked cell
    if dense_score and not (facts or {}).get("system") and ctx.task.card.higher_is_better:
        retention = main / dense_score  # a lower-is-better score (the lm track's NLL) states its own ratios
    metrics = Metrics(main=main, scores=scores, seeds=seeds if multi else None, dense_score=dense_score,
                      retention=retention)
    _uncertainty(ctx, outcomes, metrics, measurements, dense_rec)
    return record("ok", metrics=metrics)


def _uncertainty(ctx: Any, outcomes: Sequence[Outcome], metrics: Metrics, measurements: dict[str, Any],
                 dense_rec: Record | None) -> None:
    """Intervals of the main score (and of retention) from the seeds' per-item outcomes, and the items sidecar
    next to the record (referenced by sha256). Nothing when the task gives no per-item outcomes."""
    import time

    parts = [o.items for o in outcomes]
    if not parts or any(p is None for p in parts):
        return
    t0 = time.perf_counter()
    items = stats.Items.stack(parts)
    if items.n_items < 2 and items.n_seeds < 2:  # one test item: no interval can be drawn from it
        measurements["interval_note"] = "one test item: no interval"
        return
    metrics.interval = stats.interval(items)
    if metrics.retention is not None and dense_rec is not None and ctx.store is not None:
        dense_items = ctx.store.read_items(dense_rec)
        if dense_items is not None and dense_items.n_items == items.n_items and dense_items.kind == items.kind:
            metrics.retention_interval = stats.ratio_interval(items, dense_items)
    if ctx.store is not None:
        measurements["items"] = ctx.store.write_items(ctx.key, items)
    measurements["stats_time_s"] = time.perf_counter() - t0


__all__ = ["CellFailed", "Outcome", "Subject", "TrackHooks", "execute", "reference_score"]

