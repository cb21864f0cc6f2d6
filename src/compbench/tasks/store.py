"""Store-track tasks: compress a corpus' *sentence vectors* (a RAG / vector-store setting) and evaluate them.

The dense encoder (all-MiniLM-L6-v2 by default, ``--model`` otherwise) encodes the task's
corpus once (L2-normalised vectors, cached on disk by :mod:`compbench.bench.tracks.store_track`);
the method compresses the ``n x d`` matrix of vectors at the budget relative to fp32
(``n x d x 4`` bytes); the task scores the decoded vectors. Every vector of the corpus,
queries included, is taken from the compressed store (symmetric search, as with binary /
Hamming indexes); ``*_asym`` scores use the dense query against the compressed corpus
(asymmetric, as PQ's ADC and sentence-transformers' rescoring do).

- ``stsb``: corpus = the 15,487 unique sentences of STS-B train + validation + test;
  score = cosine Spearman of the 1,379 test pairs (dense MiniLM: 0.8203, the MTEB figure).
- ``neighbors``: same corpus; 1,000 query sentences (fixed permutation, seed 0); recall@10 =
  overlap of the 10 nearest neighbours (cosine, self excluded) under the compressed
  vectors with the exact dense top 10.
- ``mrpc``: duplicate retrieval: corpus = the 10,944 unique sentences of MRPC (all splits);
  each positive ("equivalent") test pair gives a query (sentence1) whose only relevant
  document is its paraphrase (sentence2), searched among the whole corpus minus the
  query itself; nDCG@10 (main), MRR@10, recall@1, recall@10.
- ``fidelity``: :func:`compbench.tasks.posthoc.table_fidelity` of the stored vectors (STS-B corpus).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from compbench.datasets import split_path
from compbench.errors import DataError
from compbench.stats import Items
from compbench.tasks import TASKS
from compbench.tasks.posthoc import table_fidelity
from compbench.tasks.task_base import Task, TaskCard


@dataclass
class StoreContext:
    """What a store task needs: the decoded (compressed) vectors and the dense ones, row-aligned with the corpus."""

    table: torch.Tensor  # [n, d]
    dense_table: torch.Tensor  # [n, d]
    seed: int = 0
    items: Any = None  # set by the task: its per-item outcomes (compbench.stats.Items), for intervals
    module: Any = None  # the compressed module (its codes are searched by store/search)
    queries: torch.Tensor | None = None  # [q, d] dense vectors of the task's held-out queries, if it has any
    measurements: dict[str, Any] | None = None  # set by the task: non-score facts for the record


class StoreTask(Task):
    """A task on stored sentence vectors: ``corpus()`` lists the texts to encode, ``evaluate`` scores vectors."""

    def corpus(self) -> list[str]:  # pragma: no cover - abstract
        """The texts whose vectors form the store (row order = vector order)."""
        raise NotImplementedError

    def query_texts(self) -> list[str]:
        """Held-out query texts, encoded apart from the store (none by default: queries come from the store)."""
        return []

    def evaluate(self, ctx: StoreContext) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


def corpus_sha256(texts: Sequence[str]) -> str:
    """sha256 of a corpus (texts joined by NUL), the cache key of its vectors."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf8"))
        h.update(b"\0")
    return h.hexdigest()


def unique_in_order(texts: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Unique texts in first-seen order and the text -> row map."""
    index: dict[str, int] = {}
    for t in texts:
        index.setdefault(t, len(index))
    return list(index), index


# -- metrics on vectors ----------------------------------------------------------------------------
def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1, eps=1e-12)


def pair_cosine_spearman(vectors: torch.Tensor, i1: np.ndarray, i2: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Spearman / Pearson between gold scores and the cosine of the rows ``i1`` and ``i2``."""
    from scipy import stats

    u = _unit(vectors)
    cos = (u[torch.as_tensor(i1)] * u[torch.as_tensor(i2)]).sum(-1).double().numpy()
    if np.all(cos == cos[0]):
        return {"cosine_spearman": 0.0, "cosine_pearson": 0.0}  # constant similarities carry no ranking
    return {"cosine_spearman": float(stats.spearmanr(gold, cos).statistic),
            "cosine_pearson": float(stats.pearsonr(gold, cos).statistic)}


@torch.inference_mode()
def topk_neighbors(queries: torch.Tensor, corpus: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   chunk: int = 1024) -> torch.Tensor:
    """Indices ``[q, k]`` of the ``k`` most cosine-similar corpus rows per query (``exclude[i]`` left out)."""
    c = _unit(corpus)
    out = []
    for s in range(0, queries.shape[0], chunk):
        sims = _unit(queries[s:s + chunk]) @ c.T
        if exclude is not None:
            sims.scatter_(1, exclude[s:s + chunk, None], -float("inf"))
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out)


