"""Plots of one leaderboard page: byte-deterministic PNG (for the Markdown page) and the same figure as SVG with a
hover tooltip on every point (inline in the HTML page; no script, works offline).

Readability (issue 35):

- the 8 methods ranked best at 40x (:func:`compbench.leaderboard.ranking.headline_order`) are drawn in colour from
  the Okabe-Ito palette (colour-blind safe) with distinct markers and listed in the legend in that order; every
  other method is a thin grey line or dot with one legend entry for all of them ("N other methods"); in the HTML
  view every point, grey or not, names its method, budget, score, interval and bytes on hover;
- no per-point text: each budget is named once, on its dotted vertical, and labels that would overlap are
  stacked;
- :func:`plot_bytes`: quality vs stored bytes (log x) with the Pareto front (fewer bytes, better score) as a grey
  staircase with ringed points; when the coloured methods span less than half of the y range, a second panel
  zooms on them (the cluster near the dense score is where the decision is made);
- :func:`plot_speed`: small multiples, one panel per headline budget (10x, 40x, 100x; else the page's three
  tightest budgets), quality vs lookup throughput relative to dense (log x), each panel with its own front;
- a lower-is-better metric spanning more than 20x (perplexity) gets a log y axis.

Only rankable cells (ok, within budget) are drawn. Determinism: the object-oriented API with the Agg canvas (no
pyplot state), matplotlib's default style (a user's matplotlibrc is ignored), the DejaVu Sans font bundled with
matplotlib, mathtext off (a ``$`` in a method name stays text), fixed sizes and DPI, PNG metadata without the
``Software`` entry, SVG without date or metadata and with a fixed hash salt. The bytes therefore depend only on
the records and the matplotlib version.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from compbench.leaderboard.ranking import HEADLINE_BUDGETS, Leaderboard, headline_order, pareto_flags, rankable

#: Style overrides on top of matplotlib's defaults.
RC: Any = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "text.parse_math": False,
    "text.usetex": False,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.color": "#d8dee4",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#8c959f",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "svg.hashsalt": "compbench",
    "svg.fonttype": "none",
    "path.simplify": True,
}

DPI = 120
#: how many methods a plot draws in colour (the rest are grey)
TOP_K = 8
#: Okabe & Ito's colour-blind-safe palette, darkest first (yellow last: weakest on white)
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
OTHER_COLOR = "#b9c0c7"
FRONT_COLOR = "#57606a"
LABEL_COLOR = "#6e7781"


@dataclass(frozen=True)
class Plot:
    """One figure: ``png`` for the Markdown page, ``svg`` (an inline ``<svg>`` element with a ``<title>`` on
    every point) for the HTML page."""

    png: bytes
    svg: str


def fmt_bytes_short(n: float) -> str:
    """Binary-unit tick label: ``512 KiB``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g}"  # pragma: no cover


def _byte_ticks(lo: float, hi: float) -> list[float]:
    """Powers of two spanning [lo, hi], thinned to at most 8 ticks."""
    a, b = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    step = max(1, math.ceil((b - a + 1) / 8))
    return [2.0**k for k in range(a, b + 1, step)]


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG without the ``Software`` metadata (deterministic)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.15,
                facecolor="white")
    return buf.getvalue()


def svg_text(fig: Figure, tips: dict[str, str]) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog, no metadata, and a ``<title>`` (the browser's
    hover tooltip) in the group of every artist whose gid is in ``tips``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
                bbox_inches="tight", pad_inches=0.15, facecolor="white")
    text = buf.getvalue().decode("utf-8")
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    for gid, tip in tips.items():
        text = text.replace(f'<g id="{gid}">', f'<g id="{gid}" class="pt"><title>{html.escape(tip)}</title>', 1)
    return text


