"""Uncertainty: bootstrap intervals, paired comparisons and ties (compbench.stats, the leaderboard's ranks)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from compbench.stats import Items, interval, paired_difference, ratio_interval, score_of


def _sts(n: int, noise: float, seed: int = 0) -> Items:
    rng = np.random.default_rng(seed)
    gold = rng.uniform(0, 5, n)
    return Items("spearman", gold + noise * rng.normal(size=n), gold)


def test_score_of_matches_scipy() -> None:
    it = _sts(500, 1.0)
    assert score_of(it) == pytest.approx(sps.spearmanr(it.gold, it.values[0]).statistic, abs=1e-12)
    acc = Items("mean", np.array([1, 0, 1, 1.0]))
    assert score_of(acc) == 0.75


def test_intervals_shrink_as_items_grow() -> None:
    widths = []
    for n in (100, 400, 1600):
        ci = interval(_sts(n, 2.0))
        assert ci["low"] < score_of(_sts(n, 2.0)) < ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.35)  # ~ 1/sqrt(n)


def test_bootstrap_is_identical_under_a_seed_and_differs_across_seeds() -> None:
    it = _sts(300, 1.5)
    assert interval(it, seed=3) == interval(it, seed=3)
    assert interval(it, seed=3) != interval(it, seed=4)
    b = _sts(300, 1.6, seed=1)
    b = Items("spearman", b.values[0], it.gold)
    assert paired_difference(it, b, seed=5) == paired_difference(it, b, seed=5)


def test_a_constant_shift_of_every_item_is_significant() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 2000)
    a, b = Items("mean", base + 0.01), Items("mean", base)
    cmp = paired_difference(a, b)
    assert cmp["significant"] and cmp["diff"] == pytest.approx(0.01) and cmp["low"] > 0
    # the same shift between unpaired noisy samples of this size would not be: the pairing is what detects it


def test_two_identical_methods_are_tied() -> None:
    it = _sts(1379, 1.0)
    cmp = paired_difference(it, Items("spearman", it.values[0].copy(), it.gold))
    assert not cmp["significant"] and cmp["diff"] == 0.0 and cmp["low"] == cmp["high"] == 0.0


def test_seed_variance_widens_the_interval() -> None:
    """Several seeds: the two-level bootstrap adds the spread between seeds to the items' spread."""
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 400)
    same = Items("spearman", np.stack([gold + rng.normal(size=400)] * 3), gold)
    spread = Items("spearman", np.stack([gold + s * rng.normal(size=400) for s in (0.5, 1.0, 2.0)]), gold)
    w_same = interval(same)["high"] - interval(same)["low"]
    w_spread = interval(spread)["high"] - interval(spread)["low"]
    assert interval(same)["n_seeds"] == 3 and w_spread > w_same


def test_retention_interval_brackets_the_ratio() -> None:
    dense = _sts(800, 0.5)
    cand = Items("spearman", dense.values[0] + np.random.default_rng(1).normal(size=800), dense.gold)
    r = ratio_interval(cand, dense)
    assert r is not None and r["low"] < score_of(cand) / score_of(dense) < r["high"] < 1.0


def test_items_round_trip_compactly() -> None:
    it = _sts(1379, 1.0)
    back = Items.from_npz(it.to_npz())
    assert back.kind == "spearman" and back.n_items == 1379
    assert score_of(back) == pytest.approx(score_of(it), abs=1e-6)  # float32 keeps the ranks
    acc = Items("mean", (np.arange(1000) % 3 == 0).astype(float))
    assert np.array_equal(Items.from_npz(acc.to_npz()).values, acc.values) and len(acc.to_npz()) < 1000
    with pytest.raises(ValueError, match="gold"):
        Items("spearman", np.zeros(3))


def test_leaderboard_ranks_ties_as_ranges_and_marks_missing_intervals() -> None:
    """At a budget, a cell not significantly different from the best shares rank #1–2; a clearly worse one keeps its
    rank; a record without per-item outcomes shows 'no interval'."""
    from compbench.leaderboard.frame import aggregate, to_frame
    from compbench.leaderboard.ranking import build_leaderboards
    from compbench.leaderboard.render import page_markdown
    from test_report import make_record

    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 1379)
    base = gold + rng.normal(size=1379)
    items = {"a": Items("spearman", base, gold), "b": Items("spearman", base + 0.01 * rng.normal(size=1379), gold),
             "c": Items("spearman", gold + 3 * rng.normal(size=1379), gold)}
    recs = []
    for name, it in items.items():
        r = make_record(name, 10, score_of(it))
        r.measurements["items"] = {"sha256": "x"}
        r.metrics.interval = interval(it)
        recs.append(r)
    recs.append(make_record("old", 10, 0.2))
    by_key = {r.key: items[r.method.name] for r in recs if r.method.name in items}
    (board,) = build_leaderboards(aggregate(to_frame(recs)), items=by_key)
    a, b, c = (board.cell(m, "10x") for m in ("a", "b", "c"))
    assert a["tied"] and b["tied"] and (a["rank"], a["rank_high"]) == (1, 2) == (b["rank"], b["rank_high"])
    assert not c["tied"] and c["rank"] == 3 and c["vs_best"]["significant"]
    page = page_markdown(board, {}, "../../index.md")
    assert "#1–2" in page and "no interval" in page
    assert f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}]" in page