def neighbor_recall(table: torch.Tensor, dense: torch.Tensor, queries: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Recall@k of the exact dense k nearest neighbours (self excluded), symmetric and asymmetric."""
    truth = topk_neighbors(dense[queries], dense, k, queries)
    sym = topk_neighbors(table[queries], table, k, queries)
    asym = topk_neighbors(dense[queries], table, k, queries)

    def overlap(found: torch.Tensor) -> float:
        return float((found.unsqueeze(2) == truth.unsqueeze(1)).any(dim=2).float().mean())

    return {f"recall_at_{k}": overlap(sym), f"recall_at_{k}_asym": overlap(asym), "n_queries": float(len(queries))}


@torch.inference_mode()
def paraphrase_retrieval(table: torch.Tensor, queries: np.ndarray, targets: np.ndarray, k: int = 10,
                         dense: torch.Tensor | None = None) -> dict[str, float]:
    """Rank of each query's single relevant row among all rows but itself: nDCG@k, MRR@k, recall@1, recall@k."""
    q = torch.as_tensor(queries)
    t = torch.as_tensor(targets)

    def ranks(qv: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
        c = _unit(corpus)
        sims = _unit(qv) @ c.T
        sims.scatter_(1, q[:, None], -float("inf"))
        target = sims.gather(1, t[:, None])
        return (sims > target).sum(dim=1) + 1  # 1-based rank (ties in the target's favour)

    def scores(r: torch.Tensor, suffix: str = "") -> dict[str, float]:
        r = r.double()
        hit = r <= k
        return {f"ndcg_at_{k}{suffix}": float(torch.where(hit, 1.0 / torch.log2(r + 1), 0.0).mean()),
                f"mrr_at_{k}{suffix}": float(torch.where(hit, 1.0 / r, 0.0).mean()),
                f"recall_at_1{suffix}": float((r <= 1).double().mean()),
                f"recall_at_{k}{suffix}": float(hit.double().mean())}

    out = scores(ranks(table[q], table))
    if dense is not None:
        out.update(scores(ranks(dense[q], table), "_asym"))
    out["n_queries"] = float(len(q))
    return out


# -- tasks ----------------------------------------------------------------------------------------------
class _ShippedStoreTask(StoreTask):
    """A store task over shipped dataset splits."""

    dataset: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]

    def data_files(self) -> list[str]:
        return [f"{self.dataset}/{s}" for s in self.splits]

    def _frames(self) -> list:  # list[pandas.DataFrame]
        import pandas as pd

        return [pd.read_parquet(split_path(self.dataset, s)) for s in self.splits]

    def corpus(self) -> list[str]:
        texts: list[str] = []
        for df in self._frames():
            for a, b in zip(df["sentence1"], df["sentence2"]):
                texts.append(a)
                texts.append(b)
        return unique_in_order(texts)[0]


@TASKS.register("store/stsb")
class StoreSTSB(_ShippedStoreTask):
    """STS-B test cosine Spearman from the stored (compressed) vectors."""

    dataset = "stsb"
    splits = ("train", "validation", "test")
    eval_split: ClassVar[str] = "test"
    card = TaskCard("stsb", 1, "store", "cosine_spearman", True, 0.005, "stsb",
                    "store = vectors of the unique STS-B train+validation+test sentences; cosine Spearman of the "
                    "test pairs computed from the compressed vectors")

    def eval_frame(self) -> Any:  # -> pandas.DataFrame
        """The scored pairs (the test split)."""
        import pandas as pd

        return pd.read_parquet(split_path(self.dataset, self.eval_split))

    def evaluate(self, ctx: StoreContext) -> dict[str, float]:
        _, index = unique_in_order(self.corpus())
        df = self.eval_frame()
        i1 = np.array([index[s] for s in df["sentence1"]])
        i2 = np.array([index[s] for s in df["sentence2"]])
        out = pair_cosine_spearman(ctx.table, i1, i2, df["score"].to_numpy(float))
        out["n_pairs"] = float(len(df))

        u = _unit(ctx.table)
        cos = (u[torch.as_tensor(i1)] * u[torch.as_tensor(i2)]).sum(-1).double().numpy()
        if not np.all(cos == cos[0]):
            ctx.items = Items("spearman", cos, df["score"].to_numpy(float))
        return out


@TASKS.register("store/neighbors")
class StoreNeighbors(_ShippedStoreTask):
    """Recall@10 of the exact dense nearest neighbours, on the STS-B sentence store."""

    dataset = "stsb"
    splits = ("train", "validation", "test")
    n_queries: ClassVar[int] = 1000
    card = TaskCard("neighbors", 1, "store", "recall_at_10", True, 0.01, "stsb",
                    "store = unique STS-B sentences (all splits); 1000 queries (seed-0 permutation) taken from the "
                    "store; overlap of the compressed top-10 (cosine, self excluded) with the exact dense top-10")

    def evaluate(self, ctx: StoreContext) -> dict[str, float]:
        n = ctx.table.shape[0]
        g = torch.Generator().manual_seed(0)
        queries = torch.randperm(n, generator=g)[: min(self.n_queries, n)]
        return neighbor_recall(ctx.table, ctx.dense_table, queries, 10)


@TASKS.register("store/mrpc")
class StoreMRPC(_ShippedStoreTask):
    """Paraphrase (duplicate) retrieval on the MRPC sentence store."""

    dataset = "mrpc"
    splits = ("train", "validation", "test")
    card = TaskCard("mrpc", 1, "store", "ndcg_at_10", True, 0.01, "mrpc",
                    "store = unique MRPC sentences (all splits); queries = sentence1 of the 'equivalent' test pairs, "
                    "relevant = its sentence2, searched among all other stored vectors; nDCG@10 (also MRR@10, R@1, R@10)")

    def evaluate(self, ctx: StoreContext) -> dict[str, float]:
        _, index = unique_in_order(self.corpus())
        test = self._frames()[self.splits.index("test")]
        pos = test[(test["label"] == 1) & (test["sentence1"] != test["sentence2"])]
        if pos.empty:
            raise DataError("MRPC test split has no 'equivalent' pairs")
        q = np.array([index[s] for s in pos["sentence1"]])
        t = np.array([index[s] for s in pos["sentence2"]])
        return paraphrase_retrieval(ctx.table, q, t, 10, dense=ctx.dense_table)


@TASKS.register("store/fidelity")
class StoreFidelity(_ShippedStoreTask):
    """Fidelity of the stored vectors (STS-B sentence store)."""

    dataset = "stsb"
    splits = ("train", "validation", "test")
    card = TaskCard("fidelity", 1, "store", "mean_row_cosine", True, 0.002, "stsb",
                    "store = unique STS-B sentences (all splits); relative Frobenius error, mean row cosine, 10-NN "
                    "overlap of 1000 fixed rows (seed 0)")

    def evaluate(self, ctx: StoreContext) -> dict[str, float]:
        return table_fidelity(ctx.dense_table, ctx.table)


__all__ = ["StoreContext", "StoreFidelity", "StoreMRPC", "StoreNeighbors", "StoreSTSB", "StoreTask", "corpus_sha256",
           "neighbor_recall", "pair_cosine_spearman", "paraphrase_retrieval", "topk_neighbors", "unique_in_order"]
