"""The lm track's verdicts in a language model's own terms, and whether the STS-B proxy predicts them.

``compbench report`` writes ``lm/summary.md`` from the lm records:

1. **Per model and mode** (``input``: only the input table compressed; ``tied``: one table for input and head;
   healed cells in their own tables), one row per method and budget: perplexity with its 95% interval (exp of the
   NLL interval over the windows), the perplexity ratio to dense, the mean KL divergence to the dense model's
   next-token distribution, top-1 agreement with it, the achieved ratio against fp32 and against the table as
   shipped (Q8_0). Rows are ordered by budget, then by perplexity (best first).
2. **LM ranking vs STS-B ranking**, per mode and budget: the methods with an ``ok`` record on both the lm track
   (SmolLM2, unhealed) and posthoc STS-B (all-MiniLM-L6-v2, untuned default variants) at the same budget spec,
   each ranked by its own metric (NLL: lower is better; Spearman: higher is better); Kendall's tau-b between
   the two rankings (``scipy.stats.kendalltau``) and the pairs of methods the two rankings order differently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from compbench.bench.results.record import Record

PROXY_MODEL = "all-MiniLM-L6-v2"
PROXY_TASK = "stsb"


def _budget_value(spec: str) -> float:
    try:
        return float(spec.rstrip("x"))
    except ValueError:
        return 0.0


def _lm_rows(records: Sequence[Record]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """``{(model, mode, recipe): rows}`` of ok lm records (the newest per key)."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.track != "lm" or r.status != "ok" or r.metrics.main is None:
            continue
        ident = r.identity or {}
        mode = str(ident.get("backbone", "causal-lm(input)")).removeprefix("causal-lm(").rstrip(")")
        recipe = str(ident.get("recipe") or "-")
        if "windows=" in recipe:  # smoke runs on a few windows are not leaderboard cells
            continue
        sc = r.metrics.scores
        iv = r.metrics.interval or {}
        shipped = (r.measurements or {}).get("shipped") or {}
        out.setdefault((str(ident.get("model")), mode, recipe), []).append({
            "method": r.method.name + ("+tuned" if r.method.tuned else ""), "budget": r.budget.spec,
            "nll": float(r.metrics.main), "ppl": math.exp(float(r.metrics.main)),
            "ppl_low": math.exp(iv["low"]) if iv.get("low") is not None else None,
            "ppl_high": math.exp(iv["high"]) if iv.get("high") is not None else None,
            "ppl_ratio": sc.get("ppl_ratio"), "kl": sc.get("kl"), "top1": sc.get("top1"),
            "ratio": r.budget.achieved_ratio, "shipped_ratio": shipped.get("ratio_vs_shipped"),
            "heal": (r.measurements or {}).get("heal"), "key": r.key})
    for rows in out.values():
        rows.sort(key=lambda x: (_budget_value(x["budget"]), x["nll"], x["method"]))
    return out


def _proxy_scores(records: Sequence[Record]) -> dict[tuple[str, str], float]:
    """``{(budget, method): STS-B Spearman}`` of the untuned MiniLM posthoc records."""
    out: dict[tuple[str, str], float] = {}
    for r in records:
        ident = r.identity or {}
        if (r.track != "posthoc" or r.task.name != PROXY_TASK or r.status != "ok" or r.metrics.main is None
                or r.method.tuned or r.method.options or ident.get("model") != PROXY_MODEL):
            continue
        out[(r.budget.spec, r.method.name)] = float(r.metrics.main)
    return out


