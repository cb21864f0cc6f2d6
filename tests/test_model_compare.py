"""The two-encoder ranking page (issue 23): ranks, interval ties and Kendall's tau from posthoc records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compbench.bench.results.record import Record
from compbench.leaderboard.model_compare import agreement, comparison_rows, render_markdown

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "results" / "posthoc" / "stsb+model=all-mpnet-base-v2" / "pq" / "40x" / "cpu-1t-s0.json"


def _rec(model: str, method: str, score: float, half: float = 0.01, budget: str = "40x") -> Record:
    d = json.loads(TEMPLATE.read_text())
    d["key"] = f"posthoc/stsb+{model}/{method}/{budget}/cpu-1t-s0"
    d["identity"]["model"] = model
    d["method"]["name"] = method
    d["budget"]["spec"] = budget
    d["metrics"]["main"] = score
    d["metrics"]["interval"].update(low=score - half, high=score + half)
    return Record.model_validate(d)


def test_ranks_ties_and_agreement() -> None:
    recs = [_rec("all-MiniLM-L6-v2", "a", 0.80), _rec("all-MiniLM-L6-v2", "b", 0.70),
            _rec("all-MiniLM-L6-v2", "c", 0.695), _rec("all-MiniLM-L6-v2", "d", 0.5),
            _rec("m2", "a", 0.81), _rec("m2", "b", 0.60), _rec("m2", "c", 0.65), _rec("m2", "d", 0.4),
            _rec("m2", "only-here", 0.9)]
    rows = comparison_rows(recs)[("stsb", "40x")]
    by = {r["method"]: r for r in rows}
    assert set(by) == {"a", "b", "c", "d"}  # a method on one encoder only is not compared
    assert [by[m]["ref"]["rank"] for m in "abcd"] == [1, 2, 3, 4]
    assert [by[m]["other"]["rank"] for m in "abcd"] == [1, 3, 2, 4]
    assert by["b"]["ref"]["tied"] and by["c"]["ref"]["tied"] and not by["a"]["ref"]["tied"]
    assert not by["b"]["other"]["tied"]
    tau, p = agreement(rows)
    assert tau == pytest.approx(2 / 3)
    md = render_markdown(comparison_rows(recs))
    assert "Kendall tau-b 0.67" in md and "| b | #2~ 0.7000 [0.690, 0.710]" in md and "down 1" in md
