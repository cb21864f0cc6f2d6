"""Deterministic Markdown and self-contained HTML for leaderboard pages and the overview.

Markdown is written here (small renderers; :func:`md` escapes every record string). HTML comes from the jinja2
templates in ``leaderboard/templates`` with autoescaping: the functions here build plain-text views (every number
formatted, rows in a fixed order, no timestamp) and the templates add the markup, so the same records always
give the same bytes and no record string can become markup. HTML pages load nothing: CSS is inline
(``templates/style.css``), plots are inline SVG (a ``<title>`` per point is the hover tooltip; the one markup the
templates receive), there is no JavaScript, and a Content-Security-Policy (``default-src 'none'``) makes the
browser refuse any fetch or script even if something slipped through.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import markupsafe

from compbench.leaderboard.ranking import (
    HEADLINE_BUDGETS,
    HEADLINE_ORDER,
    Leaderboard,
    TrackOverview,
    cells_versions,
    headline_key,
)
from compbench.leaderboard.slugs import safe_component

STATUS_TEXT = {"ok": "ok", "over_budget": "over budget", "failed": "failed", "skipped": "skipped",
               "timeout": "timeout"}
NOT_RUN = "—"
NO_INTERVAL = "no interval"
BYTES_FRONT = "★"
SPEED_FRONT = "◆"
REGENERATE = "compbench report --results results --out reports"

# --------------------------------------------------------------------------- formatting

def fmt_score(x: float | None) -> str:
    """Scores: 4 decimals, or 3 significant digits in e-notation for tiny values (errors, MSE)."""
    if x is None:
        return NOT_RUN
    if x != 0 and abs(x) < 0.01:
        return f"{x:.3e}"
    return f"{x:.4f}"


def fmt_interval(low: float | None, high: float | None) -> str:
    """``[0.801, 0.838]`` (the 95% interval, 3 decimals), or ``no interval`` when the records hold no per-item data."""
    if low is None or high is None:
        return NO_INTERVAL
    if (low != 0 and abs(low) < 0.01) or (high != 0 and abs(high) < 0.01):
        return f"[{low:.2e}, {high:.2e}]"
    return f"[{low:.3f}, {high:.3f}]"


def rank_text(c: dict[str, Any]) -> str:
    """``1``, or ``1–3`` for a cell statistically tied with the best at its budget."""
    if c.get("rank") is None:
        return NOT_RUN
    high = c.get("rank_high")
    return f"{c['rank']}–{high}" if c.get("tied") and high and high != c["rank"] else str(c["rank"])


def fmt_mean_std(mean: float | None, std: float | None) -> str:
    """``0.8123 ± 0.0012`` (no std: the mean only); the std uses the mean's format (fixed 4 decimals for
    ordinary scores, so a small spread reads ``± 0.0076``, not ``± 7.572e-03``)."""
    if std is None:
        return fmt_score(mean)
    if mean is not None and (mean == 0 or abs(mean) >= 0.01):
        return f"{fmt_score(mean)} ± {std:.4f}"
    return f"{fmt_score(mean)} ± {fmt_score(std)}"


def fmt_bytes(n: float | None) -> str:
    """Binary units with 2 decimals (``1.12 MiB``); whole bytes below 1 KiB."""
    if n is None:
        return NOT_RUN
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{int(x)} B" if unit == "B" else f"{x:.2f} {unit}"
        x /= 1024
    return str(n)  # pragma: no cover


def fmt_ratio(x: float | None) -> str:
    """``10.00x``; below 0.1 two significant digits (``0.0042x``) so slow methods do not read as ``0.00x``."""
    if x is None:
        return NOT_RUN
    if 0 < abs(x) < 0.1:
        return f"{x:.2g}x" if abs(x) >= 1e-4 else f"{x:.1e}x"
    return f"{x:.2f}x"


def fmt_pct(x: float | None) -> str:
    """``98.7%``."""
    return NOT_RUN if x is None else f"{100 * x:.1f}%"


def short_sha(sha: str) -> str:
    """First 10 hex digits of a git sha."""
    return sha[:10]


def sha_range(facts: dict[str, Any]) -> str:
    """``git abc..def (3 commits)``: the sha of the oldest record .. the sha of the newest record, and the
    number of distinct commits (see :func:`compbench.leaderboard.ranking.cells_versions`)."""
    shas = facts["git_shas"]
    if not shas:
        text = "git sha unknown"
    elif len(shas) == 1:
        text = f"git {short_sha(shas[0])}"
    else:
        text = f"git {short_sha(shas[0])}..{short_sha(facts['git_latest'])} ({len(shas)} commits)"
    return text + (" (some records from a dirty tree)" if facts["git_dirty"] else "")


def clip(text: str | None, n: int = 140) -> str:
    """One line, at most ``n`` characters."""
    if not text:
        return ""
    one = " ".join(str(text).split())
    return one if len(one) <= n else one[: n - 1] + "…"


def h(text: Any) -> str:
    """HTML-escape any value (quotes included), exactly as the templates' autoescaping does (markupsafe)."""
    return str(markupsafe.escape(str(text)))


