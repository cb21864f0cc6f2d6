"""``--max-fit-seconds``: a fit past the limit is stopped and recorded as ``timeout`` -- by interrupting a
Python-level fit in the cell's own process, and by a hard stop of a worker stuck in one native call -- and a
resumed sweep re-runs a timed-out cell only under a larger limit."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import test_sweep_fakes
from compbench.bench.cell.context import TRACK_RUNNERS
from compbench.bench.cell.plan import is_up_to_date, prepare_sweep, resolve_cell
from compbench.bench.cell.runner import run_cell
from compbench.bench.results.record_store import ResultStore
from compbench.bench.sweeps.suite import apply_overrides, parse_suite
from compbench.bench.sweeps.sweep import make_executor, run_sweep
from compbench.config import RunConfig
from compbench.errors import UsageError

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture()
def fake_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRACK_RUNNERS, "posthoc", test_sweep_fakes.FAKE_HOOKS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("COMPBENCH_FIT_GRACE_SECONDS", "1")


def _cfg(method: str = "svd", **kw: object) -> RunConfig:
    return RunConfig(method=method, budget="4x", task="fidelity", threads=1, lookup_iters=3, **kw)  # type: ignore[arg-type]


def test_a_python_level_fit_is_interrupted_and_recorded(tmp_path: Path, fake_hooks: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPBENCH_FAKE_FIT_SLEEP", "svd:60:python")
    rec = run_cell(_cfg(max_fit_seconds=0.5), ResultStore(tmp_path), references=False)
    assert rec.status == "timeout" and "--max-fit-seconds 0.5 s" in rec.error
    assert rec.measurements["timeout"]["max_fit_seconds"] == 0.5
    assert 0.5 <= rec.measurements["timeout"]["elapsed_s"] < 30  # interrupted, not run to the fake's 60 s
    assert rec.metrics.main is None


def test_the_interrupt_works_when_sigint_is_ignored(tmp_path: Path, fake_hooks: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A process started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored;
    # interrupt_main() alone would then do nothing and the fit would run to its end.
    monkeypatch.setenv("COMPBENCH_FAKE_FIT_SLEEP", "svd:60:python")
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rec = run_cell(_cfg(max_fit_seconds=0.5), ResultStore(tmp_path), references=False)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # put back after the fit
    finally:
        signal.signal(signal.SIGINT, before)
    assert rec.status == "timeout" and "and was stopped" in rec.error
    assert rec.measurements["timeout"]["elapsed_s"] < 30


@pytest.mark.parametrize("phase", ["evaluate", "lookup"])
def test_evaluation_and_lookup_timing_have_the_same_deadline(tmp_path: Path, fake_hooks: None, phase: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 34 (bounded work everywhere): the limit also bounds each seed's evaluation and the lookup timing."""
    import test_sweep_fakes as fakes
    from compbench.bench.cell import lifecycle

    def slow(*args: object, **kwargs: object) -> object:
        for _ in range(600):  # Python-level steps: the interrupt stops them
            time.sleep(0.1)
        raise AssertionError("not stopped")

    if phase == "evaluate":
        monkeypatch.setattr(fakes.FakeHooks, "evaluate", slow)
    else:
        monkeypatch.setattr(lifecycle, "compare_lookup", slow)
    rec = run_cell(_cfg(max_fit_seconds=0.5), ResultStore(tmp_path), references=False)
    what = "evaluation" if phase == "evaluate" else "lookup timing"
    assert rec.status == "timeout" and f"the {what} ran past --max-fit-seconds 0.5 s" in rec.error
    assert rec.measurements["timeout"]["elapsed_s"] < 30


def test_a_fit_within_the_limit_is_untouched(tmp_path: Path, fake_hooks: None) -> None:
    rec = run_cell(_cfg(max_fit_seconds=60), ResultStore(tmp_path), references=False)
    assert rec.status == "ok" and "timeout" not in rec.measurements


def test_a_worker_stuck_in_a_native_call_is_stopped_and_the_sweep_resumes_it_only_with_more_time(
        tmp_path: Path, fake_hooks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPBENCH_FAKE_FIT_SLEEP", "svd:120:native")
    suite = parse_suite({"name": "t", "methods": ["svd"], "budgets": ["4x"], "tasks": ["posthoc/fidelity"],
                         "max_fit_seconds": 1, "lookup_iters": 3})
    store = ResultStore(tmp_path)
    cells = [c for c in prepare_sweep(suite, store, "only-missing") if not c.reference]
    ex = make_executor("local", jobs=1, imports=("test_sweep_fakes:install_hooks",))
    t0 = time.perf_counter()
    result = run_sweep(cells, store, ex)
    assert time.perf_counter() - t0 < 60  # far less than the 120 s native call
    rec = store.read(cells[0].key)
    assert rec.status == "timeout" and "native call" in rec.error
    assert [r.key for r in result.failed] == [rec.key]  # counts like failed in the exit code
    assert is_up_to_date(rec, resolve_cell(cells[0].config))[0]  # same limit: it would time out again
    more = apply_overrides(suite, max_fit_seconds=100)
    up, why = is_up_to_date(rec, resolve_cell(more.cells()[0]))
    assert not up and "timed out under --max-fit-seconds 1" in why


def test_bad_limits_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="max_fit_seconds' must be a number of seconds in 0.."):
        parse_suite({"name": "t", "methods": ["svd"], "budgets": ["4x"], "tasks": ["posthoc/fidelity"],
                     "max_fit_seconds": -3})
    suite = parse_suite({"name": "t", "methods": ["svd"], "budgets": ["4x"], "tasks": ["posthoc/fidelity"]})
    assert suite.cells()[0].max_fit_seconds == 3600.0  # the documented default
    assert apply_overrides(suite, max_fit_seconds=0).cells()[0].max_fit_seconds is None  # 0: no limit
