"""The ``scale`` track's report: how fit time and peak memory grow with the table, per method.

For each method (at one budget) and each table shape it ran on, the record gives the fit time (seconds, the
lifecycle's ``fit`` phase), the fit phase's peak memory (RSS delta over the phase start), the stored bytes and
the fidelity (mean row cosine of the sampled rows). The growth law is a least-squares line through
``log(cost)`` against ``log(V d)`` over a method's ``ok`` cells (at least 3 shapes, else no exponent): the
slope is the exponent (1.0 = linear in the table's size). Cells that timed out, failed or could not meet the
budget are listed with their status, so "the largest table handled" is read from the records, not assumed.

Outputs (``compbench scale`` / :func:`write_scale_report`): ``scale.md`` (tables), ``scale-fit-time.png`` and
``scale-peak-memory.png`` (log-log, one line per method, the exponent in the legend), ``scale.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compbench.bench.results.record import Record
from compbench.errors import CompbenchError
from compbench.tasks import get_task


def scale_rows(records: Sequence[Record], budget: str | None = None) -> list[dict[str, Any]]:
    """One row per scale record (optionally one budget): shape, status and costs."""
    rows = []
    for r in records:
        if r.track != "scale" or (budget is not None and r.budget.spec != budget):
            continue
        shape = (r.model or {}).get("shape") or _task_shape(r.task.name)
        phases = (r.measurements.get("memory") or {}).get("phases") or {}
        fit = phases.get("fit") or {}
        rows.append({
            "method": r.method.name, "task": r.task.name, "budget": r.budget.spec, "status": r.status,
            "rows": shape[0], "dim": shape[1],
            "size": (shape[0] * shape[1]) if shape[0] and shape[1] else None,
            "fit_s": r.measurements.get("fit_time_s") if r.status == "ok" else None,
            "fit_peak_bytes": fit.get("peak_rss_delta_bytes") if r.status == "ok" else None,
            "stored_bytes": r.budget.stored_bytes, "ratio": r.budget.achieved_ratio,
            "cosine": r.metrics.main, "error": r.error, "threads": r.device.threads,
            "cells_at_once": r.measurements.get("concurrent_cells"), "fit_load": fit.get("load_avg_1m"),
            "limit_s": (r.measurements.get("timeout") or {}).get("max_fit_seconds"),
        })
    return sorted(rows, key=lambda x: (x["method"], x["size"] or 0))


def _task_shape(name: str) -> list[int | None]:
    """The shape a scale task declares (for records that never loaded their table: skipped, timed out)."""
    try:
        return [int(x) for x in get_task("scale", name).shape]  # type: ignore[attr-defined]
    except (CompbenchError, AttributeError):
        return [None, None]


def exponent(points: Sequence[tuple[float, float]]) -> float | None:
    """Slope of ``log y`` against ``log x`` (least squares; None with fewer than 3 usable points)."""
    pts = [(x, y) for x, y in points if x and y and x > 0 and y > 0]
    if len(pts) < 3 or len({x for x, _ in pts}) < 3:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method: fit-time and peak-memory exponents, the largest table it handled, and what did not finish."""
    out = []
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r["status"] == "ok"]
        largest = max(ok, key=lambda r: r["size"] or 0, default=None)
        out.append({
            "method": method,
            "time_exponent": exponent([(r["size"], r["fit_s"]) for r in ok]),
            "memory_exponent": exponent([(r["size"], r["fit_peak_bytes"]) for r in ok]),
            "largest": None if largest is None else f"{largest['task']} ({largest['rows']:,} x {largest['dim']})",
            "largest_fit_s": None if largest is None else largest["fit_s"],
            "not_ok": [f"{r['task']}: {_status(r)}" for r in mine if r["status"] != "ok"],
        })
    return out


def _status(row: dict[str, Any]) -> str:
    """``timeout (900 s)`` for a timed-out cell (the limit it ran under), else the bare status."""
    limit = row.get("limit_s")
    return f"timeout ({limit:g} s)" if row["status"] == "timeout" and limit is not None else str(row["status"])