_MD_SPECIAL = re.compile(r"([\\`*\[\]|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def md(text: Any) -> str:
    """Markdown-escape a record string for a table cell: HTML-escaped, Markdown punctuation
    backslash-escaped (``_`` only where it could start or end emphasis), on one line."""
    one = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one, quote=False))


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    """A GitHub Markdown table; cells must already be escaped. ``align``: ``l`` or ``r`` per column."""
    sep = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def flags_text(cell: dict[str, Any]) -> str:
    """Pareto flags of a cell as symbols."""
    return (BYTES_FRONT if cell.get("pareto_bytes") else "") + (SPEED_FRONT if cell.get("pareto_speed") else "")


def n_text(cell: dict[str, Any]) -> str:
    """``n=3`` (plus ``, 1 failed`` when some seeds were not ok)."""
    s = f"n={cell['n']}"
    if cell["n_bad"]:
        s += f", {cell['n_bad']} not ok"
    return s


def direction(higher_is_better: bool) -> str:
    """Arrow and words for the metric's direction."""
    return "↑ higher is better" if higher_is_better else "↓ lower is better"


# --------------------------------------------------------------------------- page content (shared)

DETAIL_HEADERS = ("budget", "rank", "method", "status", "score (mean ± std)", "95% CI", "n", "retention", "stored",
                  "achieved", "throughput", "peak RSS", "Pareto", "config", "note")
DETAIL_ALIGN = ("l", "r", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "l", "l", "l")


def _detail_columns(board: Leaderboard) -> list[int]:
    """Indexes of the detail columns to show (``Pareto``, ``config`` and ``note`` only when some row has one)."""
    values = [_detail_values(board, c) for c in board.rows()]
    optional = {DETAIL_HEADERS.index(x) for x in ("Pareto", "config", "note")}
    return [i for i in range(len(DETAIL_HEADERS)) if i not in optional or any(v[i] for v in values)]


def _detail_rows(board: Leaderboard) -> list[dict[str, Any]]:
    b_order = {b: i for i, b in enumerate(board.budgets)}
    m_order = {m: i for i, m in enumerate(board.methods)}
    return sorted(board.rows(),
                  key=lambda c: (b_order[c["budget"]], c["rank"] is None, c["rank"] or 0, m_order[c["variant"]]))


def _detail_values(board: Leaderboard, c: dict[str, Any]) -> list[str]:
    """Plain-text values of one detail row (not escaped)."""
    ok = c["status"] == "ok"
    mem = fmt_bytes(c["peak_rss_bytes"])
    if c["gpu_peak_allocated_bytes"] is not None:
        mem += f" (GPU {fmt_bytes(c['gpu_peak_allocated_bytes'])})"
    note = clip(c["error"]) if c["error"] else ""
    return [
        c["budget"],
        rank_text(c),
        c["label"],
        STATUS_TEXT.get(c["status"], c["status"]),
        fmt_mean_std(c["main"], c["main_std"]) if ok else NOT_RUN,
        fmt_interval(c.get("ci_low"), c.get("ci_high")) if ok else NOT_RUN,
        (str(c["n"]) + (f" ({c['n_bad']} not ok)" if c["n_bad"] else "")) if ok else NOT_RUN,
        (fmt_pct(c["retention"]) + (f" [{fmt_pct(c['retention_low'])}, {fmt_pct(c['retention_high'])}]"
                                     if c.get("retention_low") is not None else "")) if ok else NOT_RUN,
        fmt_bytes(c["stored_bytes"]) + ("" if c["in_budget"] or c["stored_bytes"] is None
                                        else f" > {fmt_bytes(c['allowed_bytes'])}"),
        fmt_ratio(c["achieved_ratio"]),
        (fmt_ratio(c["throughput_ratio"]) + (f" {CONCURRENT}" if (c.get("concurrent_cells") or 1) > 1 else ""))
        if ok else NOT_RUN,
        mem if c["peak_rss_bytes"] is not None else NOT_RUN,
        ", ".join(x for x, f in (("bytes", c["pareto_bytes"]), ("speed", c["pareto_speed"])) if f) or "",
        c["config"],
        note,
    ]


