"""``store/search``: a vector store that *searches its codes*, with rescoring, against exact fp32 search.

Protocol (the decisions are here so a reader can check them):

- **Store.** Every sentence-level text shipped with compbench, encoded once by the dense encoder and cached by
  model and corpus sha256 (:func:`compbench.bench.tracks.store_track.corpus_vectors`): SST-2 (all splits), STS-B and
  MRPC (both sentences, all splits), MR, CR, SUBJ, MPQA, TREC and AG News (test), deduplicated in that order,
  minus the query texts: 131,876 vectors (1,446 queries). The two document collections (IMDB, 20 Newsgroups) are left out:
  their 68k long documents would cost more CPU time to encode than all the sentences together, and a sentence
  store is the RAG case the issue names.
- **Queries** (held out: never in the store). The first sentence of every MRPC *equivalent* test pair and of
  every STS-B test pair with a gold score >= 4.0; the pair's other sentence, kept in the store, is the query's
  one *relevant* document. A pair whose two sentences are equal, or whose relevant sentence is itself a query,
  is dropped.
- **Ground truth.** (a) the exact top 10 of each query under fp32 inner product (= cosine: vectors are unit
  norm) over the dense store, from ``faiss.IndexFlatIP``; (b) the relevant document of each pair.
- **Search on the codes.** The compressed module's own faiss index over its stored codes
  (:meth:`~compbench.methods.method_base.CompressedEmbedding.code_search`: ``IndexPQ``, ``IndexRaBitQ``,
  ``IndexResidualQuantizer``, ``IndexScalarQuantizer``, ``IndexBinaryFlat``, ...; float query, asymmetric unless
  the index says otherwise); a module without one is searched on its decoded rows with ``IndexFlatIP``. Which
  one ran is recorded (``measurements.search.kind``).
- **Rescoring.** The top ``10 r`` candidates from the codes are re-ranked by exact fp32 inner product, for
  ``r`` in {1, 2, 4, 10} (``r = 1`` is no rescoring). The fp32 copy this needs is *rescoring storage*, reported
  apart from the compressed bytes (``rescoring_storage_bytes``), as vector databases do.
- **Scores.** ``recall_at_10`` (main metric: the share of the code search's top 10 that are as close as the
  exact 10th neighbour -- ann-benchmarks' definition, robust to the store's identical vectors -- no rescoring), ``recall_at_10_r{r}`` after rescoring, and for the relevant pairs ``ndcg_at_10_r{r}`` and
  ``hit_at_10_r{r}``.
- **Throughput.** Queries/s of the search on the codes and of exact fp32 flat search (``IndexFlatIP``) over the
  same store, both with k = 10 and the first 512 queries as one batch, alternated in the same run for ``repeats``
  (5) rounds after one warm-up; medians with p10/p90 and the median of the per-round ratios. faiss uses the
  cell's thread count.
"""

from __future__ import annotations

import functools
import time
from typing import Any, ClassVar

import numpy as np

from compbench.datasets import split_path
from compbench.errors import DataError
from compbench.methods.faiss_search import float_queries, index_searcher
from compbench.stats import Items
from compbench.tasks import TASKS
from compbench.tasks.store import StoreContext, StoreTask, unique_in_order
from compbench.tasks.task_base import TaskCard

RESCORE_FACTORS = (1, 2, 4, 10)
K = 10
TIE_EPS = 1e-5  # fp32 inner products of unit vectors: scores within this of the 10th exact one are ties
# (dataset, split, text columns): every shipped sentence-level text, in this order
SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sst2", "train", ("text",)), ("sst2", "validation", ("text",)), ("sst2", "test", ("text",)),
    ("stsb", "train", ("sentence1", "sentence2")), ("stsb", "validation", ("sentence1", "sentence2")),
    ("stsb", "test", ("sentence1", "sentence2")),
    ("mrpc", "train", ("sentence1", "sentence2")), ("mrpc", "validation", ("sentence1", "sentence2")),
    ("mrpc", "test", ("sentence1", "sentence2")),
    ("mr", "all", ("text",)), ("cr", "all", ("text",)), ("subj", "all", ("text",)), ("mpqa", "all", ("text",)),
    ("trec", "train", ("text",)), ("trec", "test", ("text",)), ("ag_news", "test", ("text",)),
)
STSB_RELEVANT_MIN = 4.0