def proxy_comparison(records: Sequence[Record], model: str = "smollm2-135m") -> dict[tuple[str, str], dict[str, Any]]:
    """``{(mode, budget): {"rows", "tau", "p", "swaps"}}``: the LM ranking beside the STS-B ranking."""
    from scipy.stats import kendalltau

    proxy = _proxy_scores(records)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (m, mode, recipe), rows in _lm_rows(records).items():
        if m != model or recipe != "-":
            continue
        by_budget: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row["method"] == "dense" or (row["budget"], row["method"]) not in proxy:
                continue
            by_budget.setdefault(row["budget"], []).append({**row, "stsb": proxy[(row["budget"], row["method"])]})
        for budget, both in by_budget.items():
            lm_order = sorted(both, key=lambda x: x["nll"])
            st_order = sorted(both, key=lambda x: -x["stsb"])
            for i, x in enumerate(lm_order, 1):
                x["lm_rank"] = i
            for i, x in enumerate(st_order, 1):
                x["stsb_rank"] = i
            swaps = [(a["method"], b["method"]) for a, b in combinations(lm_order, 2)
                     if (a["lm_rank"] - b["lm_rank"]) * (a["stsb_rank"] - b["stsb_rank"]) < 0]
            tau = p = None
            if len(both) >= 3:
                res = kendalltau([x["lm_rank"] for x in both], [x["stsb_rank"] for x in both])
                tau, p = float(res.statistic), float(res.pvalue)
            out[(mode, budget)] = {"rows": lm_order, "tau": tau, "p": p, "swaps": swaps}
    return out


def _f(x: Any, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _ppl(row: dict[str, Any]) -> str:
    iv = f" [{row['ppl_low']:.4g}, {row['ppl_high']:.4g}]" if row["ppl_low"] is not None else ""
    return f"{row['ppl']:.4g}{iv}"


def render_markdown(records: Sequence[Record]) -> str | None:
    """The ``lm/summary.md`` page (None without lm records)."""
    tables = _lm_rows(records)
    if not tables:
        return None
    lines = ["# Language models: what compression does to perplexity", "",
             "WikiText-2 raw test, 64 windows of 512 positions (32,704 scored tokens; protocol in "
             "`compbench/tasks/lm.py`). Perplexity with the 95% bootstrap interval over the windows; ×dense = "
             "perplexity / dense perplexity; KL = mean KL(dense ‖ compressed) of the next-token distribution "
             "(nats/token); top-1 = how often the most likely next token is the dense model's; ratio = against "
             "the fp32 table (the budget), vs Q8_0 = against the table as shipped. *input*: only the input table "
             "is compressed (dense head, untied): it saves no memory in a tied model. *tied*: one compressed table "
             "is both the input lookup and the output head: the only mode that saves a tied model's memory. "
             "Generated by `compbench report` (leaderboard/lm_report.py).", ""]
    for (model, mode, recipe), rows in sorted(tables.items()):
        title = f"## {model}, {mode} mode" + (f", {recipe}" if recipe != "-" else "")
        lines += [title, "", "| budget | method | perplexity [95% CI] | ×dense | KL | top-1 | ratio | vs Q8_0 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            heal = r["heal"]
            method = r["method"] + (f" (healed {heal['steps']} steps)" if heal else "")
            lines.append(f"| {r['budget']} | {method} | {_ppl(r)} | {_f(r['ppl_ratio'], '.3g')} | "
                         f"{_f(r['kl'], '.3f')} | {_f(r['top1'], '.3f')} | {_f(r['ratio'], '.1f')}x | "
                         f"{_f(r['shipped_ratio'], '.2f')}x |")
        lines.append("")
    comp = proxy_comparison(records)
    lines += ["## Does the STS-B proxy predict the language-model verdict?", "",
              f"Each table ranks the methods scored both on SmolLM2 (lm track, unhealed) and on posthoc STS-B "
              f"({PROXY_MODEL}, untuned defaults) at the same budget. Kendall's tau-b: 1 = the same order. "
              "Disagreements: the pairs of methods the two rankings order differently.", ""]
    if not comp:
        lines.append("No budget has methods scored on both yet.")
    for (mode, budget), c in sorted(comp.items(), key=lambda kv: (kv[0][0], _budget_value(kv[0][1]))):
        agree = (f"Kendall tau-b {c['tau']:.2f} (p = {c['p']:.3f}, {len(c['rows'])} methods)" if c["tau"] is not None
                 else f"{len(c['rows'])} method(s): too few to compare")
        lines += [f"### {mode} mode at {budget}: {agree}", "", "| method | LM rank | perplexity | STS-B rank | STS-B |",
                  "|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['method']} | #{r['lm_rank']} | {r['ppl']:.4g} | #{r['stsb_rank']} | {r['stsb']:.4f} |")
        swaps = ", ".join(f"{a} / {b}" for a, b in c["swaps"]) or "none"
        lines += ["", f"Disagreements (LM order first): {swaps}.", ""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["proxy_comparison", "render_markdown"]
