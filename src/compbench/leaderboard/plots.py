"""Pareto plots of one leaderboard page, as byte-deterministic PNG.

- :func:`plot_bytes`: main score vs stored bytes (log x), one line per method across its budgets,
  dotted verticals at each budget's allowed bytes, the dense score as a dotted horizontal, and the
  Pareto front (fewer bytes, better score) as a thick grey staircase with ringed points;
- :func:`plot_speed`: main score vs lookup throughput ratio vs dense (log x), one marker per cell,
  Pareto front (faster, better score) likewise.

Only rankable cells (ok, within budget) are drawn. Determinism: the object-oriented API with the Agg
canvas (no pyplot state), matplotlib's default style (a user's matplotlibrc is ignored), the DejaVu
Sans font bundled with matplotlib, mathtext off (a ``$`` in a method name stays text), a fixed size
and DPI, and PNG metadata without the ``Software`` entry. The bytes therefore depend only on the
records and the matplotlib version.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from compbench.leaderboard.table import Leaderboard, rankable

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
    "path.simplify": True,
}

FIGSIZE = (8.0, 4.6)
DPI = 120
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "p", "*")
FRONT_COLOR = "#57606a"


def method_styles(variants: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A (color, marker) per method variant, assigned in sorted order (stable within one report)."""
    out = {}
    for i, v in enumerate(sorted(set(variants))):
        out[v] = (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE) + i) % len(MARKERS)])
    return out


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


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.15,
                facecolor="white")
    return buf.getvalue()


def _new_axes() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, facecolor="white")
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def _errorbars(ax: Any, xs: list[float], cells: list[dict[str, Any]], color: str) -> None:
    """The 95% interval of each point when known, else ± the std over seeds."""
    for x, c in zip(xs, cells, strict=True):
        low, high = c.get("ci_low"), c.get("ci_high")
        if low is not None and high is not None:
            yerr = [[max(0.0, c["main"] - low)], [max(0.0, high - c["main"])]]
            ax.errorbar([x], [c["main"]], yerr=yerr, fmt="none", ecolor=color, elinewidth=0.9, capsize=2, zorder=3)
        elif c["main_std"]:
            ax.errorbar([x], [c["main"]], yerr=[c["main_std"]], fmt="none", ecolor=color, elinewidth=0.9,
                        capsize=2, zorder=3)


def _legend(ax: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, handlelength=2.2)


def plot_bytes(board: Leaderboard, styles: dict[str, tuple[str, str]]) -> bytes | None:
    """PNG of score vs stored bytes for one page, or None when no cell is rankable."""
    cells = [c for c in board.rows() if rankable(c) and c["stored_bytes"]]
    if not cells:
        return None
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        fig, ax = _new_axes()
        ax.set_xscale("log")
        # a failed cell that never reached the table has no allowed bytes (0): no budget line for it
        allowed = sorted({(c["allowed_bytes"], c["budget"]) for c in board.rows() if c["allowed_bytes"]})
        xs_all = [c["stored_bytes"] for c in cells] + [a for a, _ in allowed]
        lo, hi = min(xs_all) / 1.6, max(xs_all) * 1.6
        for a, spec in allowed:
            ax.axvline(a, color="#afb8c1", linestyle=":", linewidth=0.9, zorder=1)
            ax.annotate(spec, (a, 0.0), xycoords=("data", "axes fraction"), xytext=(2, 3),
                        textcoords="offset points", fontsize=7, color="#6e7781")
        dense = [c for c in cells if c["variant"] == "dense"]
        if dense:
            ax.axhline(dense[0]["main"], color="#6e7781", linestyle=(0, (1, 2)), linewidth=0.9, zorder=1,
                       label="dense score")
        front = sorted((c for c in cells if c["pareto_bytes"]), key=lambda c: (c["stored_bytes"], c["main"]))
        if front:
            ax.step([c["stored_bytes"] for c in front], [c["main"] for c in front], where="post",
                    color=FRONT_COLOR, alpha=0.35, linewidth=5, solid_capstyle="round", zorder=2,
                    label="Pareto front")
            ax.scatter([c["stored_bytes"] for c in front], [c["main"] for c in front], s=120, facecolors="none",
                       edgecolors="black", linewidths=1.2, zorder=5)
        for variant in board.methods:
            mine = sorted((c for c in cells if c["variant"] == variant), key=lambda c: c["stored_bytes"])
            if not mine:
                continue
            color, marker = styles[variant]
            xs, ys = [c["stored_bytes"] for c in mine], [c["main"] for c in mine]
            ax.plot(xs, ys, color=color, marker=marker, markersize=6, linewidth=1.4, label=board.label(variant),
                    zorder=4)
            _errorbars(ax, xs, mine, color)
            for c in mine:
                ax.annotate(c["budget"], (c["stored_bytes"], c["main"]), xytext=(4, 4), textcoords="offset points",
                            fontsize=7, color=color)
        ax.set_xlim(lo, hi)
        ticks = _byte_ticks(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt_bytes_short(x)))
        arrow = "higher is better" if board.higher_is_better else "lower is better"
        ax.set_xlabel("stored bytes (log scale)")
        ax.set_ylabel(f"{board.metric} ({arrow})")
        ax.set_title(f"{board.task} ({board.track}, {board.device}): quality vs stored bytes", loc="left")
        _legend(ax)
        return _png(fig)