def _frame(dataset: str, split: str) -> Any:
    import pandas as pd

    return pd.read_parquet(split_path(dataset, split))


def query_pairs() -> list[tuple[str, str]]:
    """(query, relevant) pairs: MRPC equivalent test pairs and STS-B test pairs with gold >= 4.0 (deduplicated)."""
    mrpc = _frame("mrpc", "test")
    stsb = _frame("stsb", "test")
    raw = [(a, b) for a, b, y in zip(mrpc["sentence1"], mrpc["sentence2"], mrpc["label"]) if y == 1]
    raw += [(a, b) for a, b, s in zip(stsb["sentence1"], stsb["sentence2"], stsb["score"]) if s >= STSB_RELEVANT_MIN]
    seen: set[str] = set()
    pairs = []
    for a, b in raw:
        if a != b and a not in seen:
            seen.add(a)
            pairs.append((a, b))
    return [(a, b) for a, b in pairs if b not in seen]


def _recall(found: np.ndarray, queries: np.ndarray, dense: np.ndarray, kth: np.ndarray) -> np.ndarray:
    """Per query: the share of the ``K`` found ids whose exact fp32 score reaches the ``K``-th exact score.

    This is ann-benchmarks' recall (a neighbour counts when it is as close as the true ``K``-th one), which is
    robust to ties: the store holds texts whose vectors are identical (case and spacing variants), and two exact
    searches may order them differently."""
    safe = np.where(found < 0, 0, found)
    exact = np.einsum("qd,qkd->qk", queries, dense[safe])
    ok = (exact >= kth) & (found >= 0)
    return ok.sum(1) / K


