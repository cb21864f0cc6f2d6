"""Deterministic Markdown and self-contained HTML for leaderboard pages and the overview.

Small hand-written renderers (no tabulate/jinja2): every number has a fixed format, rows come in a
fixed order and no timestamp is written, so the same records always give the same bytes.

Safety: every string that comes from a record (method names, options, configs, task names,
errors, device names, git shas) goes through :func:`h` (HTML) or :func:`md` (Markdown). HTML pages
load nothing: CSS is inline, plots are inline SVG (a ``<title>`` per point is the hover tooltip), there is no
JavaScript, and a
Content-Security-Policy (``default-src 'none'``) makes the browser refuse any fetch or script even if
something slipped through.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compbench.leaderboard.table import (
    HEADLINE_BUDGETS,
    HEADLINE_ORDER,
    Leaderboard,
    TrackOverview,
    cells_versions,
    headline_key,
)

STATUS_TEXT = {"ok": "ok", "over_budget": "over budget", "failed": "failed", "skipped": "skipped",
               "timeout": "timeout"}
NOT_RUN = "—"
NO_INTERVAL = "no interval"
BYTES_FRONT = "★"
SPEED_FRONT = "◆"
REGENERATE = "compbench report --results results --out reports"

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


# --------------------------------------------------------------------------- formatting

def safe_component(text: str) -> str:
    """A path component that cannot escape the report folder: kept when it is plain
    (``[A-Za-z0-9][A-Za-z0-9._+-]*``), else slugged with a short hash of the original."""
    text = str(text)
    if _SAFE.fullmatch(text) and text not in (".", ".."):
        return text
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._-+") or "x"
    return f"{slug[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


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
    number of distinct commits (see :func:`compbench.leaderboard.table.cells_versions`)."""
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
    """HTML-escape any value (quotes included)."""
    return html.escape(str(text), quote=True)


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

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--border:#d1d9e0;--alt:#f6f8fa;--accent:#0969da;--bad:#cf222e}
*{box-sizing:border-box}
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif;color:var(--fg);
 background:#fff;max-width:1280px;margin:0 auto;padding:24px 28px 40px;line-height:1.5;font-size:15px}
h1{font-size:1.7em;margin:.2em 0 .4em;padding-bottom:.3em;border-bottom:1px solid var(--border)}
h2{font-size:1.3em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--border)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
p{margin:.5em 0}.muted{color:var(--muted)}.small{font-size:13px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:90%;background:var(--alt);
 padding:.1em .35em;border-radius:4px}