def plot_speed(board: Leaderboard, styles: dict[str, tuple[str, str]]) -> bytes | None:
    """PNG of score vs lookup throughput ratio for one page, or None when no cell has both."""
    cells = [c for c in board.rows() if rankable(c) and c["throughput_ratio"]]
    if not cells:
        return None
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        fig, ax = _new_axes()
        ax.set_xscale("log")
        xs_all = [c["throughput_ratio"] for c in cells] + [1.0]
        lo, hi = min(xs_all) / 1.4, max(xs_all) * 1.4
        ax.axvline(1.0, color="#afb8c1", linestyle=":", linewidth=0.9, zorder=1)
        ax.annotate("dense speed", (1.0, 0.0), xycoords=("data", "axes fraction"), xytext=(2, 3),
                    textcoords="offset points", fontsize=7, color="#6e7781")
        front = sorted((c for c in cells if c["pareto_speed"]), key=lambda c: (c["throughput_ratio"], -c["main"]))
        if front:
            ax.step([c["throughput_ratio"] for c in front], [c["main"] for c in front], where="pre",
                    color=FRONT_COLOR, alpha=0.35, linewidth=5, solid_capstyle="round", zorder=2,
                    label="Pareto front")
            ax.scatter([c["throughput_ratio"] for c in front], [c["main"] for c in front], s=120,
                       facecolors="none", edgecolors="black", linewidths=1.2, zorder=5)
        for variant in board.methods:
            mine = sorted((c for c in cells if c["variant"] == variant), key=lambda c: c["throughput_ratio"])
            if not mine:
                continue
            color, marker = styles[variant]
            xs, ys = [c["throughput_ratio"] for c in mine], [c["main"] for c in mine]
            ax.scatter(xs, ys, color=color, marker=marker, s=36, label=board.label(variant), zorder=4)
            _errorbars(ax, xs, mine, color)
            for c in mine:
                ax.annotate(c["budget"], (c["throughput_ratio"], c["main"]), xytext=(4, 4),
                            textcoords="offset points", fontsize=7, color=color)
        ax.set_xlim(lo, hi)
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo <= t <= hi]
        ax.xaxis.set_major_locator(FixedLocator(ticks or [1.0]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}x"))
        arrow = "higher is better" if board.higher_is_better else "lower is better"
        ax.set_xlabel("lookup throughput vs dense, same run (log scale; >1x is faster)")
        ax.set_ylabel(f"{board.metric} ({arrow})")
        ax.set_title(f"{board.task} ({board.track}, {board.device}): quality vs lookup speed", loc="left")
        _legend(ax)
        return _png(fig)
