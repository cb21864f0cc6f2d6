"""Records -> a tidy pandas frame (one row per record) -> one row per cell, aggregated over seeds.

A *cell* is (track, task, task version, method + options, method version, budget, device label)
(the task is the key's task segment, see :func:`task_id`)
where the device label is ``<kind>-<threads>t`` (``cpu-1t``, ``cuda-8t``): throughput ratios
depend on the thread count, so cells with different thread counts are never mixed.

Aggregation over seeds (:func:`aggregate`):

- a record may already hold several seeds (the train track writes ``metrics.seeds`` and
  ``scores.main_std``); separate single-seed records of the same cell are combined with it.
  Groups are combined exactly (pooled mean and sample standard deviation, ``ddof=1``), and a
  record whose seeds all lie inside another record's larger seed set is not counted twice;
- the cell is ``ok`` when at least one of its records is ``ok``; ``n`` counts the ok seeds and
  ``n_bad`` the records that were not ok;
- otherwise the cell takes the most telling status of its records
  (``over_budget`` > ``failed`` > ``skipped``) and the error of its lowest seed;
- an ``ok`` record whose stored bytes exceed its allowed bytes is treated as ``over_budget``:
  the harness's byte count is the authority, whatever a track runner wrote.

Everything is computed in a fixed order (rows sorted by record key, :func:`math.fsum`), so the
same records always give the same numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from compbench.bench.cell.identity import CellIdentity, options_suffix
from compbench.bench.results.record import Record

#: Columns of :func:`to_frame`, in order.
RECORD_COLUMNS = (
    "key", "track", "task", "task_name", "task_version", "metric", "higher_is_better", "dataset",
    "method", "method_version", "family", "options", "variant", "label", "config",
    "budget", "reference_bytes", "allowed_bytes", "budget_ratio", "stored_bytes", "achieved_ratio",
    "device", "device_kind", "device_name", "threads", "seed", "seeds", "n", "status", "error",
    "main", "main_std", "retention", "dense_score", "throughput_ratio", "tokens_per_s",
    "peak_rss_bytes", "gpu_peak_allocated_bytes", "git_sha", "git_dirty", "created_at", "compbench_version",
    "identity", "system", "params_total", "params_embedding", "eval_samples_per_s", "concurrent_cells",
    "ci_low", "ci_high", "retention_low", "retention_high", "has_items",
)

#: the initialisation of a track's dense reference; a cell with another init, or with its own head, is a *system*
REFERENCE_INIT = {"train": "random"}

#: Columns that identify a cell (everything but the seed).
CELL_COLUMNS = ("track", "task", "task_version", "variant", "method_version", "budget", "device", "identity")

#: Status precedence for a cell without any ok record (most telling first).
STATUS_ORDER = ("over_budget", "timeout", "failed", "skipped")


def device_label(kind: str, threads: int) -> str:
    """``cpu-1t``: the device part of a cell key without the seed."""
    return f"{kind}-{threads}t"


def options_text(options: dict[str, Any]) -> str:
    """``k=v, k2=v2`` (sorted keys; values as compact JSON unless they are plain strings)."""
    parts = []
    for k in sorted(options):
        v = options[k]
        parts.append(f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}")
    return ", ".join(parts)


def method_label(name: str, options: dict[str, Any]) -> str:
    """Display name of a method variant: ``svd`` or ``svd (rank=16)``."""
    return f"{name} ({options_text(options)})" if options else name


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(x: Any) -> int | None:
    f = _num(x)
    return None if f is None else int(f)


def task_id(r: Record) -> str:
    """The task segment of the record key: the task name plus any settings tag a track adds
    (``trec+bag+d64+steps20`` for a non-default train recipe), so differently configured runs of one task
    get their own page instead of being mixed; the plain task name when the key has another shape."""
    parts = r.key.split("/")
    if len(parts) >= 5 and parts[0] == r.track and parts[1].startswith(r.task.name):
        return parts[1]
    return r.task.name


def _section(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def record_row(r: Record) -> dict[str, Any]:
    """One record as a flat dict with the :data:`RECORD_COLUMNS`."""
    b, m, meas, pv = r.budget, r.metrics, r.measurements or {}, r.provenance or {}
    lookup, memory = _section(meas, "lookup"), _section(meas, "memory")
    cand = _section(lookup, "candidate")
    seeds = tuple(int(s) for s in m.seeds) if m.seeds else None
    stored = b.stored_bytes
    achieved = b.achieved_ratio
    ident = r.identity or {}
    system = bool(ident) and (ident.get("head", "shared") != "shared"
                              or ident.get("init") != REFERENCE_INIT.get(r.track, ident.get("init")))
    eval_tp = _section(meas, "eval_throughput")
    conc = meas.get("concurrent_cells")
    if achieved is None and stored:
        achieved = b.reference_bytes / stored
    return {
        "key": r.key,
        "track": r.track,
        "task": task_id(r),
        "task_name": r.task.name,
        "task_version": r.task.version,
        "metric": r.task.metric,
        "higher_is_better": r.task.higher_is_better,
        "dataset": r.task.dataset,
        "method": r.method.name,
        "method_version": r.method.version,
        "family": r.method.family,
        "options": json.dumps(r.method.options, sort_keys=True, default=str),
        "variant": r.method.name + options_suffix(r.method.options) + ("+tuned" if r.method.tuned else ""),
        "label": method_label(r.method.name, r.method.options) + (" (tuned)" if r.method.tuned else ""),
        "config": options_text(r.method.config),
        "budget": b.spec,
        "reference_bytes": b.reference_bytes,
        "allowed_bytes": b.allowed_bytes,
        "budget_ratio": b.reference_bytes / b.allowed_bytes if b.allowed_bytes else math.inf,
        "stored_bytes": stored,
        "achieved_ratio": _num(achieved),
        "device": device_label(r.device.kind, r.device.threads),
        "device_kind": r.device.kind,
        "device_name": r.device.name,
        "threads": r.device.threads,
        "seed": r.seed,
        "seeds": seeds,
        "n": len(seeds) if seeds else 1,
        "status": r.status,
        "error": r.error,
        "main": _num(m.main),
        "main_std": _num(m.scores.get("main_std")),
        "retention": _num(m.retention),
        "dense_score": _num(m.dense_score),
        "throughput_ratio": _num(lookup.get("ratio")),
        "tokens_per_s": _num(cand.get("median")),
        "peak_rss_bytes": _int(memory.get("peak_rss_bytes")),
        "gpu_peak_allocated_bytes": _int(memory.get("peak_allocated_bytes")),
        "git_sha": pv.get("git_sha") if isinstance(pv.get("git_sha"), str) else None,
        "git_dirty": bool(pv.get("git_dirty")),
        "created_at": str(pv.get("created_at") or ""),
        "compbench_version": str(pv.get("compbench_version") or ""),
        "identity": identity_text(ident),
        "system": system,
        "params_total": _int(r.params.total),
        "params_embedding": _int(r.params.embedding),
        "eval_samples_per_s": _num(eval_tp.get("mean")),
        "concurrent_cells": _int(conc),
        "ci_low": _num((m.interval or {}).get("low")),
        "ci_high": _num((m.interval or {}).get("high")),
        "retention_low": _num((m.retention_interval or {}).get("low")),
        "retention_high": _num((m.retention_interval or {}).get("high")),
        "has_items": isinstance(meas.get("items"), dict),
    }


def identity_text(ident: dict[str, Any]) -> str:
    """One line naming a record's identity (``""`` when it has none)."""
    if not ident:
        return ""

    try:
        return CellIdentity.from_dict(ident).describe()
    except TypeError:  # pragma: no cover - a hand-edited identity
        return json.dumps(ident, sort_keys=True)


