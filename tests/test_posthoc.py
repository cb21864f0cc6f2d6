"""The posthoc track on the real MiniLM encoder: the published reference, budget refusal, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compbench.bench.cell.runner import run_cell
from compbench.bench.results.record_store import ResultStore
from compbench.config import RunConfig
from compbench.methods import METHODS
from compbench.methods.method_base import DenseEmbedding, Method, MethodCard
from compbench.tasks.posthoc import table_fidelity

PUBLISHED_STSB = 0.8203  # MTEB STSBenchmark, all-MiniLM-L6-v2, cosine Spearman


def test_encoder_table_shape(encoder) -> None:
    assert encoder.info.vocab_size == 30522 and encoder.info.dim == 384
    share = 30522 * 384 / encoder.info.total_params
    assert share == pytest.approx(0.516, abs=0.001)


@pytest.mark.slow
def test_dense_reproduces_published_mteb_score(tmp_path: Path, shared_cache) -> None:
    rec = run_cell(RunConfig(method="dense", budget="1x", task="stsb", threads=2), ResultStore(tmp_path),
                   cache=shared_cache)
    assert rec.status == "ok"
    assert rec.metrics.main == pytest.approx(PUBLISHED_STSB, abs=0.005)
    assert rec.budget.stored_bytes == rec.budget.reference_bytes == 30522 * 384 * 4
    assert rec.measurements["lookup"]["ratio"] > 0


class _Liar(Method):
    """Claims to fit any budget but returns the dense table: the harness must refuse it."""

    card = MethodCard(name="test-liar", version=1, family="test", reference="-", modes=("posthoc",))

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict:
        return {}

    def compress(self, table, config, *, seed):
        return DenseEmbedding(table)


def test_over_budget_is_refused(tmp_path: Path, shared_cache) -> None:
    METHODS.register("test-liar")(_Liar)
    try:
        rec = run_cell(RunConfig(method="test-liar", budget="10x", task="fidelity", threads=2),
                       ResultStore(tmp_path), cache=shared_cache, references=False)
    finally:
        METHODS._objects.pop("test-liar")
    assert rec.status == "over_budget"
    assert rec.metrics.main is None  # not evaluated, not rankable
    assert rec.budget.stored_bytes > rec.budget.allowed_bytes
    assert (tmp_path / f"{rec.key}.json").is_file()


@pytest.mark.slow  # two full STS-B cells (about 3 minutes on a busy 2-core machine): make test-slow
def test_cell_determinism_and_retention(tmp_path: Path, shared_cache) -> None:
    cfg = RunConfig(method="quant-int2", budget="10x", task="fidelity", threads=2, seed=3)
    store = ResultStore(tmp_path)
    a = run_cell(cfg, store, cache=shared_cache)
    b = run_cell(cfg, store, cache=shared_cache)
    assert a.status == b.status == "ok"
    assert a.metrics.scores == b.metrics.scores
    assert a.budget.stored_bytes == b.budget.stored_bytes
    # the dense reference cell was written once and used for retention
    assert store.exists("posthoc/fidelity/dense/1x/cpu-2t-s3")
    assert a.metrics.dense_score == pytest.approx(1.0)
    assert a.metrics.retention == pytest.approx(a.metrics.main)
    assert 0.8 < a.metrics.main < 0.95  # int2 row cosine on MiniLM is ~0.87


def test_table_fidelity_known_values() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(200, 16, generator=g)
    same = table_fidelity(t, t, n_queries=50)
    assert same["rel_frobenius_error"] == 0 and same["mean_row_cosine"] == pytest.approx(1.0)
    assert same["knn10_overlap"] == 1.0
    scaled = table_fidelity(t, 2 * t, n_queries=50)  # direction preserved
    assert scaled["mean_row_cosine"] == pytest.approx(1.0) and scaled["knn10_overlap"] == 1.0
    assert scaled["rel_frobenius_error"] == pytest.approx(1.0)
    noisy = table_fidelity(t, t + torch.randn(200, 16, generator=g), n_queries=50)
    assert noisy["knn10_overlap"] < 0.9 and noisy["mean_row_cosine"] < 0.9