def _ranks_of(found: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target among ``found`` (``inf`` when absent)."""
    hit = found == targets[:, None]
    return np.where(hit.any(1), hit.argmax(1) + 1, np.inf)


@TASKS.register("store/search")
class StoreSearch(StoreTask):
    """Search on the codes, rescoring, recall@10 and queries/s against exact flat search (≥100k vectors)."""

    card = TaskCard("search", 1, "store", "recall_at_10", True, 0.01, "sentences",
                    "store = every shipped sentence-level text (131,876 vectors) minus held-out queries (MRPC "
                    "equivalent + STS-B >= 4.0 test pairs); search on the codes (faiss index on the stored codes, "
                    "else decoded rows); recall@10 vs exact fp32 top 10 with rescoring r in {1,2,4,10}; nDCG@10 of "
                    "the paired sentence; queries/s vs IndexFlatIP in the same run")
    repeats: ClassVar[int] = 5
    timed_queries: ClassVar[int] = 512

    def data_files(self) -> list[str]:
        return sorted({f"{d}/{s}" for d, s, _ in SOURCES})

    @functools.cached_property
    def _texts(self) -> tuple[list[str], list[tuple[str, str]]]:
        pairs = query_pairs()
        queries = {a for a, _ in pairs}
        texts: list[str] = []
        for dataset, split, columns in SOURCES:
            df = _frame(dataset, split)
            for col in columns:
                texts.extend(str(t) for t in df[col])
        store = [t for t in unique_in_order(texts)[0] if t not in queries and t.strip()]
        return store, pairs

    def corpus(self) -> list[str]:
        """The store's texts (queries excluded), in a fixed order."""
        return self._texts[0]

    def query_texts(self) -> list[str]:
        """The held-out queries, in a fixed order."""
        return [a for a, _ in self._texts[1]]

    def targets(self) -> np.ndarray:
        """Row of each query's relevant document in the store."""
        store, pairs = self._texts
        index = {t: i for i, t in enumerate(store)}
        return np.array([index[b] for _, b in pairs], dtype=np.int64)

    def evaluate(self, ctx: StoreContext) -> dict[str, float]:
        import faiss

        if ctx.queries is None:
            raise DataError("store/search needs query vectors (the store track encodes them)")
        queries = float_queries(ctx.queries)
        dense = float_queries(ctx.dense_table)
        n, d = dense.shape
        flat = faiss.IndexFlatIP(d)
        flat.add(dense)
        truth_scores = flat.search(queries, K)[0]
        kth = truth_scores[:, K - 1:K] - TIE_EPS  # the 10th exact score: ties count (ann-benchmarks' rule)
        searcher = ctx.module.code_search() if ctx.module is not None else None
        if searcher is None:
            decoded = faiss.IndexFlatIP(d)
            decoded.add(float_queries(ctx.table))
            kind, search = "decoded rows, faiss.IndexFlatIP (no index reads these codes)", index_searcher(decoded)
        else:
            kind, search = searcher.kind, searcher.search
        pool = search(queries, min(K * max(RESCORE_FACTORS), n))
        targets = self.targets()
        scores: dict[str, float] = {}
        per_query = None
        for r in RESCORE_FACTORS:
            cand = pool[:, : min(K * r, n)]
            if r == 1:
                top = cand[:, :K]
            else:  # exact fp32 inner products of the candidates, best 10 kept
                safe = np.where(cand < 0, 0, cand)
                exact = np.einsum("qd,qkd->qk", queries, dense[safe])
                exact[cand < 0] = -np.inf
                top = np.take_along_axis(cand, np.argsort(-exact, axis=1, kind="stable")[:, :K], axis=1)
            recall = _recall(top, queries, dense, kth)
            ranks = _ranks_of(top, targets)
            suffix = "" if r == 1 else f"_r{r}"
            scores[f"recall_at_10{suffix}"] = float(recall.mean())
            scores[f"ndcg_at_10_r{r}"] = float(np.mean(np.where(np.isfinite(ranks), 1 / np.log2(ranks + 1), 0.0)))
            scores[f"hit_at_10_r{r}"] = float(np.isfinite(ranks).mean())
            if r == 1:
                per_query = recall
        scores["recall_at_10_r1"] = scores["recall_at_10"]
        timing = self._throughput(search, flat, queries[: self.timed_queries])
        timing["timed_queries"] = int(min(len(queries), self.timed_queries))
        scores.update(n_queries=float(len(queries)), n_vectors=float(n), queries_per_s=timing["codes"]["median"],
                      flat_queries_per_s=timing["flat"]["median"], search_speedup=timing["ratio"],
                      rescoring_storage_bytes=float(n * d * 4))
        ctx.items = Items("mean", per_query)
        ctx.measurements = {"search": {"kind": kind, "k": K, "rescore_factors": list(RESCORE_FACTORS),
                                       "threads": faiss.omp_get_max_threads(), **timing}}
        return scores

    def _throughput(self, search: Any, flat: Any, queries: np.ndarray) -> dict[str, Any]:
        """Queries/s of the code search and of exact flat search, alternated (1 warm-up + ``repeats`` rounds)."""
        runs: dict[str, list[float]] = {"codes": [], "flat": []}
        for round_ in range(self.repeats + 1):
            for name, fn in (("codes", lambda: search(queries, K)), ("flat", lambda: flat.search(queries, K))):
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if round_:
                    runs[name].append(len(queries) / dt)

        def summary(v: list[float]) -> dict[str, float]:
            a = np.asarray(v)
            return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
                    "p90": float(np.percentile(a, 90)), "n": float(len(a))}

        out: dict[str, Any] = {k: summary(v) for k, v in runs.items()}
        ratios = [c / f for c, f in zip(runs["codes"], runs["flat"])]  # per round: both under the same load
        out["ratio_spread"] = summary(ratios)
        out["ratio"] = out["ratio_spread"]["median"]
        out["unit"] = "queries/s"
        return out


__all__ = ["RESCORE_FACTORS", "SOURCES", "StoreSearch", "query_pairs"]