def to_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Tidy frame: one row per record (columns :data:`RECORD_COLUMNS`), sorted by record key.

    Values stay Python objects (``dtype=object``): ints stay ints and a missing value is None, so
    byte counts never turn into floats on the way to the renderers.
    """
    rows = sorted((record_row(r) for r in records), key=lambda row: (row["key"], row["seed"], row["created_at"]))
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS), dtype=object)


def combine_seed_groups(groups: list[tuple[int, float, float | None]]) -> tuple[float, float | None, int]:
    """Combine ``(n, mean, std)`` groups into one ``(mean, std, n)`` (exact pooled formulas, ``ddof=1``).

    A group with ``n > 1`` and an unknown std contributes its mean only to the mean; the pooled std
    is then unknown (None). The std of a single value is None.
    """
    n = sum(g[0] for g in groups)
    mean = math.fsum(g[0] * g[1] for g in groups) / n
    if n < 2 or any(g[0] > 1 and g[2] is None for g in groups):
        return mean, None, n
    ss = math.fsum((g[0] - 1) * (g[2] or 0.0) ** 2 + g[0] * (g[1] - mean) ** 2 for g in groups)
    return mean, math.sqrt(max(ss, 0.0) / (n - 1)), n


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return math.fsum(vals) / len(vals) if vals else None


def _max(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return max(vals) if vals else None


def _aggregate_cell(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: (r["seed"], r["key"], r["created_at"]))
    first = rows[0]
    out = {c: first[c] for c in ("track", "task", "task_name", "task_version", "metric", "higher_is_better",
                                 "dataset", "method", "method_version", "family", "options", "variant", "label",
                                 "budget", "reference_bytes", "allowed_bytes", "budget_ratio", "device",
                                 "device_kind", "device_name", "threads", "identity", "system")}
    for r in rows:  # an ok record over its allowed bytes is over budget (the byte count is the authority)
        if r["status"] == "ok" and r["stored_bytes"] is not None and r["stored_bytes"] > r["allowed_bytes"]:
            r["status"] = "over_budget"
            r["error"] = r["error"] or f"stored {r['stored_bytes']:,} B > allowed {r['allowed_bytes']:,} B"
    ok = [r for r in rows if r["status"] == "ok" and r["main"] is not None]
    # a record whose seeds all lie inside another record's larger seed set is not counted twice (a
    # single-seed train record carries ``seeds=[s]`` too, so compare the sets, not their presence)
    sets = [frozenset(r["seeds"] or (r["seed"],)) for r in ok]
    ok = [r for r, mine in zip(ok, sets) if not any(mine < other for other in sets)]
    bad = [r for r in rows if not (r["status"] == "ok" and r["main"] is not None)]
    mean: float | None
    std: float | None
    retention: float | None
    dense: float | None
    if ok:
        mean, std, n = combine_seed_groups([(r["n"], r["main"], r["main_std"]) for r in ok])
        seeds = sorted({s for r in ok for s in (r["seeds"] or (r["seed"],))})
        status, error = "ok", None
        if bad:
            error = "; ".join(f"seed {r['seed']}: {r['status']}" + (f" ({r['error']})" if r["error"] else "")
                              for r in bad)
        rets = [r["retention"] for r in ok]
        retention = (math.fsum(r["n"] * r["retention"] for r in ok) / n) if all(x is not None for x in rets) else None
        dense = _mean([r["dense_score"] for r in ok])
    else:
        mean = std = retention = dense = None
        n, seeds = 0, []
        status = next(s for s in (*STATUS_ORDER, "ok") if any(r["status"] == s for r in rows))
        if status == "ok":  # ok records without a score
            status = "failed"
        error = next((r["error"] for r in rows if r["status"] == status and r["error"]), None)
        if error is None and not any(r["status"] == status for r in rows):
            error = "record has status ok but no main score"
    stored = _max([r["stored_bytes"] for r in rows])
    src = ok or rows
    shas = sorted({(r["created_at"], r["git_sha"]) for r in rows if r["git_sha"]})
    out.update({
        "status": status,
        "error": error,
        "main": mean,
        "main_std": std,
        "n": n,
        "n_bad": len(bad),
        "seeds": tuple(seeds),
        "retention": retention,
        "dense_score": dense,
        "stored_bytes": stored,
        "achieved_ratio": (first["reference_bytes"] / stored) if stored else None,
        "in_budget": stored is not None and stored <= first["allowed_bytes"],
        "throughput_ratio": _mean([r["throughput_ratio"] for r in src]),
        "tokens_per_s": _mean([r["tokens_per_s"] for r in src]),
        "peak_rss_bytes": _max([r["peak_rss_bytes"] for r in rows]),
        "gpu_peak_allocated_bytes": _max([r["gpu_peak_allocated_bytes"] for r in rows]),
        "config": next((r["config"] for r in src if r["config"]), ""),
        "git_shas": tuple(shas),
        "git_dirty": any(r["git_dirty"] for r in rows),
        "records": len(rows),
        "keys": tuple(r["key"] for r in rows),
        "params_total": _max([r["params_total"] for r in src]),
        "params_embedding": _max([r["params_embedding"] for r in src]),
        "eval_samples_per_s": _mean([r["eval_samples_per_s"] for r in src]),
        "concurrent_cells": _max([r["concurrent_cells"] for r in rows]),
        # the interval of a cell held by one record is that record's; pooled records get theirs at report time
        # from their per-item outcomes (compbench.leaderboard.ranking), else none
        "ci_low": ok[0]["ci_low"] if len(ok) == 1 else None,
        "ci_high": ok[0]["ci_high"] if len(ok) == 1 else None,
        "retention_low": ok[0]["retention_low"] if len(ok) == 1 else None,
        "retention_high": ok[0]["retention_high"] if len(ok) == 1 else None,
        "ok_keys": tuple(r["key"] for r in sorted(ok, key=lambda r: (min(r["seeds"] or (r["seed"],)), r["key"]))),
    })
    return out


#: Columns of :func:`aggregate`, in order.
CELL_FRAME_COLUMNS = (
    "track", "task", "task_name", "task_version", "metric", "higher_is_better", "dataset", "method",
    "method_version", "family", "options", "variant", "label", "config", "budget", "reference_bytes", "allowed_bytes",
    "budget_ratio", "device", "device_kind", "device_name", "threads", "status", "error", "main", "main_std",
    "n", "n_bad", "seeds", "retention", "dense_score", "stored_bytes", "achieved_ratio", "in_budget",
    "throughput_ratio", "tokens_per_s", "peak_rss_bytes", "gpu_peak_allocated_bytes", "git_shas",
    "git_dirty", "records", "keys", "identity", "system", "params_total", "params_embedding", "eval_samples_per_s",
    "concurrent_cells", "ci_low", "ci_high", "retention_low", "retention_high", "ok_keys",
)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (:data:`CELL_COLUMNS`): mean/std/n of the main score over seeds, and the rest.

    Sorted by track, task, device, budget ratio, variant, versions.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in frame.to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        groups.setdefault(tuple(row[c] for c in CELL_COLUMNS), []).append(row)
    cells = [_aggregate_cell(rows) for _, rows in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    cells.sort(key=lambda c: (c["track"], c["task"], c["device"], c["budget_ratio"], c["allowed_bytes"],
                              c["budget"], c["variant"], c["task_version"], c["method_version"]))
    return pd.DataFrame(cells, columns=list(CELL_FRAME_COLUMNS), dtype=object)


def current_versions(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split cells into (current, stale): per (track, task, device) only the newest task version counts,
    and within it only the newest version of each method variant."""
    if cells.empty:
        return cells, cells
    newest_task = cells.groupby(["track", "task", "device"])["task_version"].transform("max")
    keep = cells["task_version"] == newest_task
    newest_method = cells[keep].groupby(["track", "task", "device", "variant"])["method_version"].transform("max")
    keep_m = pd.Series(False, index=cells.index)
    keep_m[keep] = cells.loc[keep, "method_version"] == newest_method
    return cells[keep_m].reset_index(drop=True), cells[~keep_m].reset_index(drop=True)
