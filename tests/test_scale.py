"""The scale track: synthetic tables with MiniLM's spectrum, cells recorded like any other, and the cost-curve
report's exponents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from compbench.bench.cell.runner import run_cell
from compbench.bench.results.record_store import ResultStore
from compbench.cli import main
from compbench.config import RunConfig
from compbench.leaderboard.scale_report import exponent, render_markdown, summarize, write_scale_report
from compbench.tasks import TASKS, get_task
from compbench.tasks.scale import MEAN_SQ_ROW_NORM, SPECTRUM_BETA, ScaleTask, synthetic_table


def _tiny(name: str, v: int, d: int) -> None:
    if f"scale/{name}" in TASKS:
        return
    from compbench.tasks.task_base import TaskCard

    cls = type(name, (ScaleTask,), {"source": "synthetic", "shape": (v, d),
                                    "card": TaskCard(name, 1, "scale", "mean_row_cosine", True, 0.002, name, "test")})
    TASKS.register(f"scale/{name}")(cls)


def _loglog_slope(s: np.ndarray) -> float:
    i = np.arange(1, len(s) + 1)
    return float(-np.polyfit(np.log(i), np.log(s), 1)[0])


def test_synthetic_table_has_the_fitted_spectrum_and_norm() -> None:
    x = synthetic_table(8192, 256)
    assert x.shape == (8192, 256) and x.dtype == torch.float32
    assert torch.equal(x[:100], synthetic_table(8192, 256)[:100])  # deterministic
    s = torch.linalg.svdvals(x.double()).numpy()
    assert _loglog_slope(s) == pytest.approx(SPECTRUM_BETA, abs=0.05)
    assert float(x.square().sum(1).mean()) == pytest.approx(MEAN_SQ_ROW_NORM, rel=0.05)
    assert float(x.abs().argmax(1).float().std()) > 20  # not axis-aligned: the largest coordinate moves around


def test_the_spectrum_constants_are_minilms() -> None:
    from compbench.models.encoder import SentenceEncoder

    t = SentenceEncoder(None).token_table.detach().double()
    assert _loglog_slope(torch.linalg.svdvals(t).numpy()) == pytest.approx(SPECTRUM_BETA, abs=0.005)
    assert float(t.square().sum(1).mean()) == pytest.approx(MEAN_SQ_ROW_NORM, rel=0.01)


def test_scale_tasks_are_registered_with_their_shapes() -> None:
    assert get_task("scale", "synth-v256k-d4096").shape == (262_144, 4096)
    assert get_task("scale", "minilm").shape == (30_522, 384)
    assert get_task("scale", "glove").shape == (400_000, 50)


def test_exponent_of_a_power_law() -> None:
    xs = [1e5, 1e6, 1e7, 1e8]
    assert exponent([(x, 3 * x ** 1.5) for x in xs]) == pytest.approx(1.5)
    assert exponent([(1e5, 1.0), (1e6, 2.0)]) is None  # fewer than 3 points: no exponent


def test_scale_cells_and_report(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    for v in (1000, 2000, 4000):
        _tiny(f"test-v{v}", v, 32)
        rec = run_cell(RunConfig(method="svd", budget="8x", track="scale", task=f"test-v{v}", threads=1,
                                 lookup_iters=3), store, references=False)
        assert rec.status == "ok" and rec.key == f"scale/test-v{v}/svd/8x/cpu-1t-s0"
        assert rec.identity["model"] == f"test-v{v}" and rec.identity["width"] == 32
        assert rec.model["shape"] == [v, 32] and 0 < rec.metrics.main <= 1
        assert rec.measurements["memory"]["phases"]["fit"]["seconds"] > 0
    records, _ = store.load_all()
    res = write_scale_report(records, tmp_path / "out", "8x")
    assert res["rows"] == 3 and res["summary"][0]["time_exponent"] is not None
    assert res["summary"][0]["largest"] == "test-v4000 (4,000 x 32)"
    assert (tmp_path / "out" / "scale-fit-time.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "out" / "scale.md").read_text()
    assert "| svd |" in md and "| shared | load |" in md
    fit = records[0].measurements["memory"]["phases"]["fit"]
    assert fit["load_avg_1m"] >= 0  # measured at the fit's end, shown in the load column
    assert all(line.count("|") == 13 for line in md.splitlines() if line.startswith("| svd | test-v"))
    cli = CliRunner().invoke(main, ["scale", "--report-only", "--budgets", "8x", "--results",
                                    str(tmp_path / "results"), "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    assert (tmp_path / "cli" / "scale.json").is_file()


def test_a_timeout_is_listed_with_the_limit_it_ran_under() -> None:
    base = {"method": "rq", "budget": "40x", "fit_peak_bytes": None, "stored_bytes": None, "ratio": None,
            "cosine": None, "error": None, "threads": 1, "cells_at_once": 1, "fit_load": None}
    rows = [dict(base, task="big", status="timeout", rows=262144, dim=4096, size=262144 * 4096, fit_s=None,
                 limit_s=900.0),
            dict(base, task="old", status="timeout", rows=1000, dim=8, size=8000, fit_s=None, limit_s=None),
            dict(base, task="ok", status="ok", rows=100, dim=8, size=800, fit_s=1.0, limit_s=None)]
    s = summarize(rows)[0]
    assert s["not_ok"] == ["big: timeout (900 s)", "old: timeout"] and s["largest"] == "ok (100 x 8)"
    md = render_markdown(rows, [s], "40x")
    assert "| rq | big | 262,144 | 4096 | timeout (900 s) |" in md