.scroll{overflow-x:auto;margin:10px 0}
table{border-collapse:collapse;font-size:14px;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--border);padding:5px 8px;text-align:right;vertical-align:top;white-space:nowrap}
th{background:var(--alt);font-weight:600}
th.l,td.l{text-align:left}
tbody tr:nth-child(even) td{background:#fbfcfd}
td.wrap{white-space:normal;min-width:9em;max-width:22em;overflow-wrap:anywhere}
.score{font-weight:600}.best{background:#dafbe1 !important}
.sub{display:block;font-size:12px;color:var(--muted);font-weight:400}
.rank{display:inline-block;min-width:1.7em;padding:0 .4em;margin-left:.3em;border-radius:1em;background:#ddf4ff;
 color:#0550ae;font-size:12px;font-weight:600;text-align:center}
.rank.r1{background:#ffd33d;color:#3b2300}
.flag{color:#8250df;margin-left:.25em}
.st-over_budget{background:#fff1e5 !important;color:#953800}
.st-failed{background:#ffebe9 !important;color:var(--bad)}
.st-skipped{color:var(--muted)}
.missing{color:var(--muted)}
.tag{display:inline-block;font-size:12px;padding:0 .5em;border-radius:1em;border:1px solid var(--border)}
figure{margin:14px 0 22px}figure svg{display:block;max-width:100%;height:auto;border:1px solid var(--border);
border-radius:6px}g.pt{cursor:help}g.pt:hover use,g.pt:hover path{stroke:#000;stroke-width:1.5}
figcaption{font-size:13px;color:var(--muted)}
.headlines{display:flex;flex-wrap:wrap;gap:14px 22px;align-items:flex-start;margin:10px 0}
.hl{flex:0 1 auto;max-width:100%;overflow-x:auto}
table.headline caption{text-align:left;font-weight:600;padding:2px 0 4px}
table.headline td{padding:3px 7px}table.headline td .sub{font-size:11px}
.mark{margin-left:.3em;color:#0550ae;font-weight:700}
details{margin:10px 0}summary{cursor:pointer;color:var(--accent)}
footer{margin-top:36px;padding-top:10px;border-top:1px solid var(--border);color:var(--muted);font-size:13px}
footer dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}footer dt{font-weight:600}
footer dd{margin:0}
""".strip()

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def html_document(title: str, body: str) -> str:
    """A complete self-contained HTML document (``title`` is escaped here, ``body`` must be safe)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{h(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str],
               cls: str = "") -> str:
    """A table from already-safe HTML cell contents; a cell may be ``(html, extra_class)``."""
    def cell(tag: str, x: Any, a: str) -> str:
        content, extra = (x if isinstance(x, tuple) else (x, ""))
        classes = " ".join(c for c in (a if a == "l" else "", extra) if c)
        attr = ' class="' + classes + '"' if classes else ""
        return f"<{tag}{attr}>{content}</{tag}>"

    head = "<tr>" + "".join(cell("th", x, a) for x, a in zip(headers, align, strict=True)) + "</tr>"
    body = "\n".join("<tr>" + "".join(cell("td", x, a) for x, a in zip(r, align, strict=True)) + "</tr>" for r in rows)
    attr = ' class="' + cls + '"' if cls else ""
    return (f"<div class=\"scroll\"><table{attr}>\n<thead>{head}</thead>\n"
            f"<tbody>\n{body}\n</tbody>\n</table></div>\n")


def _html_pivot_cell(c: dict[str, Any] | None) -> Any:
    if c is None:
        return (NOT_RUN, "missing")
    if c["status"] != "ok":
        label = h(STATUS_TEXT.get(c["status"], c["status"]))
        tip = f" title=\"{h(clip(c['error'], 300))}\"" if c["error"] else ""
        sub = f"<span class=\"sub\">{h(fmt_bytes(c['stored_bytes']))} stored</span>" \
            if c["status"] == "over_budget" and c["stored_bytes"] is not None else ""
        return (f"<span{tip}>{label}</span>{sub}", f"st-{h(c['status'])}")
    rank = ""
    if c["rank"] is not None:
        r1 = " r1" if c["rank"] == 1 else ""
        tip = "tied with the best at this budget (paired bootstrap, 5%)" if c.get("tied") else "rank at this budget"
        rank = f"<span class=\"rank{r1}\" title=\"{tip}\">#{h(rank_text(c))}</span>"
    flags = flags_text(c)
    flags_html = f"<span class=\"flag\" title=\"Pareto front\">{flags}</span>" if flags else ""
    sub = (f"<span class=\"sub\">{h(fmt_interval(c.get('ci_low'), c.get('ci_high')))} · {h(n_text(c))} · "
           f"ret {h(fmt_pct(c['retention']))} · "
           f"{h(fmt_bytes(c['stored_bytes']))} ({h(fmt_ratio(c['achieved_ratio']))})</span>")
    return (f"<span class=\"score\">{h(fmt_mean_std(c['main'], c['main_std']))}</span>{rank}{flags_html}{sub}",
            "best" if c["rank"] == 1 and c["budget"] else "")


PLOT_BYTES_TEXT = ("Quality vs stored bytes (log scale). The 8 methods ranked best at 40x are in colour, in the "
                   "legend's order (the rest grey); dotted verticals mark each budget's allowed bytes; the grey "
                   "staircase and ringed points are the Pareto front; the right panel, when present, zooms on the "
                   "coloured methods.")
PLOT_SPEED_TEXT = ("Quality vs lookup throughput relative to the dense table in the same run (log scale), one panel "
                   "per headline budget; the 8 methods ranked best at 40x in colour; the grey staircase and ringed "
                   "points are each panel's Pareto front.")


def _figure(svg: str | None, alt: str, caption: str) -> str:
    """An inline SVG plot (hover a point for its method, budget, score and interval) with its caption."""
    if not svg:
        return ""
    svg = svg.replace("<svg ", f"<svg role=\"img\" aria-label=\"{h(alt)}\" ", 1)
    return f"<figure>{svg}<figcaption>{h(caption)}</figcaption></figure>\n"


def page_html(board: Leaderboard, svgs: dict[str, str], index_href: str) -> str:
    """Self-contained HTML of one leaderboard page (plots inline as SVG with hover tooltips; no script)."""
    v = board.versions()
    parts = [f"<p class=\"small\"><a href=\"{h(index_href)}\">← all tasks</a></p>\n",
             f"<h1>{h(board.task)} <span class=\"muted\">· {h(board.track)} · {h(board.device)}</span></h1>\n",
             f"<p>Metric <b>{h(board.metric)}</b> ({h(direction(board.higher_is_better))}), task version "
             f"{h('/'.join(str(x) for x in v['task_version']))}, device {h(', '.join(v['device_names']))} with "
             f"{h(', '.join(str(t) for t in v['threads']))} thread(s).</p>\n",
             *([f"<p class=\"small\">{h(_identity_line(board))}</p>\n"] if board.identity else []),
             *([f"<h2 id=\"headline\">At the headline budgets</h2>\n<p class=\"small muted\">{h(PAGE_HEADLINE_NOTE)}"
                f"</p>\n<div class=\"headlines\">{_headline_html(hl, link=False)}</div>\n"]
               if (hl := board_headline(board)) is not None else []),
             "<h2 id=\"table\">Method × budget</h2>\n",
             html_table(["method", *[h(b) for b in board.budgets]],
                        [[f"<b>{h(board.label(m))}</b>", *[_html_pivot_cell(board.cell(m, b)) for b in board.budgets]]
                         for m in board.methods],
                        ["l", *["r"] * len(board.budgets)], cls="pivot"),
             f"<p class=\"small muted\">{h(_legend_text())} Second line: seeds, retention vs dense, stored bytes "
             f"(achieved ratio).</p>\n",
             "<h2 id=\"plots\">Pareto plots</h2>\n"]
    figs = (_figure(svgs.get("bytes"), f"{board.task}: quality vs stored bytes", PLOT_BYTES_TEXT)
            + _figure(svgs.get("speed"), f"{board.task}: quality vs lookup throughput", PLOT_SPEED_TEXT))
    parts.append(figs or "<p class=\"muted\">No in-budget results to plot.</p>\n")
    parts.append("<h2 id=\"details\">Details</h2>\n")
    parts.append("<p class=\"small muted\">Retention = score / dense score on the same task. Stored = bytes of every "
                 "tensor needed at inference (counted by the harness); achieved = dense fp32 bytes / stored bytes. "
                 "Throughput = lookup throughput of the compressed embedding / dense lookup in the same run. "
                 "Peak RSS = the cell's process peak.</p>\n")
    cols = _detail_columns(board)
    rows = []
    for c in _detail_rows(board):
        vals: list[Any] = [h(x) for x in _detail_values(board, c)]
        vals[3] = (vals[3], f"l st-{h(c['status'])}")
        vals[13] = (f"<code>{vals[13]}</code>" if vals[13] else "", "l wrap")
        vals[14] = (vals[14], "l wrap")
        vals[2] = (vals[2], "l wrap")
        rows.append([vals[i] for i in cols])
    parts.append(html_table([DETAIL_HEADERS[i] for i in cols], rows, [DETAIL_ALIGN[i] for i in cols], cls="details"))
    if board.systems:
        parts.append("<h2 id=\"systems\">Systems (not ranked)</h2>\n")
        parts.append(f"<p class=\"small muted\">{h(SYSTEMS_TEXT)}</p>\n")
        parts.append(html_table(list(SYSTEM_HEADERS), [[h(x) for x in _system_values(board, c)]
                                                       for c in board.system_rows()], list(SYSTEM_ALIGN),
                                cls="details"))
    facts = "".join(f"<dt>{h(k)}</dt><dd>{h(val)}</dd>" for k, val in _footer_facts(board))
    parts.append(f"<footer><dl>{facts}</dl><p>Generated by <code>{h(REGENERATE)}</code> from the stored records."
                 f"</p></footer>\n")
    return html_document(f"{board.task} ({board.track}, {board.device}) · compbench leaderboard", "".join(parts))


def _headline_html(hl: Headline, link: bool = True) -> str:
    b = hl.board
    head = ("<tr><th class=\"l\">method</th>" + "".join(f"<th>{h(bud)}</th>" for bud in hl.budgets) + "</tr>")
    body = []
    for v in hl.variants:
        cells = [f"<td class=\"l\">{h(v)}</td>"]
        for bud in hl.budgets:
            c = hl.cells.get((v, bud))
            if c is None:
                cells.append(f"<td class=\"missing\">{NOT_RUN}</td>")
                continue
            mark = _tie_mark(c)
            tip = ("best at this budget" if mark == "★" else
                   "tied with the best at this budget (paired bootstrap, 5%)" if mark else "")
            mark_html = f"<span class=\"mark\" title=\"{h(tip)}\">{mark}</span>" if mark else ""
            cls = " class=\"best\"" if mark else ""
            cells.append(f"<td{cls}><span class=\"score\">{h(fmt_score(c['main']))}</span>{mark_html}"
                         f"<span class=\"sub\">{h(fmt_interval(c.get('ci_low'), c.get('ci_high')))}</span></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    name = f"<a href=\"{h(b.page)}.html\">{h(hl.task)}</a>" if link else h(hl.task)
    caption = (f"{name} <span class=\"sub\">{h(b.metric)} "
               f"{'↑' if b.higher_is_better else '↓'} · {h(b.device)} · ordered by {h(hl.order_budget)}</span>")
    return (f"<div class=\"hl\"><table class=\"headline\"><caption>{caption}</caption>\n<thead>{head}</thead>\n"
            f"<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table></div>\n")


def index_html(overviews: Sequence[TrackOverview], n_records: int = 0) -> str:
    """Self-contained HTML of the overview page."""
    parts = ["<h1>compbench leaderboard</h1>\n",
             f"<p>Embedding compression methods at a memory budget, rendered from {n_records} stored record(s). "
             f"Each task page has the full method × budget table (mean ± std over seeds, retention vs dense, stored "
             f"bytes, throughput, memory) and Pareto plots. Regenerate with <code>{h(REGENERATE)}</code>.</p>\n"]
    for ov in overviews:
        parts.append(f"<h2 id=\"{h(safe_component(ov.track))}\">{h(ov.track)}</h2>\n")
        hls = headlines(ov)
        if hls:
            parts.append(f"<p class=\"small muted\">{h(HEADLINE_NOTE)}</p>\n<div class=\"headlines\">\n"
                         + "".join(_headline_html(hl) for hl in hls) + "</div>\n")
            parts.append(f"<details><summary>{h(ov.track)}: all budgets</summary>\n")
        tasks: list[str] = []
        for t, _ in ov.columns:
            if t not in tasks:
                tasks.append(t)
        span = {t: sum(1 for t2, _ in ov.columns if t2 == t) for t in tasks}
        head1 = "<tr><th class=\"l\" rowspan=\"2\">method</th>" + "".join(
            f"<th colspan=\"{span[t]}\" class=\"l\"><a href=\"{h(ov.pages[t][0].page)}.html\">{h(t)}</a> "
            f"<span class=\"sub\">{h(ov.metrics[t])} {'↑' if ov.higher_is_better[t] else '↓'}</span></th>"
            for t in tasks) + "</tr>"
        head2 = "<tr>" + "".join(f"<th>{h(b)}</th>" for _, b in ov.columns) + "</tr>"
        body = []
        for m in ov.methods:
            cells = [f"<td class=\"l\"><b>{h(m)}</b></td>"]
            for t, b in ov.columns:
                v = ov.best.get((m, t, b))
                if v is None:
                    cells.append(f"<td class=\"missing\">{NOT_RUN}</td>")
                else:
                    text = h(fmt_score(v))
                    if v == ov.winners.get((t, b)):
                        cells.append(f"<td class=\"best\"><b>{text}</b></td>")
                    else:
                        cells.append(f"<td>{text}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(f"<div class=\"scroll\"><table class=\"overview\">\n<thead>{head1}\n{head2}</thead>\n<tbody>\n"
                     + "\n".join(body) + "\n</tbody>\n</table></div>\n")
        parts.append(f"<p class=\"small muted\">Best in-budget main score per task and budget (mean over seeds; best "
                     f"over option variants and devices); highlighted = best in its column; {NOT_RUN} = no in-budget "
                     f"result.</p>\n")
        if hls:
            parts.append("</details>\n")
        prow = []
        for task, boards in ov.pages.items():
            for bd in boards:
                prow.append([h(task), f"{h(bd.metric)} {'↑' if bd.higher_is_better else '↓'}", h(bd.device),
                             str(len(bd.methods)), str(len(bd.cells)),
                             f"<a href=\"{h(bd.page)}.html\">{h(bd.page)}</a>"])
        parts.append(html_table(["task", "metric", "device", "methods", "cells", "page"], prow,
                                ["l", "l", "l", "r", "r", "l"], cls="pages"))
    facts = "".join(f"<dt>{h(k)}</dt><dd>{h(val)}</dd>" for k, val in _index_facts(overviews))
    parts.append(f"<footer><dl>{facts}</dl><p>Generated by <code>{h(REGENERATE)}</code> from the stored records; "
                 f"the same records always give the same bytes.</p></footer>\n")
    return html_document("compbench leaderboard", "".join(parts))
