"""Several processes writing into one results directory never interleave or lose records."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from compbench.bench.results.record_store import ResultStore


def _writer(root: str, worker: int, n: int) -> None:
    from tests_support import make_record

    store = ResultStore(root)
    for i in range(n):
        # every worker writes its own cells AND one contended cell, over and over
        store.write(make_record(seed=1000 * worker + i, main=float(worker)))
        store.write(make_record(seed=0, main=float(worker) + i / 1000))


def test_concurrent_writers(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 25)) for w in range(1, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    good, bad = ResultStore(tmp_path).load_all()
    assert not bad
    assert len(good) == 4 * 25 + 1  # every distinct cell, none lost; the contended one is whole
    contended = json.loads((tmp_path / "posthoc/stsb/svd/10x/cpu-1t-s0.json").read_text())
    assert contended["metrics"]["main"] is not None
    assert not list(tmp_path.rglob("*.tmp"))
