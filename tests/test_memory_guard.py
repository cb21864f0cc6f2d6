"""The memory check (issue 23): a post-hoc cell whose method's peak estimate exceeds the memory available is
refused before it loads anything -- one line and exit 1 from ``run``, a ``skipped`` record (``skip: memory``)
in a sweep, which a later sweep with enough memory runs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import test_sweep_fakes
from compbench.bench.cell.context import TRACK_RUNNERS
from compbench.bench.cell.memory_guard import ENV, available_bytes, check_memory, parse_bytes
from compbench.bench.cell.plan import prepare_sweep
from compbench.bench.results.record_store import ResultStore
from compbench.bench.sweeps.suite import parse_suite
from compbench.bench.sweeps.sweep import make_executor, run_sweep
from compbench.cli import main
from compbench.errors import MemoryRefusal, UsageError
from compbench.methods import METHODS, get_method

TESTS = str(Path(__file__).resolve().parent)


def test_parse_bytes_and_the_override() -> None:
    assert parse_bytes("24G") == 24 << 30
    assert parse_bytes("512MiB") == 512 << 20
    assert parse_bytes("1500") == 1500
    assert math.isinf(parse_bytes("inf"))
    with pytest.raises(UsageError):
        parse_bytes("lots")
    assert available_bytes({ENV: "2G"}) == 2 << 30
    found = available_bytes({})
    assert found is None or found > 0  # MemAvailable on Linux


def test_every_posthoc_method_has_an_estimate_of_at_least_its_table() -> None:
    v, d = 30522, 384
    for name in METHODS.names():
        m = get_method(name)
        if not m.supports("posthoc"):
            continue
        try:
            cfg = m.configure(v, d, v * d * 4 // 10)
        except UsageError:
            continue
        need = m.peak_memory_bytes(v, d, cfg)
        assert need >= v * d * 4, name


def test_the_check_refuses_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    m = get_method("pq")
    cfg = m.configure(131072, 2048, 131072 * 2048 * 4 // 40)
    monkeypatch.setenv(ENV, "1G")
    with pytest.raises(MemoryRefusal) as info:
        check_memory(m, 131072, 2048, cfg)
    assert "\n" not in str(info.value) and "needs about" in str(info.value) and "1.0 GiB available" in str(info.value)
    monkeypatch.setenv(ENV, "inf")
    assert check_memory(m, 131072, 2048, cfg)["estimate_bytes"] > 131072 * 2048 * 4


def test_run_refuses_before_loading_with_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "64M")
    res = CliRunner().invoke(main, ["run", "--method", "pq", "--budget", "40x", "--results", str(tmp_path)])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "refused before running" in lines[0] and "Traceback" not in res.output
    assert not list(tmp_path.rglob("*.json"))  # nothing half-written


def test_a_sweep_records_skipped_memory_and_runs_it_when_memory_allows(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRACK_RUNNERS, "posthoc", test_sweep_fakes.FAKE_HOOKS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    suite = parse_suite({"name": "t", "methods": ["svd"], "budgets": ["4x"], "tasks": ["posthoc/fidelity"],
                         "lookup_iters": 3})
    store = ResultStore(tmp_path)
    monkeypatch.setenv(ENV, "64M")
    cells = [c for c in prepare_sweep(suite, store, "only-missing") if not c.reference]
    assert [c.action for c in cells] == ["skip"] and cells[0].skip_kind == "memory"
    ex = make_executor("local", jobs=1, imports=("test_sweep_fakes:install_hooks",))
    run_sweep(cells, store, ex)
    rec = store.read(cells[0].key)
    assert rec.status == "skipped" and "refused before running" in rec.error
    assert rec.provenance["sweep"]["skip"] == "memory"
    monkeypatch.setenv(ENV, "64G")
    again = [c for c in prepare_sweep(suite, store, "only-missing") if not c.reference]
    assert [c.action for c in again] == ["run"], [c.note for c in again]