class _Figure:
    """A figure of ``n`` panels and the tooltips of its points."""

    def __init__(self, name: str, figsize: tuple[float, float], n: int = 1, sharey: bool = False) -> None:
        self.name = name
        self.fig = Figure(figsize=figsize, dpi=DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        first = self.fig.add_subplot(1, n, 1)
        self.axes = [first, *(self.fig.add_subplot(1, n, i + 1, sharey=first if sharey else None)
                              for i in range(1, n))]
        self.tips: dict[str, str] = {}

    def point(self, ax: Any, x: float, y: float, tip: str, **kw: Any) -> None:
        """One marker as its own artist, so the SVG can give it a tooltip."""
        art = ax.scatter([x], [y], **kw)
        gid = f"{self.name}-pt{len(self.tips)}"
        art.set_gid(gid)
        self.tips[gid] = tip

    def render(self) -> Plot:
        return Plot(png=png_bytes(self.fig), svg=svg_text(self.fig, self.tips))


def highlighted(board: Leaderboard, cells: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """(colour, marker) of the methods drawn in colour: the first :data:`TOP_K` of the page's headline order that
    have a cell in ``cells``."""
    present = {c["variant"] for c in cells}
    top = [v for v in headline_order(board) if v in present][:TOP_K]
    return {v: (OKABE_ITO[i], MARKERS[i]) for i, v in enumerate(top)}


def _tip(board: Leaderboard, c: dict[str, Any], speed: bool = False) -> str:
    low, high = c.get("ci_low"), c.get("ci_high")
    interval = f" [95% {low:.4g}, {high:.4g}]" if low is not None and high is not None else (
        f" ± {c['main_std']:.2g} (std over seeds)" if c.get("main_std") else " (no interval)")
    parts = [board.label(c["variant"]), c["budget"], f"{board.metric} {c['main']:.4g}{interval}"]
    if c.get("stored_bytes"):
        ratio = f" ({c['achieved_ratio']:.1f}x)" if c.get("achieved_ratio") else ""
        parts.append(f"{fmt_bytes_short(c['stored_bytes'])}{ratio}")
    if speed:
        parts.append(f"lookup {c['throughput_ratio']:.2f}x dense")
    return " · ".join(parts)


def _errorbar(ax: Any, x: float, c: dict[str, Any], color: str) -> None:
    """The 95% interval of a point when known, else ± the std over seeds."""
    low, high = c.get("ci_low"), c.get("ci_high")
    if low is not None and high is not None:
        yerr: Any = [[max(0.0, c["main"] - low)], [max(0.0, high - c["main"])]]
    elif c.get("main_std"):
        yerr = [c["main_std"]]
    else:
        return
    ax.errorbar([x], [c["main"]], yerr=yerr, fmt="none", ecolor=color, elinewidth=0.9, capsize=2, zorder=3)


def _log_y(board: Leaderboard, ys: Sequence[float]) -> bool:
    return not board.higher_is_better and min(ys) > 0 and max(ys) / min(ys) > 20


def _stacked_labels(ax: Any, marks: Sequence[tuple[float, str]], renderer: Any) -> None:
    """Name each vertical once at the bottom of the axes, lifting a label one row while it would overlap."""
    rows: list[list[Any]] = []
    for x, text in sorted(marks):
        for level in range(8):
            t = ax.annotate(text, (x, 0.0), xycoords=("data", "axes fraction"), xytext=(2, 3 + 9 * level),
                            textcoords="offset points", fontsize=7, color=LABEL_COLOR)
            box = t.get_window_extent(renderer).padded(3)
            if level == len(rows):
                rows.append([])
            if not any(box.overlaps(o) for o in rows[level]):
                rows[level].append(box)
                break
            t.remove()


def _front(ax: Any, xs: Sequence[float], ys: Sequence[float], where: str) -> None:
    """The Pareto front: a thick grey staircase through its points, each ringed."""
    if not xs:
        return
    ax.step(xs, ys, where=where, color=FRONT_COLOR, alpha=0.35, linewidth=5, solid_capstyle="round", zorder=2)
    ax.scatter(xs, ys, s=120, facecolors="none", edgecolors="black", linewidths=1.2, zorder=5)


def _front_handle(label: str) -> Line2D:
    """The legend entry of :func:`_front`."""
    return Line2D([], [], color=FRONT_COLOR, alpha=0.35, linewidth=5, marker="o", markersize=9,
                  markerfacecolor="none", markeredgecolor="black", label=label)


def _legend(ax: Any, board: Leaderboard, colours: dict[str, tuple[str, str]], n_other: int,
            extra: Sequence[Any] = (), line: bool = True) -> None:
    handles = [Line2D([], [], color=col, marker=mk, markersize=6, linewidth=1.4 if line else 0,
                      label=board.label(v)) for v, (col, mk) in colours.items()]
    if n_other:
        handles.append(Line2D([], [], color=OTHER_COLOR, marker="o", markersize=3, linewidth=0.9 if line else 0,
                              label=f"{n_other} other method{'s' if n_other > 1 else ''} (grey)"))
    ax.legend(handles=[*handles, *extra], loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              handlelength=2.2)


def plot_bytes(board: Leaderboard) -> Plot | None:
    """Quality vs stored bytes for one page (one or two panels), or None when no cell is rankable."""
    cells = [c for c in board.rows() if rankable(c) and c["stored_bytes"]]
    if not cells:
        return None
    colours = highlighted(board, [c for c in cells if c["variant"] != "dense"])
    ys_all = [c["main"] for c in cells]
    dense = [c for c in cells if c["variant"] == "dense"]
    top_ys = [c["main"] for c in cells if c["variant"] in colours] + [c["main"] for c in dense]
    log_y = _log_y(board, ys_all)
    span = max(ys_all) - min(ys_all)
    zoom = bool(colours) and not log_y and span > 0 and (max(top_ys) - min(top_ys)) < 0.5 * span
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        f = _Figure("bytes", (12.0, 4.6) if zoom else (8.6, 4.6), 2 if zoom else 1)
        allowed = sorted({(c["allowed_bytes"], c["budget"]) for c in board.rows() if c["allowed_bytes"]})
        xs_all = [c["stored_bytes"] for c in cells] + [a for a, _ in allowed]
        lo, hi = min(xs_all) / 1.6, max(xs_all) * 1.6
        front = sorted((c for c in cells if c["pareto_bytes"]), key=lambda c: (c["stored_bytes"], c["main"]))
        others = [v for v in board.methods if v != "dense" and v not in colours
                  and any(c["variant"] == v for c in cells)]
        for ax in f.axes:
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            for a, _spec in allowed:
                ax.axvline(a, color="#afb8c1", linestyle=":", linewidth=0.9, zorder=1)
            if dense:
                ax.axhline(dense[0]["main"], color=LABEL_COLOR, linestyle=(0, (1, 2)), linewidth=0.9, zorder=1)
            _front(ax, [c["stored_bytes"] for c in front], [c["main"] for c in front], "post")
            for variant in [*others, *colours]:  # grey first, coloured on top
                mine = sorted((c for c in cells if c["variant"] == variant), key=lambda c: c["stored_bytes"])
                color, marker = colours.get(variant, (OTHER_COLOR, "o"))
                grey = variant not in colours
                ax.plot([c["stored_bytes"] for c in mine], [c["main"] for c in mine], color=color,
                        linewidth=0.9 if grey else 1.5, zorder=2 if grey else 4)
                for c in mine:
                    f.point(ax, c["stored_bytes"], c["main"], _tip(board, c), color=color, marker=marker,
                            s=10 if grey else 36, zorder=2 if grey else 4)
                    if not grey:
                        _errorbar(ax, c["stored_bytes"], c, color)
            for c in dense:
                f.point(ax, c["stored_bytes"], c["main"], _tip(board, c), color=LABEL_COLOR, marker="*", s=60,
                        zorder=4)
            ax.set_xlim(lo, hi)
            ax.xaxis.set_major_locator(FixedLocator(_byte_ticks(lo, hi)))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt_bytes_short(x)))
            ax.set_xlabel("stored bytes (log scale)")
        arrow = "higher is better" if board.higher_is_better else "lower is better"
        f.axes[0].set_ylabel(f"{board.metric} ({arrow})")
        f.axes[0].set_title(f"{board.task} ({board.track}, {board.device}): quality vs stored bytes", loc="left")
        if zoom:
            pad = 0.08 * (max(top_ys) - min(top_ys) or 1e-3)
            f.axes[1].set_ylim(min(top_ys) - pad, max(top_ys) + pad)
            f.axes[1].set_title(f"zoom on the {len(colours)} coloured methods", loc="left")
        renderer = f.canvas.get_renderer()
        for ax in f.axes:
            _stacked_labels(ax, [(a, spec) for a, spec in allowed], renderer)
        extra = [Line2D([], [], color=LABEL_COLOR, linestyle=(0, (1, 2)), linewidth=0.9, label="dense score")] \
            if dense else []
        if front:
            extra.append(_front_handle("Pareto front"))
        _legend(f.axes[-1], board, colours, len(others), extra)
        return f.render()


