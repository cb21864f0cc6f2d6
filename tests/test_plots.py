"""Readable plots (issue 35): the top 8 in a colour-blind-safe palette and the rest grey, one panel per headline
budget for speed, a zoom panel on the cluster, no overlapping budget labels, a hover tooltip on every point of
the HTML view, and bytes that depend only on the records. All records are synthetic."""

from __future__ import annotations

import re

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from compbench.leaderboard import plots
from compbench.leaderboard.frame import aggregate, to_frame
from compbench.leaderboard.ranking import build_leaderboard, headline_order, rankable
from test_report import REF, make_record

#: twelve methods; at 40x their order is m00 best ... m11 worst, at 10x the reverse
N = 12


def _records(higher_is_better: bool = True, budgets: tuple[float, ...] = (10, 40, 100)) -> list:
    recs = [make_record("dense", 1, 0.82 if higher_is_better else 20.0, stored=REF, throughput=1.0,
                        higher_is_better=higher_is_better)]
    for i in range(N):
        for b in budgets:
            good = (N - i) if b == 40 else (i + 1)  # 40x favours m00, the others favour m11
            score = 0.3 + 0.04 * good if higher_is_better else 20.0 * (1 + 3 * (N + 1 - good))
            recs.append(make_record(f"m{i:02d}", b, score, throughput=0.1 + 0.05 * i,
                                    higher_is_better=higher_is_better))
    return recs


def _board(records: list):
    return build_leaderboard(aggregate(to_frame(records)), "posthoc", "stsb", "cpu-1t")


def _visible_text(svg: str) -> str:
    """The SVG's drawn text (legend, titles, labels) without the hover tooltips."""
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", re.sub(r"<title>.*?</title>", "", svg)))


def test_headline_order_ranks_by_40x_not_by_the_mean() -> None:
    board = _board(_records())
    assert headline_order(board) == tuple(f"m{i:02d}" for i in range(N))
    assert "dense" not in headline_order(board)


def test_top_eight_in_okabe_ito_colours_and_the_rest_grey() -> None:
    board = _board(_records())
    cells = [c for c in board.rows() if rankable(c) and c["variant"] != "dense"]
    colours = plots.highlighted(board, cells)
    assert list(colours) == [f"m{i:02d}" for i in range(8)]  # the 8 best at 40x, in rank order
    assert [c for c, _ in colours.values()] == list(plots.OKABE_ITO)
    assert len({m for _, m in colours.values()}) == 8  # and a distinct marker each (colour is not the only cue)
    plot = plots.plot_bytes(board)
    assert plot is not None
    text = _visible_text(plot.svg)
    for i in range(8):
        assert f"m{i:02d}" in text
    for i in range(8, N):
        assert f"m{i:02d}" not in text  # grey: no legend entry, hover for the name
    assert "4 other methods (grey)" in text and "Pareto front" in text and "dense score" in text


def test_every_point_has_a_tooltip_with_method_budget_score_interval() -> None:
    board = _board(_records())
    plot = plots.plot_bytes(board)
    assert plot is not None
    tips = re.findall(r'<g id="bytes-pt\d+" class="pt"><title>([^<]*)</title>', plot.svg)
    n_cells = sum(1 for c in board.rows() if rankable(c) and c["stored_bytes"])
    panels = 2 if "zoom on the" in plot.svg else 1
    assert len(tips) == n_cells * panels
    m03 = [t for t in tips if t.startswith("m03 · 40x · spearman ")]
    assert m03 and re.fullmatch(r"m03 · 40x · spearman 0\.\d+ \(no interval\) · [\d.]+ KiB \([\d.]+x\)", m03[0]), m03
    recs = [*_records(), *(make_record("seeded", 40, 0.5 + 0.01 * s, seed=s) for s in range(3))]
    plot = plots.plot_bytes(_board(recs))
    assert plot is not None and re.search(r"<title>seeded · 40x · spearman 0\.51 ± 0\.01 \(std over seeds\)", plot.svg)
    assert "<?xml" not in plot.svg and "<metadata" not in plot.svg and plot.svg.startswith("<svg")


def test_tooltips_are_escaped() -> None:
    recs = _records()
    recs.append(make_record("<b>x</b>", 40, 0.9))
    plot = plots.plot_bytes(_board(recs))
    assert plot is not None
    assert "<b>x</b>" not in plot.svg and "&lt;b&gt;x&lt;/b&gt;" in plot.svg


def test_speed_has_one_panel_per_headline_budget_with_its_own_front() -> None:
    board = _board(_records())
    plot = plots.plot_speed(board)
    assert plot is not None
    text = _visible_text(plot.svg)
    assert "at 10x" in text and "at 40x" in text and "at 100x" in text
    assert "2 other" not in text and "4 other methods (grey)" in text
    tips = re.findall(r'<g id="speed-pt\d+" class="pt"><title>([^<]*)</title>', plot.svg)
    assert len(tips) == 3 * N and all("x dense" in t for t in tips)  # dense itself is the 1x line, not a point


def test_speed_falls_back_to_the_tightest_budgets() -> None:
    board = _board(_records(budgets=(2, 3, 4, 5)))
    assert plots.speed_budgets(board, [c for c in board.rows() if rankable(c)]) == ("3x", "4x", "5x")


def test_zoom_panel_only_when_the_top_cluster_is_narrow() -> None:
    close = [make_record("dense", 1, 0.82, stored=REF, throughput=1.0)]
    close += [make_record(f"c{i}", b, 0.80 - 0.002 * i - 0.0001 * b) for i in range(8) for b in (10, 40)]
    plot = plots.plot_bytes(_board(close))
    assert plot is not None and "zoom on the" not in _visible_text(plot.svg)  # nothing to zoom on
    awful = [make_record("awful", b, 0.05, stored=int(REF / b * 0.5)) for b in (10, 40)]
    plot = plots.plot_bytes(_board(close + awful))  # one grey outlier squeezes the cluster: zoom on it
    assert plot is not None and "zoom on the 8 coloured methods" in _visible_text(plot.svg)


def test_perplexity_gets_a_log_axis() -> None:
    board = _board(_records(higher_is_better=False))
    assert plots._log_y(board, [c["main"] for c in board.rows() if rankable(c)])
    plot = plots.plot_bytes(board)
    assert plot is not None and "lower is better" in _visible_text(plot.svg)


def test_budget_labels_never_overlap() -> None:
    with matplotlib.rc_context(plots.RC):
        fig = Figure(figsize=(6, 3), dpi=plots.DPI)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.set_xscale("log")
        ax.set_xlim(1e5, 1e8)
        marks = [(2e5, "100x"), (2.1e5, "97x"), (2.2e5, "90x"), (5e6, "10x"), (5.5e6, "7.5x"), (5e7, "1x")]
        renderer = canvas.get_renderer()
        plots._stacked_labels(ax, marks, renderer)
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert sorted(t.get_text() for t in ax.texts) == sorted(m for _, m in marks)  # each once
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    assert len({round(b.y0) for b in boxes}) >= 3  # the crowded three went on three rows


def test_same_records_same_bytes() -> None:
    recs = _records()
    a, b = plots.plot_bytes(_board(recs)), plots.plot_bytes(_board(list(reversed(recs))))
    assert a is not None and b is not None
    assert a.png == b.png and a.svg == b.svg
    s1, s2 = plots.plot_speed(_board(recs)), plots.plot_speed(_board(recs))
    assert s1 is not None and s2 is not None and s1.svg == s2.svg
