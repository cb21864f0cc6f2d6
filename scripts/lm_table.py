"""The LM track's table from the committed records: one row per method, one column group per budget and mode.

Usage: ``python scripts/lm_table.py [--results results] [--model smollm2-135m]`` prints Markdown: perplexity with its
95% interval, the multiple of the dense perplexity, KL to the dense next-token distribution (nats/token), top-1
agreement and the achieved ratio, for every ``ok`` cell of ``lm/wikitext2`` (input, tied and healed frames).
Read-only: it never runs a cell (``compbench sweep benchmarks/lm-smollm2.yaml`` does).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

FRAMES = {"wikitext2": "input", "wikitext2+tied": "tied", "wikitext2+heal100": "input, healed 100 steps"}


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:,.1f}" if x >= 100 else f"{x:.2f}"


def _ratio(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}" if x < 1e6 else f"{x:.1e}"


def rows(results: Path, model: str | None) -> list[dict[str, Any]]:
    """Every ok LM record of the model (None: the default model) as a flat row."""
    out = []
    for path in sorted((results / "lm").glob("*/*/*/*.json")):
        frame = path.parts[-4]
        if model is None:
            mode = FRAMES.get(frame)
        else:
            base, _, rest = frame.partition(f"+model={model}")
            mode = FRAMES.get((base + rest) if rest else base) if f"+model={model}" in frame else None
        if mode is None:
            continue
        rec = json.loads(path.read_text(encoding="utf-8"))
        if rec.get("status") != "ok":
            continue
        m, b = rec["metrics"], rec["budget"]
        s, ci = m["scores"], m.get("interval") or {}
        out.append({"method": rec["method"]["name"], "budget": b["spec"], "mode": mode,
                    "ppl": s["perplexity"], "lo": math.exp(ci["low"]) if ci else None,
                    "hi": math.exp(ci["high"]) if ci else None, "x": s["ppl_ratio"], "kl": s["kl"],
                    "top1": s["top1"], "ratio": b.get("achieved_ratio")})
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    """One Markdown table per (mode, budget), best perplexity first."""
    lines: list[str] = []
    keys = sorted({(r["mode"], r["budget"]) for r in table},
                  key=lambda k: (k[0], float(k[1].rstrip("x")) if k[1].endswith("x") else 0.0))
    for mode, budget in keys:
        sel = sorted((r for r in table if r["mode"] == mode and r["budget"] == budget), key=lambda r: r["ppl"])
        lines += [f"**{budget}, {mode}**", "", "| method | perplexity [95% CI] | x dense | KL | top-1 | ratio |",
                  "|---|---|---|---|---|---|"]
        for r in sel:
            ci = f" [{_fmt(r['lo'])}, {_fmt(r['hi'])}]" if r["lo"] is not None else ""
            lines.append(f"| {r['method']} | {_fmt(r['ppl'])}{ci} | {_ratio(r['x'])} | {r['kl']:.3f} | "
                         f"{r['top1']:.3f} | {r['ratio']:.1f}x |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", type=Path)
    ap.add_argument("--model", default=None, help="a non-default model, e.g. gemma3-270m")
    args = ap.parse_args()
    print(markdown(rows(args.results, args.model)))


if __name__ == "__main__":
    main()