def _footer_facts(board: Leaderboard) -> list[tuple[str, str]]:
    v = board.versions()
    methods = ", ".join(f"{m} v{'/'.join(str(x) for x in vs)}" for m, vs in sorted(v["methods"].items()))
    facts = [
        ("task", f"{board.track}/{board.task} v{'/'.join(str(x) for x in v['task_version'])}; metric {board.metric}"),
        ("methods", methods),
        ("code", sha_range(v)),
        ("device", f"{', '.join(v['device_names'])}; {', '.join(str(t) for t in v['threads'])} thread(s)"),
        ("records", f"{v['records']} record(s)" + (f"; {v['stale_records']} record(s) of older method or task "
                                                    f"versions not shown" if v["stale_records"] else "")),
    ]
    if board.excluded:
        facts.append(("excluded", f"{len(board.excluded)} record(s) whose identity differs from this page's: "
                                  + clip(", ".join(board.excluded), 300)))
    return facts


SYSTEM_HEADERS = ("system", "budget", "score (mean ± std)", "n", "dense at this width", "Δ vs dense", "stored",
                  "achieved", "head params", "eval samples/s", "vs dense eval", "note")
SYSTEM_ALIGN = ("l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l")
SYSTEMS_TEXT = ("Systems bring their own classifier head or start from the pretrained table, so their identity differs "
                "from the dense model's: they are shown next to the dense model of the same width, with the head's "
                "size and cost, and are not ranked, not on the Pareto fronts and not in the overview. "
                "Δ vs dense = score − dense score; vs dense eval = the system's test-time samples/s over the "
                "dense model's (records of the same machine, not one run).")


def _system_values(board: Leaderboard, c: dict[str, Any]) -> list[str]:
    """Plain-text values of one systems row (not escaped)."""
    ok = c["status"] == "ok"
    dense = board.dense_cell()
    dscore = dense["main"] if dense else None
    head = (c["params_total"] - c["params_embedding"]) if c["params_total"] is not None and \
        c["params_embedding"] is not None else None
    speed = (c["eval_samples_per_s"] / dense["eval_samples_per_s"]) if ok and dense and c["eval_samples_per_s"] \
        and dense.get("eval_samples_per_s") else None
    return [
        c["label"], c["budget"],
        fmt_mean_std(c["main"], c["main_std"]) if ok else STATUS_TEXT.get(c["status"], c["status"]),
        str(c["n"]) if ok else NOT_RUN,
        fmt_score(dscore) if dscore is not None else NOT_RUN,
        f"{c['main'] - dscore:+.4f}" if ok and dscore is not None else NOT_RUN,
        fmt_bytes(c["stored_bytes"]),
        fmt_ratio(c["achieved_ratio"]),
        f"{head:,}" if head is not None else NOT_RUN,
        f"{c['eval_samples_per_s']:,.0f}" if ok and c["eval_samples_per_s"] else NOT_RUN,
        fmt_ratio(speed) if speed is not None else NOT_RUN,
        clip(c["error"]) if c["error"] else "",
    ]


def _identity_line(board: Leaderboard) -> str:
    return (f"Identity: {board.identity}. Every ranked cell on this page shares it (model, width, backbone, "
            f"initialisation, head, recipe); retention is against the dense cell of this identity."
            if board.identity else "")


CONCURRENT = "‡"


def _legend_text() -> str:
    return (f"Cell: mean ± std over seeds, the 95% bootstrap interval over the test items (and seeds) in brackets "
            f"({NO_INTERVAL} for records without per-item outcomes), n, then the rank among in-budget runs at that "
            f"budget. Cells whose paired difference with the best cell at that budget is not significant at 5% are "
            f"tied with it: they share the bold face and the rank range #1–k. "
            f"{CONCURRENT} after a throughput = timed while other cells ran on the machine (the record says how many "
            f"could run at once); records older than that field do not say. "
            f"{BYTES_FRONT} = on the Pareto front of quality vs stored bytes, {SPEED_FRONT} = on the Pareto "
            f"front of quality vs lookup throughput. Over-budget, failed and skipped cells are not ranked; "
            f"{NOT_RUN} = not run.")


