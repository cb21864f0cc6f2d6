"""The store track's search on codes: each faiss index built from a module's codes ranks as the module's own
decode does (or as a fresh faiss index on the same data does), and ``store/search`` scores rescoring, relevance
and throughput on a small store."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from compbench.methods import get_method
from compbench.methods.dense import Dense
from compbench.tasks.store import StoreContext
from compbench.tasks.store_search import RESCORE_FACTORS, StoreSearch, query_pairs

N, D = 3000, 64


@pytest.fixture(scope="module")
def unit_rows() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(40, D, generator=g), dim=1)
    return x, q


def _module(name: str, ratio: int, x: torch.Tensor, **options):
    method = get_method(name, **options)
    return method.compress(x, method.configure(N, D, N * D * 4 // ratio), seed=0)


def _sorted_scores(scores: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    return torch.gather(scores, 1, torch.as_tensor(ids, dtype=torch.long)).sort(dim=1, descending=True).values


@pytest.mark.parametrize("name,ratio,options", [("pq", 16, {}), ("opq", 16, {}), ("rq", 16, {}), ("lsq", 16, {}),
                                                ("st-int8", 3, {})])
def test_inner_product_indexes_rank_as_the_decode(unit_rows, name, ratio, options) -> None:
    """IndexPQ / OPQ / RQ / LSQ / SQ8 on the stored codes return the top 10 of <q, decode(code)>."""
    x, q = unit_rows
    mod = _module(name, ratio, x, **options)
    cs = mod.code_search()
    assert cs is not None and cs.kind.startswith("faiss.")
    ids = cs.search(q.numpy(), 10)
    scores = q @ mod.materialize().T
    assert torch.allclose(_sorted_scores(scores, ids), scores.topk(10, dim=1).values, atol=1e-4)


@pytest.mark.parametrize("nb_bits,ratio", [(1, 12), (3, 4), (None, 20)])
def test_rabitq_index_equals_a_fresh_faiss_index(unit_rows, nb_bits, ratio) -> None:
    """IndexRaBitQ rebuilt from the stored codes searches exactly as faiss' own index on the same rows (the 20x
    case is the projected one)."""
    x, q = unit_rows
    mod = _module("rabitq", ratio, x, **({} if nb_bits is None else {"nb_bits": nb_bits}))
    rr = faiss.RandomRotationMatrix(D, mod.code_dim)
    rr.init(0)
    fresh = faiss.IndexPreTransform(rr, faiss.IndexRaBitQ(mod.code_dim, faiss.METRIC_L2, mod.nb_bits))
    fresh.train(x.numpy())
    fresh.add(x.numpy())
    assert np.array_equal(mod.code_search().search(q.numpy(), 10), fresh.search(q.numpy(), 10)[1])


def test_binary_index_is_hamming_on_binarised_queries(unit_rows) -> None:
    x, q = unit_rows
    mod = _module("st-binary", 32, x)
    ids = mod.code_search().search(q.numpy(), 10)
    ham = -torch.cdist((q > 0).float(), (mod.materialize() > 0).float(), p=1)
    assert torch.equal(_sorted_scores(ham, ids), ham.topk(10, dim=1).values)


def test_modules_without_an_index_say_so(unit_rows) -> None:
    x, _ = unit_rows
    assert _module("quant-int8", 3, x).code_search() is None
    assert Dense().compress(x, {}, seed=0).code_search() is None


class _TinySearch(StoreSearch):
    """store/search on a synthetic store: queries are noisy copies of their relevant row."""

    repeats = 2

    def __init__(self, targets: np.ndarray):
        self._targets = targets

    def targets(self) -> np.ndarray:
        return self._targets


def _search_scores(x: torch.Tensor, module, seed: int = 0) -> tuple[dict[str, float], StoreContext]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randperm(N, generator=g)[:50]
    queries = torch.nn.functional.normalize(x[targets] + 0.05 * torch.randn(50, D, generator=g), dim=1)
    ctx = StoreContext(module.materialize(), x, module=module, queries=queries)
    return _TinySearch(targets.numpy()).evaluate(ctx), ctx


def test_search_task_dense_is_exact_and_rescoring_helps(unit_rows) -> None:
    x, _ = unit_rows
    dense, _ = _search_scores(x, Dense().compress(x, {}, seed=0))
    assert all(dense[f"recall_at_10{'' if r == 1 else f'_r{r}'}"] == 1.0 for r in RESCORE_FACTORS)
    assert dense["hit_at_10_r1"] == 1.0 and dense["rescoring_storage_bytes"] == N * D * 4
    scores, ctx = _search_scores(x, _module("pq", 32, x))
    recalls = [scores[f"recall_at_10{'' if r == 1 else f'_r{r}'}"] for r in RESCORE_FACTORS]
    assert recalls[0] < 1.0 and recalls == sorted(recalls)  # more candidates re-ranked in fp32: never worse
    assert ctx.measurements["search"]["kind"] == "faiss.IndexPQ (ADC, inner product)"
    timing = ctx.measurements["search"]
    assert timing["codes"]["n"] == 2 and timing["ratio"] > 0 and scores["queries_per_s"] > 0
    assert ctx.items.n_items == 50


def test_search_task_without_an_index_searches_decoded_rows(unit_rows) -> None:
    x, _ = unit_rows
    _, ctx = _search_scores(x, _module("quant-int8", 3, x))
    assert ctx.measurements["search"]["kind"].startswith("decoded rows")


def test_queries_are_held_out_of_the_store() -> None:
    task = StoreSearch()
    store = task.corpus()
    queries = task.query_texts()
    assert len(store) >= 100_000 and len(queries) == len(query_pairs()) > 1000
    assert not set(queries) & set(store)
    targets = task.targets()
    assert [store[i] for i in targets[:5]] == [b for _, b in query_pairs()[:5]]
