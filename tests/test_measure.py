"""The measurement contract of bench/measure/core.py, tested on known inputs.

- throughput: a module that does the dense lookup k times gets ~1/k of the ratio, monotonically;
- memory: a known allocation shows in its phase's peak delta and not in the next phase's;
- summaries, the stopwatch, the Zipf lookup workload and the executor / concurrency fields.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import pytest
import torch
from torch import nn

from compbench.bench.measure import core as measure
from compbench.bench.measure.core import (
    MemoryPhases,
    Stopwatch,
    compare_lookup,
    concurrency_info,
    lookup_ids,
    summarize,
)
from compbench.datasets.frequencies import load_token_frequencies
from compbench.errors import UsageError

MIB = 2**20
CPU = torch.device("cpu")


# -- throughput -----------------------------------------------------------------------------------


class RepeatedLookup(nn.Module):
    """The dense lookup done ``k`` times per call, in k copies of the table (so repeats do not run from a
    warm cache): k times the work of the dense table, returning the first copy's (= dense) rows."""

    def __init__(self, emb: nn.Embedding, k: int):
        super().__init__()
        self.tables = nn.ModuleList([emb] + [nn.Embedding.from_pretrained(emb.weight.detach().clone())
                                             for _ in range(k - 1)])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outs = [t(ids) for t in self.tables]
        return outs[0]


def test_slowed_module_gets_a_proportionally_lower_ratio() -> None:
    """k times the work of the dense table -> ~1/k of its throughput ratio.

    The timing machine is shared, so: one torch thread (a stalled second thread blows single calls
    up), short calls (batch 16 x 128: a call far shorter than a scheduler time slice, so preemption
    hits both sides alike), three rounds per k with the median ratio kept, and generous bands."""
    torch.manual_seed(0)
    dense = nn.Embedding(20000, 128)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rounds: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for _ in range(3):
            for k in rounds:
                res = compare_lookup(RepeatedLookup(dense, k), dense, num_embeddings=20000, device=CPU, warmup=3,
                                     iters=60, batch=16, workload="uniform")
                assert res["candidate"]["n"] == res["dense"]["n"] == 60
                rounds[k].append(res["ratio"])
    finally:
        torch.set_num_threads(threads)
    ratios = {k: statistics.median(v) for k, v in rounds.items()}
    assert ratios[1] > ratios[2] > ratios[4], rounds
    assert 0.6 < ratios[1] < 1.4, rounds  # the dense lookup plus one Python call
    assert 0.3 < ratios[2] / ratios[1] < 0.75, rounds
    assert 0.12 < ratios[4] / ratios[1] < 0.45, rounds


def test_compare_lookup_records_its_workload() -> None:
    dense = nn.Embedding(1000, 8)
    res = compare_lookup(dense, dense, num_embeddings=1000, device=CPU, warmup=1, iters=3, batch=4, seq=8)
    assert res["workload"]["kind"] == "zipf-law" and res["workload"]["exponent"] == 1.0
    assert res["batch"] == 4 and res["seq"] == 8 and res["unit"] == "tokens/s"
    res = compare_lookup(dense, dense, num_embeddings=1000, device=CPU, warmup=1, iters=3, batch=4, seq=8,
                         workload="uniform")
    assert res["workload"]["kind"] == "uniform"
    json.dumps(res)


# -- peak memory by phase -------------------------------------------------------------------------