# --------------------------------------------------------------------------- Markdown

def _md_pivot_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return NOT_RUN
    if c["status"] != "ok":
        return f"*{STATUS_TEXT.get(c['status'], md(c['status']))}*"
    s = f"{fmt_mean_std(c['main'], c['main_std'])} {fmt_interval(c.get('ci_low'), c.get('ci_high'))} ({n_text(c)})"
    if c["rank"] is not None:
        s = (f"**{s}**" if c["rank"] == 1 else s) + f" #{rank_text(c)}"
    flags = flags_text(c)
    return s + (f" {flags}" if flags else "")


def _md_details(board: Leaderboard) -> str:
    cols = _detail_columns(board)
    rows = [[md(v[i]) for i in cols] for v in (_detail_values(board, c) for c in _detail_rows(board))]
    return md_table([DETAIL_HEADERS[i] for i in cols], rows, [DETAIL_ALIGN[i] for i in cols])


PAGE_HEADLINE_NOTE = ("The headline budgets first: each method's score with its 95% interval; ★ = best at that "
                      "budget, ≈ = statistically tied with the best (paired bootstrap on the same test items, 5%). "
                      "Rows are ordered by the rank at 40x (or the page's first headline budget). Every budget, "
                      "with ranks, retention and bytes: the method × budget table below.")


def _md_headline_section(board: Leaderboard) -> list[str]:
    hl = board_headline(board)
    if hl is None:
        return []
    return ["## At the headline budgets\n", PAGE_HEADLINE_NOTE + "\n", _headline_md(hl, link=False)]


def page_markdown(board: Leaderboard, plots: dict[str, str], index_href: str) -> str:
    """Markdown of one leaderboard page; ``plots`` maps ``bytes``/``speed`` to image file names."""
    v = board.versions()
    out = [f"# {md(board.task)} · {md(board.track)} · {md(board.device)}\n",
           f"[← all tasks]({index_href})\n",
           f"Metric **{md(board.metric)}** ({direction(board.higher_is_better)}), task version "
           f"{'/'.join(str(x) for x in v['task_version'])}, device {md(', '.join(v['device_names']))} with "
           f"{', '.join(str(t) for t in v['threads'])} thread(s).\n",
           *([f"{md(_identity_line(board))}\n"] if board.identity else []),
           *_md_headline_section(board),
           "## Method × budget\n",
           md_table(["method", *[md(b) for b in board.budgets]],
                    [[md(board.label(m)), *[_md_pivot_cell(board.cell(m, b)) for b in board.budgets]]
                     for m in board.methods],
                    ["l", *["r"] * len(board.budgets)]),
           f"{_legend_text()}\n",
           "## Details\n",
           "Retention = score / dense score on the same task. Stored = bytes of every tensor needed at inference "
           "(counted by the harness); achieved = dense fp32 bytes / stored bytes. Throughput = lookup throughput of "
           "the compressed embedding / dense lookup in the same run. Peak RSS = the cell's process peak.\n",
           _md_details(board),
           *(["## Systems (not ranked)\n", f"{SYSTEMS_TEXT}\n",
              md_table(list(SYSTEM_HEADERS), [[md(x) for x in _system_values(board, c)] for c in board.system_rows()],
                       list(SYSTEM_ALIGN))] if board.systems else []),
           "## Plots\n"]
    if plots.get("bytes"):
        out.append(f"![{md(board.task)}: quality vs stored bytes]({plots['bytes']})\n")
    if plots.get("speed"):
        out.append(f"![{md(board.task)}: quality vs lookup throughput]({plots['speed']})\n")
    if not plots.get("bytes") and not plots.get("speed"):
        out.append("No in-budget results to plot.\n")
    out.append("---\n")
    out.append("\n".join(f"- {k}: {md(val)}" for k, val in _footer_facts(board)) + "\n")
    out.append(f"Generated by `{REGENERATE}` from the stored records.\n")
    return "\n".join(out)


def _overview_md_cell(ov: TrackOverview, method: str, task: str, budget: str) -> str:
    v = ov.best.get((method, task, budget))
    if v is None:
        return NOT_RUN
    return f"**{fmt_score(v)}**" if v == ov.winners.get((task, budget)) else fmt_score(v)


