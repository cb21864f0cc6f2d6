"""Dense references are planned dependencies.

Every cell's retention is its score over the score of the **dense cell of the same comparison frame**
(same track, task, model, width, backbone and recipe; see :mod:`compbench.bench.cell.identity`): the
``dense`` method at ``1x`` with the cell's device, threads, seed(s) and settings. ``compbench run``
(:func:`ensure_reference`) and ``compbench sweep`` (which adds the reference cells to its plan and
runs them first) run that cell **before** the candidate and **in a fresh process of its own**, so
each record's peak memory is its own and ``fresh_process: true`` is true. The candidate's lifecycle
only reads the reference from the store (:func:`find_reference`); it never runs it.

A train cell whose seeds are a subset of a stored dense record's seeds (``--seeds 1`` next to a dense
``s0-1-2`` record) uses that record: the dense reference of a seed set is the dense run over at least
those seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from compbench.bench.cell.context import prepare
from compbench.bench.results.record import Record
from compbench.bench.results.record_store import ResultStore
from compbench.bench.tracks.train_settings import DEFAULT_D_MODEL
from compbench.config import RunConfig
from compbench.errors import CompbenchError, RecordError

#: tracks whose cells are compared with a dense reference
REFERENCE_TRACKS = ("posthoc", "words", "store", "train", "lm")


def reference_config(config: RunConfig, ctx: Any | None = None) -> RunConfig:
    """The dense reference cell of ``config`` (``ctx``, the candidate's CellContext, gives its width)."""
    ref = replace(config, method="dense", budget="1x", options={}, tune=False)
    if config.track == "train":
        width = ctx.identity.width if ctx is not None else None
        if width is None:
            width = prepare(config).identity.width
        extra = dict(config.extra or {})
        if width and width != DEFAULT_D_MODEL:
            extra["d_model"] = width
        else:
            extra.pop("d_model", None)
        ref = replace(ref, extra=extra)
    if config.track == "lm":  # same model and mode; a healed cell's reference is the plain dense model
        ref = replace(ref, extra={k: v for k, v in (config.extra or {}).items() if k in ("lm_mode", "max_windows")})
    return ref


def _current(rec: Record, ref_ctx: Any) -> bool:
    return (rec.status == "ok" and rec.metrics.main is not None and rec.task.version == ref_ctx.task.card.version
            and rec.method.version == ref_ctx.method.card.version)


def find_reference(store: ResultStore, ref_ctx: Any) -> Record | None:
    """The current dense record for the reference cell ``ref_ctx``: at its key, or (train) a dense record of
    the same frame and device whose seeds include all of the reference's seeds."""
    if store.exists(ref_ctx.key):
        try:
            rec = store.read(ref_ctx.key)
        except RecordError:
            rec = None
        if rec is not None and _current(rec, ref_ctx):
            return rec
    if ref_ctx.config.track != "train":
        return None
    want = set(ref_ctx.seeds)
    head, _, leaf = ref_ctx.key.rpartition("/")
    prefix = leaf.rsplit("-s", 1)[0] + "-s"
    folder = store.path_for(ref_ctx.key).parent
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob(prefix + "*.json")):
        key = f"{head}/{path.stem}"
        if key == ref_ctx.key:
            continue
        try:
            rec = store.read(key)
        except RecordError:
            continue
        held = set(rec.metrics.seeds or [rec.seed])
        if want <= held and _current(rec, ref_ctx) and rec.identity == ref_ctx.identity.to_dict():
            return rec
    return None


def ensure_reference(ctx: Any, *, imports: tuple[str, ...] = ()) -> Record | None:
    """Make sure the store holds the dense reference of the cell ``ctx``: read it, or run it now in a fresh
    process (``python -m compbench.bench.cell.worker``). Returns the reference record (None for ``dense`` itself,
    for tracks without references, or when the reference cell failed; the candidate then has no retention).
    """
    if ctx.method.card.name == "dense" or ctx.store is None or ctx.config.track not in REFERENCE_TRACKS:
        return None
    ref_cfg = reference_config(ctx.config, ctx)
    try:
        ref_ctx = prepare(ref_cfg, ctx.store, ctx.cache)
    except CompbenchError:
        return None
    found = find_reference(ctx.store, ref_ctx)
    if found is not None:
        return found
    progress = getattr(ctx, "progress", None)
    what = f"dense reference {ref_ctx.key} (first run only, own process)"
    if progress is not None:
        progress("start", what, 0.0)
    t0 = time.perf_counter()
    run_in_fresh_process(replace(ref_cfg, fresh_process=True), ctx.store, imports=imports)
    if progress is not None:
        progress("end", what, time.perf_counter() - t0)
    return find_reference(ctx.store, ref_ctx)


def run_in_fresh_process(config: RunConfig, store: ResultStore, *, imports: tuple[str, ...] = ()) -> int:
    """Run one cell in a new Python process (the sweep's worker) writing into ``store``; its exit code."""
    cmd = [sys.executable, "-m", "compbench.bench.cell.worker", "--results", str(store.root)]
    for spec in imports:
        cmd += ["--import", spec]
    cmd.append(json.dumps(config.to_dict()))
    return subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL).returncode


__all__ = ["REFERENCE_TRACKS", "ensure_reference", "find_reference", "reference_config", "run_in_fresh_process"]
