"""The Ray executor on a local Ray instance (2 CPUs) gives the same records as the local process pool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compbench.bench.cell.plan import prepare_sweep
from compbench.bench.results.compare import compare_dirs
from compbench.bench.results.record_store import ResultStore
from compbench.bench.sweeps.executors import LocalExecutor, RayExecutor
from compbench.bench.sweeps.suite import parse_suite
from compbench.bench.sweeps.sweep import run_sweep

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

TESTS = Path(__file__).resolve().parent
DOC = {"name": "parity", "threads": 1, "tasks": ["posthoc/fidelity"], "methods": ["svd", "quant-int8"],
       "budgets": ["8x"]}


@pytest.mark.slow
def test_local_and_ray_executors_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    for var in ("COMPBENCH_FAKE_CRASH", "COMPBENCH_FAKE_SLEEP", "COMPBENCH_FAKE_SHIFT", "COMPBENCH_FAKE_DIE_IN_WRITE"):
        monkeypatch.delenv(var, raising=False)
    imports = ["test_sweep_fakes:install"]
    suite = parse_suite(DOC)
    results = {}
    for name, executor in (("local", LocalExecutor(jobs=2, imports=imports)),
                           ("ray", RayExecutor(imports=imports, num_cpus=2))):
        store = ResultStore(tmp_path / name)
        cells = prepare_sweep(suite, store)
        result = run_sweep(cells, store, executor)
        assert not result.interrupted and not result.failed, result.summary()
        results[name] = {r.key: r for r in store.load_all()[0]}
    assert not ray.is_initialized()  # the executor shut down the Ray instance it started
    local, on_ray = results["local"], results["ray"]
    assert set(local) == set(on_ray) and len(local) == 3
    for key, a in local.items():
        b = on_ray[key]
        assert (a.status, a.error, a.budget.stored_bytes, a.params, a.metrics.main, a.metrics.scores) == \
               (b.status, b.error, b.budget.stored_bytes, b.params, b.metrics.main, b.metrics.scores), key
        assert b.measurements.get("memory", {}).get("fresh_process", True)
    assert local["posthoc/fidelity/quant-int8/8x/cpu-1t-s0"].status == "skipped"
    assert compare_dirs(tmp_path / "local", tmp_path / "ray").exit_code == 0