def _index_facts(overviews: Sequence[TrackOverview]) -> list[tuple[str, str]]:
    cells = [c for ov in overviews for boards in ov.pages.values() for b in boards for c in b.rows()]
    methods: dict[str, set[int]] = {}
    for c in cells:
        methods.setdefault(c["method"], set()).add(c["method_version"])
    return [("code", sha_range(cells_versions(cells))),
            ("methods", ", ".join(f"{m} v{'/'.join(str(v) for v in sorted(vs))}" for m, vs in sorted(methods.items())))]


@dataclass
class Headline:
    """One task's headline table: the rankable cells at the headline budgets of its fullest page (device)."""

    task: str
    board: Leaderboard
    budgets: tuple[str, ...]
    order_budget: str
    variants: tuple[str, ...]
    cells: dict[tuple[str, str], dict[str, Any]]


def board_headline(board: Leaderboard, task: str | None = None) -> Headline | None:
    """One page's headline table: its ok cells at the headline budgets, variants ordered by their rank at 40x
    (else the first headline budget the page has), ties by the score, then the variants without a cell there;
    None when the page has no headline budget."""
    cells = {(c["variant"], c["budget"]): c for c in board.rows()
             if c["budget"] in HEADLINE_BUDGETS and c["variant"] != "dense" and c["status"] == "ok"}
    budgets = tuple(b for b in HEADLINE_BUDGETS if any(k[1] == b for k in cells))
    if not budgets:
        return None
    order_budget = HEADLINE_ORDER if HEADLINE_ORDER in budgets else budgets[0]
    variants = tuple(sorted({k[0] for k in cells},
                            key=lambda v: headline_key(v, cells.get((v, order_budget)), board.higher_is_better)))
    return Headline(task=task or board.task, board=board, budgets=budgets, order_budget=order_budget,
                    variants=variants, cells=cells)


def headlines(ov: TrackOverview) -> list[Headline]:
    """The headline tables of a track: per task, :func:`board_headline` of its fullest page (device)."""
    out = []
    for task, boards in ov.pages.items():
        hl = board_headline(max(boards, key=lambda b: (len(b.cells), b.device)), task)
        if hl is not None:
            out.append(hl)
    return out


def _tie_mark(c: dict[str, Any]) -> str:
    """``★`` for the best at its budget, ``≈`` for a method statistically tied with it, else ``""``."""
    if c.get("rank") == 1 and c.get("vs_best") is None:  # the best itself (tied ones carry their comparison)
        return "★"
    if c.get("tied"):
        return "≈"
    return ""


def _headline_md(hl: Headline, limit: int | None = None, link: bool = True) -> str:
    b = hl.board
    rows = []
    for v in hl.variants[:limit]:
        row = [md(v)]
        for bud in hl.budgets:
            c = hl.cells.get((v, bud))
            if c is None:
                row.append(NOT_RUN)
                continue
            mark = _tie_mark(c)
            score = f"**{fmt_score(c['main'])}**" if mark else fmt_score(c["main"])
            row.append(f"{score}{' ' + mark if mark else ''} {fmt_interval(c.get('ci_low'), c.get('ci_high'))}")
        rows.append(row)
    page = f"; [page]({b.page}.md)" if link else ""
    title = f"**{md(hl.task)}** ({md(b.metric)} {'↑' if b.higher_is_better else '↓'}, {md(b.device)}{page})\n"
    more = len(hl.variants) - len(rows)
    tail = f"\n… and {more} more method(s) on the [page]({b.page}.md).\n" if more > 0 else ""
    return title + "\n" + md_table(["method", *hl.budgets], rows, ["l", *["r"] * len(hl.budgets)]) + tail


HEADLINE_NOTE = ("Each method's score at the headline budgets with its 95% interval; ★ = best at that budget, "
                 "≈ = statistically tied with the best (paired bootstrap on the same test items, 5%), **bold** = "
                 "one of those. Rows are ordered by the rank at 40x (or the task's first headline budget). "
                 "Other budgets: the task pages and \"all budgets\" below.")


#: the tasks of the README's results block (``reports/summary.md``) and how many rows each shows
SUMMARY_TASKS = {"posthoc": ("stsb",), "lm": ("wikitext2", "wikitext2+tied")}
SUMMARY_ROWS = 8
SUMMARY_BEGIN = "<!-- compbench:results:begin (generated by `compbench report --readme README.md`; do not edit) -->"
SUMMARY_END = "<!-- compbench:results:end -->"


