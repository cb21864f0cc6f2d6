"""The posthoc track runner: compress the encoder's token table, evaluate, measure.

For speed, quality is evaluated with the *materialised* compressed table plugged
into the encoder (identical outputs, one fast gather); lookup throughput is
measured on the compressed module itself against the dense table in the same run.
Retention = score / dense score on the same task (the dense reference cell is read
from the store, or run and stored first when missing).
"""

from __future__ import annotations

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
from compbench.errors import CompbenchError, RecordError


def get_encoder(ctx: Any) -> Any:
    """The sentence encoder for this cell (cached in ``ctx.cache`` across cells of one process)."""
    from compbench.models.encoder import SentenceEncoder

    key = f"encoder:{ctx.config.model}:{ctx.device}"
    if key not in ctx.cache:
        ctx.cache[key] = SentenceEncoder(ctx.config.model, device=str(ctx.device))
    return ctx.cache[key]


def dense_reference_score(ctx: Any, encoder: Any) -> float | None:
    """Main score of the dense table on this task: from the store when present and current, else run it."""
    from compbench.bench.runner import prepare, run_cell

    if ctx.method.card.name == "dense":
        return None
    dense_cfg = replace(ctx.config, method="dense", budget="1x", options={})
    dctx = prepare(dense_cfg, ctx.store, ctx.cache)
    if ctx.store is not None and ctx.store.exists(dctx.key):
        try:
            rec = ctx.store.read(dctx.key)
            if (rec.status == "ok" and rec.task.version == ctx.task.card.version and rec.metrics.main is not None
                    and (rec.model or {}).get("revision") == encoder.info.revision):
                return rec.metrics.main
        except RecordError:
            pass  # malformed: recompute and overwrite
    rec = run_cell(dense_cfg, ctx.store, write=ctx.store is not None, cache=ctx.cache)
    return rec.metrics.main


def run_posthoc(ctx: Any) -> Record:
    """Run one posthoc cell (see module docstring)."""
    from compbench.bench.runner import data_sha256
    from compbench.tasks.posthoc import PosthocContext

    rss_before = current_rss_bytes()
    encoder = get_encoder(ctx)
    dense_table = encoder.token_table
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
    backbone = encoder.info.total_params - v * d
    params = Params(total=backbone + pc.total, trainable=pc.trainable, embedding=pc.total, backbone=backbone)
    measurements: dict[str, Any] = {"fit_time_s": fit.seconds}

    base = dict(key=ctx.key, track=ctx.config.track, seed=ctx.config.seed, method=ctx.method_info(config),
                task=ctx.task_info(shas), budget=budget, device=ctx.device_info(), params=params,
                model=encoder.info.to_dict(), provenance=provenance)

    if budget.stored_bytes > budget.allowed_bytes:
        measurements["memory"] = _memory(ctx, rss_before)
        return Record(status="over_budget", error=(f"stored {budget.stored_bytes:,} B > allowed {budget.allowed_bytes:,} B"),
                      measurements=measurements, **base)
    try:
        with torch.inference_mode():
            table = module.materialize().float().to(ctx.device)
        with Stopwatch(ctx.device) as ev:
            scores = ctx.task.evaluate(PosthocContext(encoder, table, dense_table.to(ctx.device),
                                                      seed=ctx.config.seed, batch_size=ctx.config.batch_size))
        measurements["eval_time_s"] = ev.seconds
        main = float(scores[ctx.task.card.metric])
        dense_score = main if ctx.method.card.name == "dense" else dense_reference_score(ctx, encoder)
        retention = (main / dense_score) if dense_score else None
        dense_module = nn.Embedding.from_pretrained(dense_table, freeze=True)
        measurements["lookup"] = compare_lookup(module, dense_module, num_embeddings=v, device=ctx.device,
                                                iters=ctx.config.lookup_iters, seed=ctx.config.seed)
    except CompbenchError:
        raise
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
        measurements["memory"] = _memory(ctx, rss_before)
        return Record(status="failed", error=f"CUDA out of memory: {exc}".splitlines()[0], measurements=measurements, **base)
    measurements["memory"] = _memory(ctx, rss_before)
    return Record(status="ok", metrics=Metrics(main=main, scores=scores, dense_score=dense_score, retention=retention),
                  measurements=measurements, **base)


def _memory(ctx: Any, rss_before: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_bytes": rss_before,
        "fresh_process": bool(ctx.config.fresh_process),
    }
    gp = gpu_peak(ctx.device)
    if gp:
        out.update(gp)
    return out
