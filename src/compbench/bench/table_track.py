"""A track runner for "compress a fixed table, evaluate it": shared by the ``words`` and ``store`` tracks.

The table is the object being compressed (the GloVe word table; a corpus' sentence
vectors); the budget is relative to it as fp32 (``rows x dim x 4`` bytes). Like the
posthoc runner: configure the method for the budget, compress, measure stored bytes
from the module, evaluate the *materialised* table, compare lookup throughput with the
dense table in the same run, and compute retention against the dense cell of the same
task (read from the store when present and current, else run and stored first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from compbench.bench.accounting import count_params, stored_bytes, stored_bytes_breakdown
from compbench.bench.budget import reference_bytes
from compbench.bench.measure import (
    Stopwatch,
    compare_lookup,
    current_rss_bytes,
    gpu_peak,
    peak_rss_bytes,
    reset_gpu_peak,
)
from compbench.bench.provenance import collect
from compbench.bench.record import Metrics, Params, Record
from compbench.errors import RecordError


def dense_reference(ctx: Any, revision: str | None) -> float | None:
    """Main score of the dense table for this cell's task: the stored dense record when it is current, else run it."""
    from compbench.bench.runner import prepare, run_cell

    if ctx.method.card.name == "dense":
        return None
    dense_cfg = replace(ctx.config, method="dense", budget="1x", options={})
    dctx = prepare(dense_cfg, ctx.store, ctx.cache)
    if ctx.store is not None and ctx.store.exists(dctx.key):
        try:
            rec = ctx.store.read(dctx.key)
            if (rec.status == "ok" and rec.task.version == ctx.task.card.version and rec.metrics.main is not None
                    and (rec.model or {}).get("revision") == revision):
                return rec.metrics.main
        except RecordError:
            pass  # malformed: recompute and overwrite
    rec = run_cell(dense_cfg, ctx.store, write=ctx.store is not None, cache=ctx.cache)
    return rec.metrics.main


def run_table_cell(ctx: Any, dense_table: torch.Tensor, model: dict[str, Any],
                   evaluate: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
                   extra_measurements: dict[str, Any] | None = None) -> Record:
    """Compress ``dense_table [n, d]`` with the cell's method at its budget, evaluate, measure, build the record.

    Args:
        ctx: the :class:`~compbench.bench.runner.CellContext`.
        dense_table: the fp32 table being compressed (its fp32 size is the reference bytes).
        model: identity of the table for the record (``name``, ``revision``, ...); ``revision`` decides
            whether a stored dense reference is current.
        evaluate: ``(candidate_table, dense_table) -> scores`` (must contain the task's main metric).
        extra_measurements: merged into the record's measurements (e.g. encode/cache time).
    """
    from compbench.bench.runner import data_sha256

    rss_before = current_rss_bytes()
    dense_table = dense_table.float()
    v, d = dense_table.shape
    ref = reference_bytes(v, d)
    budget = ctx.budget_info(ref)
    config = ctx.method.configure(v, d, budget.allowed_bytes)  # raises UnattainableBudgetError
    shas = data_sha256(ctx.task)
    provenance = collect()
    provenance["run_config"] = ctx.config.to_dict()

    reset_gpu_peak(ctx.device)
    with Stopwatch(ctx.device) as fit:
        module = ctx.method.compress(dense_table.to(ctx.device), config, seed=ctx.config.seed)
    module = module.to(ctx.device).eval()
    budget.stored_bytes = stored_bytes(module)
    budget.breakdown = stored_bytes_breakdown(module)
    budget.achieved_ratio = ref / budget.stored_bytes if budget.stored_bytes else None
    pc = count_params(module)
    params = Params(total=pc.total, trainable=pc.trainable, embedding=pc.total, backbone=0)
    measurements: dict[str, Any] = {"fit_time_s": fit.seconds, **(extra_measurements or {})}
    base = dict(key=ctx.key, track=ctx.config.track, seed=ctx.config.seed, method=ctx.method_info(config),
                task=ctx.task_info(shas), budget=budget, device=ctx.device_info(), params=params,
                model=dict(model), provenance=provenance)

    if budget.stored_bytes > budget.allowed_bytes:
        measurements["memory"] = _memory(ctx, rss_before)
        return Record(status="over_budget", error=f"stored {budget.stored_bytes:,} B > allowed {budget.allowed_bytes:,} B",
                      measurements=measurements, **base)
    try:
        with torch.inference_mode():
            table = module.materialize().float().cpu()
        with Stopwatch(ctx.device) as ev:
            scores = evaluate(table, dense_table)
        measurements["eval_time_s"] = ev.seconds
        main = float(scores[ctx.task.card.metric])
        dense_score = main if ctx.method.card.name == "dense" else dense_reference(ctx, model.get("revision"))
        retention = (main / dense_score) if dense_score else None
        dense_module = nn.Embedding.from_pretrained(dense_table, freeze=True)
        measurements["lookup"] = compare_lookup(module, dense_module, num_embeddings=v, device=ctx.device,
                                                iters=ctx.config.lookup_iters, seed=ctx.config.seed)
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
        measurements["memory"] = _memory(ctx, rss_before)
        return Record(status="failed", error=f"CUDA out of memory: {exc}".splitlines()[0], measurements=measurements, **base)
    measurements["memory"] = _memory(ctx, rss_before)
    return Record(status="ok", metrics=Metrics(main=main, scores=scores, dense_score=dense_score, retention=retention),
                  measurements=measurements, **base)


def _memory(ctx: Any, rss_before: int) -> dict[str, Any]:
    out: dict[str, Any] = {"peak_rss_bytes": peak_rss_bytes(), "rss_before_bytes": rss_before,
                           "fresh_process": bool(ctx.config.fresh_process)}
    gp = gpu_peak(ctx.device)
    if gp:
        out.update(gp)
    return out