def summary_markdown(overviews: Sequence[TrackOverview], n_records: int = 0) -> str:
    """The short results block: the headline tables of :data:`SUMMARY_TASKS`, top :data:`SUMMARY_ROWS` rows
    each, links relative to the report folder (``reports/summary.md``; the README embeds it)."""
    out = [f"Rendered from {n_records} stored record(s). " + HEADLINE_NOTE.replace(
        'Other budgets: the task pages and "all budgets" below.', "Every budget and method: [index.md](index.md).")
           + "\n"]
    by_track = {ov.track: ov for ov in overviews}
    for track, tasks in SUMMARY_TASKS.items():  # in this order: the proxy task first, then the language models
        hls = {hl.task: hl for hl in headlines(by_track[track])} if track in by_track else {}
        out.extend(f"*{md(track)}*: " + _headline_md(hls[t], SUMMARY_ROWS) for t in tasks if t in hls)
    return "\n".join(out)


def readme_block(summary: str, prefix: str = "reports/") -> str:
    """``summary`` (links relative to the report folder) as the README's marked block, links under ``prefix``."""
    body = re.sub(r"\]\((?!https?:|#|/)([^)]+)\)", lambda m: f"]({prefix}{m.group(1)})", summary)
    return f"{SUMMARY_BEGIN}\n\n{body.rstrip()}\n\n{SUMMARY_END}"


def replace_readme_block(text: str, block: str) -> str | None:
    """``text`` with its marked results block replaced by ``block``, or None when it has no (single) block."""
    if text.count(SUMMARY_BEGIN) != 1 or text.count(SUMMARY_END) != 1:
        return None
    start, end = text.index(SUMMARY_BEGIN), text.index(SUMMARY_END) + len(SUMMARY_END)
    if end < start:
        return None
    return text[:start] + block + text[end:]