def _allocate_and_touch(nbytes: int) -> np.ndarray:
    a = np.empty(nbytes // 8, dtype=np.float64)
    a.fill(1.0)  # touch every page, so it is resident
    return a


def test_known_allocation_shows_in_its_phase_only() -> None:
    phases = MemoryPhases()
    with phases.phase("fit"):
        a = _allocate_and_touch(200 * MIB)
        assert float(a[-1]) == 1.0
    del a  # resident while the phase's mark is read (see _FakeMemory below)
    with phases.phase("evaluate"):
        small = _allocate_and_touch(MIB)
        del small
    out = phases.to_dict()
    fit, ev = out["phases"]["fit"], out["phases"]["evaluate"]
    if out["method"] == measure.RSS_METHOD_RESET:
        assert ev["peak_rss_delta_bytes"] < 40 * MIB, out
    assert fit["peak_rss_delta_bytes"] >= 190 * MIB, out
    assert fit["peak_rss_bytes"] >= fit["rss_start_bytes"] + 190 * MIB
    assert out["peak_rss_delta_bytes"] >= 190 * MIB
    assert out["peak_rss_bytes"] == max(fit["peak_rss_bytes"], ev["peak_rss_bytes"])
    # the process peak still covers the phase, although the reset also resets ru_maxrss
    assert out["process_peak_rss_bytes"] >= fit["peak_rss_bytes"]
    assert fit["calls"] == ev["calls"] == 1 and fit["seconds"] > 0
    assert "gpu" not in fit and "gpu_peak_allocated_bytes" not in out  # CPU only
    json.dumps(out)


class _FakeMemory:
    """A deterministic process memory: RSS, a high-water mark that a reset sets to the RSS (as Linux's
    clear_refs 5 does), allocations and frees (the real kernel's mark is best effort under memory management that
    reclaims in the background, so the folding logic is tested on this model; the test above uses the kernel)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rss = self.hwm = self.life = 500 * MIB
        monkeypatch.setattr(measure, "current_rss_bytes", lambda: self.rss)
        monkeypatch.setattr(measure, "rss_hwm_bytes", lambda: self.hwm)
        monkeypatch.setattr(measure, "peak_rss_bytes", lambda: self.hwm)
        monkeypatch.setattr(measure, "reset_rss_peak", self.reset)

    def reset(self) -> bool:
        self.hwm = self.rss
        return True

    def allocate(self, n: int) -> None:
        self.rss += n
        self.hwm = max(self.hwm, self.rss)

    def free(self, n: int) -> None:
        self.rss -= n


def test_phases_nest_and_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    mem = _FakeMemory(monkeypatch)
    phases = MemoryPhases()
    with phases.phase("train"):
        mem.allocate(120 * MIB)
        mem.free(120 * MIB)  # freed before the inner phase resets the mark
        with phases.phase("lookup"):  # the inner reset must not hide the outer allocation
            mem.allocate(10 * MIB)
            mem.free(10 * MIB)
    for n in (30, 90):  # a repeated name keeps the max
        with phases.phase("fit"):
            mem.allocate(n * MIB)
            mem.free(n * MIB)
    out = phases.to_dict()
    ph = out["phases"]
    assert ph["train"]["peak_rss_delta_bytes"] == 120 * MIB
    assert ph["lookup"]["peak_rss_delta_bytes"] == 10 * MIB
    assert ph["fit"]["calls"] == 2 and ph["fit"]["peak_rss_delta_bytes"] == 90 * MIB
    assert out["peak_rss_bytes"] == 620 * MIB and out["process_peak_rss_bytes"] == 620 * MIB
    with pytest.raises(UsageError, match="already open"), phases.phase("x"), phases.phase("x"):
        pass


def test_without_reset_falls_back_to_ru_maxrss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "reset_rss_peak", lambda: False)
    phases = MemoryPhases()
    with phases.phase("fit"):
        pass
    out = phases.to_dict()
    assert out["method"] == measure.RSS_METHOD_LIFETIME == "process ru_maxrss (not resettable)"
    assert out["phases"]["fit"]["peak_rss_bytes"] >= out["phases"]["fit"]["rss_start_bytes"]


def test_rss_helpers() -> None:
    assert measure.current_rss_bytes() > 0
    if measure.reset_rss_peak():
        assert measure.rss_hwm_bytes() >= measure.current_rss_bytes() * 0.9
    assert measure.peak_rss_bytes() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_phase_peaks() -> None:
    dev = torch.device("cuda")
    phases = MemoryPhases(dev)
    with phases.phase("fit"):
        x = torch.ones(64 * MIB // 4, device=dev)
        del x
    with phases.phase("lookup"):
        pass
    out = phases.to_dict()
    assert out["phases"]["fit"]["gpu"]["peak_allocated_delta_bytes"] >= 64 * MIB
    assert out["phases"]["lookup"]["gpu"]["peak_allocated_delta_bytes"] < MIB
    assert out["gpu_peak_allocated_delta_bytes"] >= 64 * MIB


# -- summaries and the stopwatch ------------------------------------------------------------------


def test_summarize_and_percentile_on_known_values() -> None:
    s = summarize([float(v) for v in range(1, 12)])  # 1..11
    assert s == {"median": 6.0, "p10": 2.0, "p90": 10.0, "n": 11}
    s = summarize([10.0, 0.0, 5.0, 20.0])  # unsorted; interpolated
    assert s["median"] == 7.5 and s["n"] == 4
    assert s["p10"] == pytest.approx(1.5) and s["p90"] == pytest.approx(17.0)
    assert summarize([3.0]) == {"median": 3.0, "p10": 3.0, "p90": 3.0, "n": 1}
    assert measure._percentile([1.0, 2.0], 0.5) == 1.5


def test_stopwatch() -> None:
    with Stopwatch() as sw:
        time.sleep(0.05)
    assert 0.045 <= sw.seconds < 1.0
    with Stopwatch(CPU) as sw2:
        pass
    assert 0 <= sw2.seconds < sw.seconds


# -- the Zipf lookup workload ---------------------------------------------------------------------


def test_shipped_token_frequencies() -> None:
    freq = load_token_frequencies()
    meta = freq.meta
    assert freq.vocab_size == 30522 == meta["tokenizer"]["vocab_size"]
    assert freq.total_tokens == meta["total_tokens"] == sum(s["tokens"] for s in meta["sources"])
    assert freq.sha256 == meta["sha256"]
    assert freq.source == "token-frequency/minilm-wordpiece-counts.parquet"
    # real WordPiece text: [CLS] / [SEP] once per text, "the" is the most frequent word piece
    texts = sum(s["texts"] for s in meta["sources"])
    assert freq.counts[101] == freq.counts[102] == texts
    assert freq.counts[0] == 0  # [PAD] is never counted
    words = np.argsort(-freq.counts)
    assert 1996 in words[:5]  # "the"
    # Zipf-like: the top 100 ids are a large share, the ranked counts fall steeply
    share = freq.counts[words[:100]].sum() / freq.total_tokens
    assert 0.35 < share < 0.75


def test_generator_script_reproduces_a_source() -> None:
    """scripts/token_frequency.py recounts one source (TREC train) to the shipped per-source total,
    and its counts are contained in the shipped ones."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "token_frequency.py"
    spec = importlib.util.spec_from_file_location("token_frequency", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    counts, meta = mod.count([("trec", "train", ("text",))])
    shipped = load_token_frequencies()
    (trec,) = [s for s in shipped.meta["sources"] if s["dataset"] == "trec"]
    assert meta["total_tokens"] == trec["tokens"] and meta["sources"][0]["texts"] == trec["texts"]
    assert meta["tokenizer"]["sha256"] == shipped.meta["tokenizer"]["sha256"]
    assert (counts <= shipped.counts).all()


def test_zipf_corpus_workload_follows_the_counts() -> None:
    freq = load_token_frequencies()
    ids, info = lookup_ids(30522, batch=400, seq=500, seed=3)
    assert ids.shape == (400, 500) and ids.dtype == torch.int64
    assert info["kind"] == "zipf-corpus" and info["sha256"] == freq.sha256 and info["exponent"] is None
    emp = np.bincount(ids.reshape(-1).numpy(), minlength=30522) / ids.numel()
    p = freq.counts / freq.total_tokens
    assert not emp[p == 0].any()  # ids never seen in the corpus are never drawn
    top = np.argsort(-p)[:20]
    np.testing.assert_allclose(emp[top], p[top], rtol=0.1)
    assert info["unique_ids"] == int(np.count_nonzero(emp))
    # same seed, same ids; another seed, other ids
    again, _ = lookup_ids(30522, batch=400, seq=500, seed=3)
    assert torch.equal(ids, again)
    assert not torch.equal(ids, lookup_ids(30522, batch=400, seq=500, seed=4)[0])
    # zipf-corpus is refused on another vocabulary size
    with pytest.raises(UsageError, match="zipf-corpus"):
        lookup_ids(1000, workload="zipf-corpus")


def test_zipf_law_workload() -> None:
    v, n = 1000, 200_000
    harmonic = float((1.0 / np.arange(1, v + 1)).sum())
    ids, info = lookup_ids(v, batch=1, seq=n, seed=0, frequency_sorted=True)
    assert info["kind"] == "zipf-law" and info["exponent"] == 1.0 and info["order"].startswith("natural")
    emp = np.bincount(ids.reshape(-1).numpy(), minlength=v) / n
    np.testing.assert_allclose(emp[:5], 1.0 / np.arange(1, 6) / harmonic, rtol=0.05)
    # permuted: the same law over a seeded permutation of the ids
    ids_p, info_p = lookup_ids(v, batch=1, seq=n, seed=0)
    assert info_p["order"].startswith("seeded random permutation")
    emp_p = np.sort(np.bincount(ids_p.reshape(-1).numpy(), minlength=v))[::-1] / n
    np.testing.assert_allclose(emp_p[:5], 1.0 / np.arange(1, 6) / harmonic, rtol=0.05)
    assert np.argmax(np.bincount(ids_p.reshape(-1).numpy())) != 0
    # a steeper exponent concentrates the draws
    steep, info_s = lookup_ids(v, batch=1, seq=n, seed=0, zipf_exponent=2.0, workload="zipf-law")
    assert info_s["exponent"] == 2.0 and info_s["unique_ids"] < info_p["unique_ids"]


def test_uniform_workload_is_the_old_draw() -> None:
    ids, info = lookup_ids(5000, batch=64, seq=128, seed=7, workload="uniform")
    g = torch.Generator().manual_seed(7)
    assert torch.equal(ids, torch.randint(0, 5000, (64, 128), generator=g))
    assert info["kind"] == "uniform" and info["source"] is None


@pytest.mark.parametrize("kwargs", [{"workload": "zipfian"}, {"zipf_exponent": 0.0, "workload": "zipf-law"},
                                    {"batch": 0}])
def test_bad_workload_arguments(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        lookup_ids(100, **kwargs)


# -- executor and concurrency ---------------------------------------------------------------------


def test_phase_records_the_load_average_at_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([0.5, 1.75, 1.25])
    monkeypatch.setattr("os.getloadavg", lambda: (next(loads), 0.0, 0.0))
    phases = MemoryPhases()
    for _ in range(3):  # repeats keep the highest
        with phases.phase("fit"):
            pass
    assert phases.to_dict()["phases"]["fit"]["load_avg_1m"] == 1.75

    def missing() -> tuple[float, float, float]:
        raise OSError("no load average")

    monkeypatch.setattr("os.getloadavg", missing)
    quiet = MemoryPhases()
    with quiet.phase("fit"):
        pass
    assert "load_avg_1m" not in quiet.to_dict()["phases"]["fit"]  # unknown, not a fake 0


def test_local_executor_honours_a_declared_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    from compbench.bench.sweeps.executors import LocalExecutor

    monkeypatch.delenv("COMPBENCH_CONCURRENT_CELLS", raising=False)
    assert LocalExecutor(jobs=1)._env()["COMPBENCH_CONCURRENT_CELLS"] == "1"
    assert LocalExecutor(jobs=3)._env()["COMPBENCH_CONCURRENT_CELLS"] == "3"
    monkeypatch.setenv("COMPBENCH_CONCURRENT_CELLS", "2")  # two sweeps side by side, declared by the user
    assert LocalExecutor(jobs=1)._env()["COMPBENCH_CONCURRENT_CELLS"] == "2"
    assert LocalExecutor(jobs=4)._env()["COMPBENCH_CONCURRENT_CELLS"] == "4"


def test_concurrency_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPBENCH_EXECUTOR", raising=False)
    monkeypatch.delenv("COMPBENCH_CONCURRENT_CELLS", raising=False)
    assert concurrency_info() == {"executor": "inline", "concurrent_cells": 1}
    monkeypatch.setenv("COMPBENCH_EXECUTOR", "process-pool")
    monkeypatch.setenv("COMPBENCH_CONCURRENT_CELLS", "3")
    assert concurrency_info() == {"executor": "process-pool", "concurrent_cells": 3}
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("COMPBENCH_CONCURRENT_CELLS", bad)
        with pytest.raises(UsageError, match="COMPBENCH_CONCURRENT_CELLS"):
            concurrency_info()