def _plot(rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], key: str, exp_key: str,
          ylabel: str, scale: float = 1.0) -> bytes | None:
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from compbench.leaderboard.plots import RC, png_bytes  # heavy: matplotlib

    methods = [s["method"] for s in summary]
    if not any(r[key] for r in rows):
        return None
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(7.5, 4.8), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for s in summary:
            pts = sorted((r["size"], r[key] * scale) for r in rows if r["method"] == s["method"] and r[key])
            if not pts:
                continue
            e = s[exp_key]
            label = f"{s['method']} (exponent {e:.2f})" if e is not None else f"{s['method']} (n={len(pts)})"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-") if v >= 1e4
                              else f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):  # mathtext is off (RC): plain tick labels, no $10^{k}$ strings
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("table size V x d (values)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncol=2 if len(methods) > 6 else 1)
        fig.tight_layout()
        return png_bytes(fig)


def _fmt(x: Any, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _shared(cells: Any) -> str:
    return "—" if cells is None else ("yes" if int(cells) > 1 else "no")


def render_markdown(rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], budget: str | None) -> str:
    """The report page."""
    lines = ["# Cost curves: fit time and peak memory against table size", "",
             f"Budget {budget or 'all'}; each cell in its own process, CPU threads as recorded. Exponent = slope of "
             "log(cost) against log(V·d) over the method's ok cells (≥3 shapes). Peak memory = the fit phase's "
             "RSS delta over its start. Generated by `compbench scale` from the `scale` records.", "",
             "| method | fit-time exponent | peak-memory exponent | largest table handled | its fit (s) | not ok |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['method']} | {_fmt(s['time_exponent'], '.2f')} | {_fmt(s['memory_exponent'], '.2f')} | "
                     f"{s['largest'] or '—'} | {_fmt(s['largest_fit_s'], '.1f')} | {'; '.join(s['not_ok']) or '—'} |")
    lines += ["", "![fit time](scale-fit-time.png)", "", "![peak memory](scale-peak-memory.png)", "",
              "Shared = the cell ran while other cells did (`concurrent_cells` > 1, declared by the executor or by "
              "`COMPBENCH_CONCURRENT_CELLS`): its fit time is not a quiet one. Load = the machine's 1-minute load "
              "average when the fit ended (measured; about 1 for a 1-thread cell alone, — in records older than "
              "this field).", "",
              "| method | table | V | d | status | fit (s) | fit peak Δ (MiB) | stored (MiB) | ratio | row cosine "
              "| shared | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mib = None if r["fit_peak_bytes"] is None else r["fit_peak_bytes"] / 2**20
        st = None if r["stored_bytes"] is None else r["stored_bytes"] / 2**20
        lines.append(f"| {r['method']} | {r['task']} | {_fmt(r['rows'], ',')} | {_fmt(r['dim'], 'd')} | {_status(r)} | "
                     f"{_fmt(r['fit_s'], '.1f')} | {_fmt(mib, '.0f')} | {_fmt(st, '.1f')} | "
                     f"{_fmt(r['ratio'], '.1f')} | {_fmt(r['cosine'], '.4f')} | "
                     f"{_shared(r.get('cells_at_once'))} | {_fmt(r.get('fit_load'), '.1f')} |")
    return "\n".join(lines) + "\n"


def write_scale_report(records: Sequence[Record], out: Path | str, budget: str | None = "40x") -> dict[str, Any]:
    """Write ``scale.md``, the two plots and ``scale.json`` into ``out``; return the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = scale_rows(records, budget)
    summary = summarize(rows)
    (out / "scale.md").write_text(render_markdown(rows, summary, budget), encoding="utf8")
    (out / "scale.json").write_text(json.dumps({"budget": budget, "summary": summary, "cells": rows}, indent=1,
                                               sort_keys=True), encoding="utf8")
    for name, key, exp_key, label, factor in (("scale-fit-time.png", "fit_s", "time_exponent", "fit time (s)", 1.0),
                                              ("scale-peak-memory.png", "fit_peak_bytes", "memory_exponent",
                                               "fit peak memory, RSS delta (MiB)", 1 / 2**20)):
        png = _plot(rows, summary, key, exp_key, label, factor)
        if png is not None:
            (out / name).write_bytes(png)
    return {"rows": len(rows), "summary": summary}


__all__ = ["exponent", "render_markdown", "scale_rows", "summarize", "write_scale_report"]