def index_markdown(overviews: Sequence[TrackOverview], page_ext: str = ".md", n_records: int = 0) -> str:
    """Markdown of the overview page."""
    out = ["# compbench leaderboard\n",
           f"Embedding compression methods at a memory budget, rendered from {n_records} stored record(s). "
           f"Each task page has the full method × budget table (mean ± std over seeds, retention vs dense, stored "
           f"bytes, throughput, memory) and Pareto plots. Regenerate with `{REGENERATE}`.\n"]
    for ov in overviews:
        out.append(f"## {md(ov.track)}\n")
        hls = headlines(ov)
        if hls:
            out.append(HEADLINE_NOTE + "\n")
            out.extend(_headline_md(hl).replace(f"]({hl.board.page}.md)", f"]({hl.board.page}{page_ext})")
                       for hl in hls)
            out.append(f"### {md(ov.track)}: all budgets\n")
        headers = ["method"]
        for t, b in ov.columns:
            headers.append(f"{md(t)} {md(b)}")
        rows = [[md(m), *[_overview_md_cell(ov, m, t, b) for t, b in ov.columns]] for m in ov.methods]
        out.append(md_table(headers, rows, ["l", *["r"] * len(ov.columns)]))
        out.append("Best in-budget main score per task and budget (mean over seeds; best over option variants "
                   "and devices); **bold** = best in its column; " + NOT_RUN + " = no in-budget result.\n")
        prow = []
        for task, boards in ov.pages.items():
            for bd in boards:
                prow.append([md(task), f"{md(bd.metric)} {'↑' if bd.higher_is_better else '↓'}", md(bd.device),
                             str(len(bd.methods)), str(len(bd.cells)), f"[{md(bd.page)}]({bd.page}{page_ext})"])
        out.append(md_table(["task", "metric", "device", "methods", "cells", "page"], prow,
                            ["l", "l", "l", "r", "r", "l"]))
    out.append("---\n")
    out.append("\n".join(f"- {k}: {md(val)}" for k, val in _index_facts(overviews)) + "\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML

PLOT_BYTES_TEXT = ("Quality vs stored bytes (log scale). The 8 methods ranked best at 40x are in colour, in the "
                   "legend's order (the rest grey); dotted verticals mark each budget's allowed bytes; the grey "
                   "staircase and ringed points are the Pareto front; the right panel, when present, zooms on the "
                   "coloured methods.")
PLOT_SPEED_TEXT = ("Quality vs lookup throughput relative to the dense table in the same run (log scale), one panel "
                   "per headline budget; the 8 methods ranked best at 40x in colour; the grey staircase and ringed "
                   "points are each panel's Pareto front.")


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
DETAILS_NOTE = ("Retention = score / dense score on the same task. Stored = bytes of every tensor needed at inference "
                "(counted by the harness); achieved = dense fp32 bytes / stored bytes. Throughput = lookup throughput "
                "of the compressed embedding / dense lookup in the same run. Peak RSS = the cell's process peak.")


@functools.cache
def _templates() -> jinja2.Environment:
    """The HTML templates (``leaderboard/templates``), autoescaped: every value is escaped unless marked safe."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("compbench.leaderboard", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals.update(not_run=NOT_RUN, csp=markupsafe.Markup(CSP), regenerate=REGENERATE)  # a constant
    return env


def _cell(text: Any, kind: str = "text", cls: str = "", **more: Any) -> dict[str, Any]:
    """One table cell for the ``table`` macro: plain text (escaped by the template), its kind and extra class."""
    return {"text": "" if text is None else str(text), "kind": kind, "cls": cls, **more}


def _table(headers: Sequence[Any], rows: Sequence[Sequence[dict[str, Any]]], align: Sequence[str]) -> dict[str, Any]:
    return {"headers": [h if isinstance(h, dict) else _cell(h) for h in headers], "rows": rows, "align": list(align)}


def _pivot_cell(c: dict[str, Any] | None) -> dict[str, Any]:
    """A method x budget cell: its score, rank, Pareto flags and second line (or its status)."""
    if c is None:
        return _cell(NOT_RUN, cls="missing")
    if c["status"] != "ok":
        sub = (f"{fmt_bytes(c['stored_bytes'])} stored"
               if c["status"] == "over_budget" and c["stored_bytes"] is not None else "")
        return _cell("", "pivot", f"st-{c['status']}", status=c["status"], label=STATUS_TEXT.get(c["status"],
                     c["status"]), tip=clip(c["error"], 300) if c["error"] else "", sub=sub)
    sub = (f"{fmt_interval(c.get('ci_low'), c.get('ci_high'))} · {n_text(c)} · ret {fmt_pct(c['retention'])} · "
           f"{fmt_bytes(c['stored_bytes'])} ({fmt_ratio(c['achieved_ratio'])})")
    return _cell("", "pivot", "best" if c["rank"] == 1 and c["budget"] else "", status="ok",
                 score=fmt_mean_std(c["main"], c["main_std"]),
                 rank=rank_text(c) if c["rank"] is not None else "", r1=c["rank"] == 1,
                 rank_tip=("tied with the best at this budget (paired bootstrap, 5%)" if c.get("tied")
                           else "rank at this budget"),
                 flags=flags_text(c), sub=sub)


def _figure(svg: str | None, alt: str, caption: str) -> dict[str, Any] | None:
    """An inline SVG plot (hover a point for its method, budget, score and interval) with its caption. The SVG is
    the one markup passed to the templates: matplotlib's output, with its tooltips escaped by the plots module."""
    if not svg:
        return None
    svg = svg.replace("<svg ", f"<svg role=\"img\" aria-label=\"{h(alt)}\" ", 1)
    return {"svg": markupsafe.Markup(svg), "caption": caption}  # noqa: S704 - trusted: rendered here, see plots.py


def _headline_view(hl: Headline, link: bool = True) -> dict[str, Any]:
    b = hl.board
    rows = []
    for v in hl.variants:
        cells: list[dict[str, Any] | None] = []
        for bud in hl.budgets:
            c = hl.cells.get((v, bud))
            if c is None:
                cells.append(None)
                continue
            mark = _tie_mark(c)
            cells.append({"score": fmt_score(c["main"]), "mark": mark,
                          "tip": ("best at this budget" if mark == "★" else
                                  "tied with the best at this budget (paired bootstrap, 5%)" if mark else ""),
                          "interval": fmt_interval(c.get("ci_low"), c.get("ci_high"))})
        rows.append({"variant": v, "cells": cells})
    return {"task": hl.task, "href": f"{b.page}.html" if link else "", "metric": b.metric,
            "arrow": "↑" if b.higher_is_better else "↓", "device": b.device, "order_budget": hl.order_budget,
            "budgets": list(hl.budgets), "rows": rows}


def _details_table(board: Leaderboard) -> dict[str, Any]:
    """The details table: one row per cell, the columns the page has (see :func:`_detail_columns`)."""
    cols = _detail_columns(board)
    styles = {2: ("text", "wrap"), 13: ("code", "wrap"), 14: ("text", "wrap")}
    rows = []
    for c in _detail_rows(board):
        vals = _detail_values(board, c)
        row = []
        for i in cols:
            kind, cls = styles.get(i, ("text", ""))
            if i == 3:
                cls = f"st-{c['status']}"
            row.append(_cell(vals[i], kind, cls))
        rows.append(row)
    return _table([DETAIL_HEADERS[i] for i in cols], rows, [DETAIL_ALIGN[i] for i in cols])


def page_html(board: Leaderboard, svgs: dict[str, str], index_href: str) -> str:
    """Self-contained HTML of one leaderboard page (``templates/page.html``; plots inline as SVG with hover
    tooltips; no script)."""
    v = board.versions()
    hl = board_headline(board)
    figures = [f for f in (_figure(svgs.get("bytes"), f"{board.task}: quality vs stored bytes", PLOT_BYTES_TEXT),
                           _figure(svgs.get("speed"), f"{board.task}: quality vs lookup throughput",
                                   PLOT_SPEED_TEXT)) if f]
    pivot = _table(["method", *board.budgets],
                   [[_cell(board.label(m), "bold"), *[_pivot_cell(board.cell(m, b)) for b in board.budgets]]
                    for m in board.methods],
                   ["l", *["r"] * len(board.budgets)])
    systems = (_table(SYSTEM_HEADERS, [[_cell(x) for x in _system_values(board, c)] for c in board.system_rows()],
                      SYSTEM_ALIGN) if board.systems else None)
    return _templates().get_template("page.html").render(
        title=f"{board.task} ({board.track}, {board.device}) · compbench leaderboard", index_href=index_href,
        task=board.task, track=board.track, device=board.device, metric=board.metric,
        direction=direction(board.higher_is_better), task_version="/".join(str(x) for x in v["task_version"]),
        device_names=", ".join(v["device_names"]), threads=", ".join(str(t) for t in v["threads"]),
        identity=_identity_line(board) if board.identity else "",
        headline=_headline_view(hl, link=False) if hl is not None else None, headline_note=PAGE_HEADLINE_NOTE,
        pivot=pivot, legend=_legend_text(), figures=figures, details_note=DETAILS_NOTE,
        details=_details_table(board), systems=systems, systems_note=SYSTEMS_TEXT, facts=_footer_facts(board))


def _overview_view(ov: TrackOverview) -> dict[str, Any]:
    tasks: list[str] = []
    for t, _ in ov.columns:
        if t not in tasks:
            tasks.append(t)
    rows = []
    for m in ov.methods:
        cells: list[dict[str, Any] | None] = []
        for t, b in ov.columns:
            val = ov.best.get((m, t, b))
            cells.append(None if val is None else {"text": fmt_score(val), "best": val == ov.winners.get((t, b))})
        rows.append({"method": m, "cells": cells})
    pages = [[_cell(task), _cell(f"{bd.metric} {'↑' if bd.higher_is_better else '↓'}"), _cell(bd.device),
              _cell(len(bd.methods)), _cell(len(bd.cells)), _cell(bd.page, "link", href=f"{bd.page}.html")]
             for task, boards in ov.pages.items() for bd in boards]
    return {"track": ov.track, "anchor": safe_component(ov.track),
            "headlines": [_headline_view(hl) for hl in headlines(ov)],
            "tasks": [{"name": t, "span": sum(1 for t2, _ in ov.columns if t2 == t),
                       "href": f"{ov.pages[t][0].page}.html", "metric": ov.metrics[t],
                       "arrow": "↑" if ov.higher_is_better[t] else "↓"} for t in tasks],
            "budgets": [b for _, b in ov.columns], "rows": rows,
            "pages": _table(["task", "metric", "device", "methods", "cells", "page"], pages,
                            ["l", "l", "l", "r", "r", "l"])}


def index_html(overviews: Sequence[TrackOverview], n_records: int = 0) -> str:
    """Self-contained HTML of the overview page (``templates/index.html``)."""
    return _templates().get_template("index.html").render(
        title="compbench leaderboard", n_records=n_records, tracks=[_overview_view(ov) for ov in overviews],
        headline_note=HEADLINE_NOTE, facts=_index_facts(overviews))
