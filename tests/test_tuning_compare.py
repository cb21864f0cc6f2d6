"""The before/after-tuning page (issue 20): default and tuned variants side by side, rankings before and after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compbench.bench.results.record import Record
from compbench.leaderboard.tuning_compare import agreement, has_tuning_space, render_markdown, tuning_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "results" / "posthoc" / "stsb" / "pq" / "40x" / "cpu-1t-s0.json"
TUNED = ROOT / "results" / "posthoc" / "stsb" / "pq+tuned" / "40x" / "cpu-1t-s0.json"


def _rec(method: str, score: float, *, tuned: bool = False, budget: str = "40x", model: str = "all-MiniLM-L6-v2",
         half: float = 0.01) -> Record:
    d = json.loads((TUNED if tuned else DEFAULT).read_text())
    d["key"] = f"posthoc/stsb/{method}{'+tuned' if tuned else ''}/{budget}/cpu-1t-s0"
    d["identity"]["model"] = model
    d["method"]["name"] = method
    d["budget"]["spec"] = budget
    d["metrics"]["main"] = score
    d["metrics"]["interval"].update(low=score - half, high=score + half)
    return Record.model_validate(d)


def test_before_and_after_ranks_use_the_best_known_variant() -> None:
    recs = [_rec("pq", 0.70), _rec("pq", 0.80, tuned=True), _rec("rq", 0.75), _rec("svd", 0.50),
            _rec("svd", 0.745, tuned=True), _rec("kmeans", 0.60)]
    rows = tuning_rows(recs)[("posthoc", "stsb", "all-MiniLM-L6-v2", "40x")]
    by = {r["method"]: r for r in rows}
    assert [by[m]["before_rank"] for m in ("rq", "pq", "kmeans", "svd")] == [1, 2, 3, 4]
    assert [by[m]["after_rank"] for m in ("pq", "rq", "svd", "kmeans")] == [1, 2, 3, 4]
    assert by["rq"]["after_tied"] and by["svd"]["after_tied"]  # 0.75 vs 0.745 with +-0.01: not a finding
    assert not by["pq"]["after_tied"]
    tau, _ = agreement(rows)
    assert tau == pytest.approx(1 / 3)  # 4 concordant pairs, 2 discordant (rq/pq, kmeans/svd)
    md = render_markdown(tuning_rows(recs))
    assert "## posthoc/stsb (all-MiniLM-L6-v2) at 40x: 2 of 4 methods tuned" in md
    assert "| pq | 0.7000 [0.690, 0.710] (41.6x) | #2 | 0.8000 [0.790, 0.810] (40.8x) | +0.1000 | #1 | up 1 |" in md
    assert "| rq | 0.7500" in md and "no tuning space (default)" in md  # rq declares no space
    assert "tuned cell not run yet (default kept)" in md  # kmeans declares one


def test_groups_without_a_tuned_record_and_other_encoders_stay_apart() -> None:
    recs = [_rec("pq", 0.70, budget="10x"), _rec("rq", 0.75, budget="10x"),  # no tuned record at 10x: no table
            _rec("pq", 0.70), _rec("pq", 0.72, tuned=True), _rec("rq", 0.9, model="all-mpnet-base-v2")]
    groups = tuning_rows(recs)
    assert list(groups) == [("posthoc", "stsb", "all-MiniLM-L6-v2", "40x")]
    assert [r["method"] for r in groups[("posthoc", "stsb", "all-MiniLM-L6-v2", "40x")]] == ["pq"]


def test_has_tuning_space() -> None:
    assert has_tuning_space("pq") and has_tuning_space("ade")
    assert not has_tuning_space("rq") and not has_tuning_space("no-such-method")