def speed_budgets(board: Leaderboard, cells: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The panels of the speed plot: the headline budgets with a measured cell, else the three tightest."""
    present = [b for b in board.budgets if any(c["budget"] == b for c in cells)]
    heads = tuple(b for b in HEADLINE_BUDGETS if b in present)
    return heads or tuple(present[-3:])


def plot_speed(board: Leaderboard) -> Plot | None:
    """Quality vs lookup throughput, one panel per budget, or None when no cell has both."""
    cells = [c for c in board.rows() if rankable(c) and c["throughput_ratio"] and c["variant"] != "dense"]
    budgets = speed_budgets(board, cells)
    cells = [c for c in cells if c["budget"] in budgets]
    if not cells:
        return None
    colours = highlighted(board, cells)
    others = [v for v in board.methods if v != "dense" and v not in colours and any(c["variant"] == v for c in cells)]
    log_y = _log_y(board, [c["main"] for c in cells])
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        f = _Figure("speed", (3.5 * len(budgets) + 2.2, 4.2), len(budgets), sharey=True)
        xs_all = [c["throughput_ratio"] for c in cells] + [1.0]
        lo, hi = min(xs_all) / 1.4, max(xs_all) * 1.4
        ticks = [t for t in (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100) if lo <= t <= hi]
        for ax, budget in zip(f.axes, budgets, strict=True):
            mine = [c for c in cells if c["budget"] == budget]
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            ax.axvline(1.0, color="#afb8c1", linestyle=":", linewidth=0.9, zorder=1)
            flags = pareto_flags([c["throughput_ratio"] for c in mine], [c["main"] for c in mine],
                                 maximize_x=True, maximize_y=board.higher_is_better)
            front = sorted((c for c, fl in zip(mine, flags, strict=True) if fl),
                           key=lambda c: (c["throughput_ratio"], -c["main"]))
            _front(ax, [c["throughput_ratio"] for c in front], [c["main"] for c in front], "pre")
            for variant in [*others, *colours]:
                color, marker = colours.get(variant, (OTHER_COLOR, "o"))
                grey = variant not in colours
                for c in (c for c in mine if c["variant"] == variant):
                    f.point(ax, c["throughput_ratio"], c["main"], _tip(board, c, speed=True), color=color,
                            marker=marker, s=12 if grey else 40, zorder=2 if grey else 4)
                    if not grey:
                        _errorbar(ax, c["throughput_ratio"], c, color)
            ax.set_xlim(lo, hi)
            ax.xaxis.set_major_locator(FixedLocator(ticks or [1.0]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}x"))
            ax.set_title(f"at {budget}", loc="left")
            ax.set_xlabel("lookup speed vs dense (log)")
        arrow = "higher is better" if board.higher_is_better else "lower is better"
        f.axes[0].set_ylabel(f"{board.metric} ({arrow})")
        f.fig.suptitle(f"{board.task} ({board.track}, {board.device}): quality vs lookup throughput, same run "
                       "(>1x is faster than the dense table)", x=0.01, ha="left", fontsize=10)
        renderer = f.canvas.get_renderer()
        for ax in f.axes:
            _stacked_labels(ax, [(1.0, "dense speed")], renderer)
        extra = [_front_handle("Pareto front (per panel)")]
        _legend(f.axes[-1], board, colours, len(others), extra, line=False)
        return f.render()
