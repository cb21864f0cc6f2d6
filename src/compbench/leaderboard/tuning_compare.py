"""What tuning bought: each method's untuned default next to its tuned variant, and the rankings before and after.

For every task and budget where at least one method has a tuned record (``method.tuned``; issue 20: options
chosen on a validation split, then scored on test once), the page lists each method's default score and its
tuned score, each with its 95% bootstrap interval, its achieved ratio and its rank, and the options tuning
chose. Two rankings are compared:

- **before**: every method at its untuned default (what the board showed before tuning existed);
- **after**: every method at its best-known configuration: the tuned variant where one exists, else the
  default (a method with no tuning space, such as ``rq``, keeps its default; this is what "every baseline at
  its best" ranks).

A rank change between methods whose intervals overlap is not a finding: ``~`` marks a method whose interval
overlaps a neighbour's in that ranking. Kendall's tau-b (``scipy.stats.kendalltau``) says how far the two
orders agree. Cells are grouped by track, task, encoder (``identity.model``) and budget, so only comparable
cells share a table. Written by ``compbench report`` as ``tuning.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from compbench.bench.results.record import Record
from compbench.leaderboard.model_compare import _overlap, _ratio  # the same interval and budget rules

Group = tuple[str, str, str, str]  # (track, task, model, budget)


def _is_tuned(r: Record) -> bool:
    return bool(getattr(r.method, "tuned", False)) or "tuning" in (r.measurements or {})


def _score(r: Record) -> dict[str, Any]:
    iv = r.metrics.interval or {}
    tuning = (r.measurements or {}).get("tuning") or {}
    return {"score": float(r.metrics.main or 0.0), "low": iv.get("low"), "high": iv.get("high"),
            "ratio": r.budget.achieved_ratio, "chosen": tuning.get("chosen_options"),
            "candidates": len(tuning.get("candidates") or []), "tied": False}


def tuning_rows(records: Sequence[Record]) -> dict[Group, list[dict[str, Any]]]:
    """``{(track, task, model, budget): rows}``: one row per method with a default and/or a tuned ``ok`` record,
    for the groups where some method has a tuned record; each row carries ``before`` and ``after`` ranks."""
    cells: dict[Group, dict[str, dict[str, Any]]] = {}
    hib: dict[Group, bool] = {}
    for r in records:
        if r.track not in ("posthoc", "words") or r.status != "ok" or r.metrics.main is None:
            continue
        if r.method.name == "dense" or r.method.options:
            continue
        ident = r.identity or {}
        g = (r.track, r.task.name, str(ident.get("model") or (r.model or {}).get("name") or ""), r.budget.spec)
        hib[g] = r.task.higher_is_better
        slot = cells.setdefault(g, {}).setdefault(r.method.name, {"method": r.method.name})
        slot["tuned" if _is_tuned(r) else "default"] = _score(r)
    out: dict[Group, list[dict[str, Any]]] = {}
    for g, by_method in cells.items():
        rows = list(by_method.values())
        if not any("tuned" in row for row in rows):
            continue
        for row in rows:
            row["best"] = row.get("tuned") or row["default"]
        _rank(rows, "default", hib[g], "before")
        _rank(rows, "best", hib[g], "after")
        out[g] = rows
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], _ratio(kv[0][3]))))


def _rank(rows: list[dict[str, Any]], side: str, higher_is_better: bool, label: str) -> None:
    present = [r for r in rows if side in r]
    ordered = sorted(present, key=lambda r: (-r[side]["score"] if higher_is_better else r[side]["score"],
                                             r["method"]))
    for i, r in enumerate(ordered, 1):
        r[f"{label}_rank"] = i
        r[f"{label}_tied"] = False
    for a, b in zip(ordered, ordered[1:], strict=False):
        if _overlap(a[side], b[side]):
            a[f"{label}_tied"] = b[f"{label}_tied"] = True


def agreement(rows: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Kendall's tau-b between the before and after rankings of the methods present in both."""
    both = [r for r in rows if "before_rank" in r and "after_rank" in r]
    if len(both) < 3:
        return None, None
    from scipy.stats import kendalltau

    res = kendalltau([r["before_rank"] for r in both], [r["after_rank"] for r in both])
    return float(res.statistic), float(res.pvalue)


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "—"
    iv = f" [{s['low']:.3f}, {s['high']:.3f}]" if s["low"] is not None and s["high"] is not None else ""
    ratio = f" ({s['ratio']:.1f}x)" if s.get("ratio") else ""
    return f"{s['score']:.4f}{iv}{ratio}"


def _rank_text(r: dict[str, Any], label: str) -> str:
    if f"{label}_rank" not in r:
        return "—"
    return f"#{r[f'{label}_rank']}{'~' if r[f'{label}_tied'] else ''}"


def has_tuning_space(method: str) -> bool:
    """Whether the registered method declares a tuning space (False for unknown names)."""
    from compbench.methods import get_method  # heavy: torch

    try:
        m = get_method(method)
    except Exception:  # noqa: BLE001 - a record of a method no longer registered
        return False
    return m.has_tuning_space()  # the Method contract: tuning_space overridden


def _chosen(s: dict[str, Any] | None, method: str) -> str:
    if s is None:
        return "tuned cell not run yet (default kept)" if has_tuning_space(method) else "no tuning space (default)"
    opts = s.get("chosen") or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) or "the default"
    return f"{text} (of {s['candidates']})" if s.get("candidates") else text


def render_markdown(groups: dict[Group, list[dict[str, Any]]]) -> str:
    """The ``tuning.md`` page."""
    lines = ["# What tuning bought", "",
             "Each table is one task, encoder and budget. *default* is the method's untuned configuration; *tuned* "
             "chose its options on the task's validation split (STS-B validation; the validation half of each word "
             "set), never on test, then scored test once. Scores carry their 95% bootstrap interval and achieved "
             "ratio. *before* ranks every method at its default; *after* ranks every method at its best-known "
             "configuration (tuned where a tuned record exists, else the default). `~`: the interval overlaps a "
             "neighbour's in that ranking, so a swap there is not a finding. Generated by `compbench report` "
             "(leaderboard/tuning_compare.py).", ""]
    if not groups:
        lines.append("No tuned records yet.")
    for (track, task, model, budget), rows in groups.items():
        tau, p = agreement(rows)
        n_tuned = sum("tuned" in r for r in rows)
        agree = f"; Kendall tau-b before/after {tau:.2f} (p = {p:.3f})" if tau is not None else ""
        lines += [f"## {track}/{task} ({model}) at {budget}: {n_tuned} of {len(rows)} methods tuned{agree}", "",
                  "| method | default | before | tuned | delta | after | change | tuning chose |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r.get("after_rank", 10**6), r["method"])):
            d, t = r.get("default"), r.get("tuned")
            delta = f"{t['score'] - d['score']:+.4f}" if d and t else "—"
            moved = "—"
            if "before_rank" in r and "after_rank" in r:
                change = r["before_rank"] - r["after_rank"]
                moved = "=" if change == 0 else (f"up {change}" if change > 0 else f"down {-change}")
            lines.append(f"| {r['method']} | {_cell(d)} | {_rank_text(r, 'before')} | {_cell(t)} | {delta} "
                         f"| {_rank_text(r, 'after')} | {moved} | {_chosen(t, r['method'])} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["agreement", "has_tuning_space", "render_markdown", "tuning_rows"]
