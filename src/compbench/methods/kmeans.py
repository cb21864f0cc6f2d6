"""Weight sharing by k-means: every row is replaced by the nearest of ``K`` centroids.

The classic weight-sharing / vector-quantisation baseline (Gong, Liu, Yang & Bourdev 2014,
"Compressing Deep Convolutional Networks using Vector Quantization", arXiv 1412.6115; the
"weight sharing" stage of Han, Mao & Dally 2016, Deep Compression). The centroids are learned
with ``faiss.Kmeans`` (seeded, ``niter`` Lloyd iterations, random-sample init) on the table itself
and every row is assigned to its nearest centroid (L2).

Stored:

- indices: ``b = max(1, ceil(log2 K))`` bits per row, packed as **one** little-endian bitstring over
  all rows (``faiss.pack_bitstrings`` layout): ``ceil(V b / 8)`` uint8 bytes;
- centroids: ``K x d`` fp32.

``bytes = ceil(V b / 8) + 4 K d``; ``K`` is the largest value (<= V) that fits. ``forward(ids)`` reads
the ``b``-bit index of each id from the bitstring (random access, no unpacking of the table) and
gathers its centroid. With ``K = V`` every row is its own centroid (exact reconstruction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt

DEFAULT_NITER = 25  # faiss' default
DEFAULT_TRAIN_SIZE = 65536


def index_bits(k: int) -> int:
    """Bits per stored index for ``K`` centroids: ``max(1, ceil(log2 K))``."""
    return max(1, (int(k) - 1).bit_length())


def kmeans_bytes(num_embeddings: int, embedding_dim: int, k: int) -> int:
    """Stored bytes: the packed index bitstring plus fp32 centroids."""
    return (int(num_embeddings) * index_bits(k) + 7) // 8 + 4 * int(k) * int(embedding_dim)


def max_k(num_embeddings: int, embedding_dim: int, budget_bytes: int) -> int:
    """Largest ``K <= V`` with ``kmeans_bytes(V, d, K) <= budget_bytes`` (0 when none fits)."""
    best = 0
    for b in range(1, index_bits(num_embeddings) + 1):
        room = budget_bytes - (num_embeddings * b + 7) // 8
        k = min(1 << b, int(num_embeddings), room // (4 * embedding_dim))
        best = max(best, k)
    return int(best)


def read_bits(stream: torch.Tensor, ids: torch.Tensor, bits: int) -> torch.Tensor:
    """The ``bits``-bit little-endian values at positions ``ids`` of a packed bitstring ``uint8 [n]``."""
    off = ids.long() * bits
    byte, shift = off >> 3, off & 7
    last = stream.numel() - 1
    val = torch.zeros_like(off)
    for j in range((bits + 7 + 7) // 8):  # bytes a value can span
        # clamping is safe: a byte past the end only holds bits above the value (masked below)
        val |= stream[(byte + j).clamp_max(last)].long() << (8 * j)
    return (val >> shift) & ((1 << bits) - 1)


class KMeansEmbedding(CompressedEmbedding):
    """Packed centroid indices (one bitstring) + fp32 centroids ``[K, d]``."""

    def __init__(self, stream: torch.Tensor, centroids: torch.Tensor, num_embeddings: int, bits: int):
        super().__init__(num_embeddings, centroids.shape[1])
        self.bits = int(bits)
        self.register_buffer("indices", stream.to(torch.uint8).contiguous())
        self.register_buffer("centroids", centroids.float().contiguous())

    def assignments(self, ids: torch.Tensor) -> torch.Tensor:
        """Centroid index of each id (long, same shape as ``ids``)."""
        return read_bits(self.indices, ids, self.bits)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(self.assignments(ids), self.centroids)


@METHODS.register("kmeans")
class KMeans(Method):
    """Weight sharing: K faiss k-means centroids + a packed index per row; K from the budget."""

    card = MethodCard(
        name="kmeans",
        version=1,
        family="quantization",
        reference="Gong et al. 2014, Compressing Deep Convolutional Networks using Vector Quantization "
                  "(arXiv 1412.6115); weight sharing of Han et al. 2016 (Deep Compression); faiss.Kmeans",
        modes=("posthoc",),
        description="each row -> one of K fp32 centroids; ceil(log2 K)-bit packed indices",
    )

    class Options(MethodOptions):
        K: int | None = opt(None, "force the number of centroids (must fit the budget and be <= V)", at_least(1))
        niter: int = opt(DEFAULT_NITER, "k-means (Lloyd) iterations (faiss' default)", at_least(1))
        train_size: int = opt(DEFAULT_TRAIN_SIZE, "k-means training rows, a seeded subsample; every row is then "
                              "assigned", at_least(1))

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """For the harness' tuning on validation data: the default (the most centroids the budget allows, 25
        iterations, 65,536 training rows), the largest power-of-two K below it (its indices need one bit less, the
        bytes go nowhere else, but the centroids are better trained), 50 iterations, and training on every row."""
        k = max_k(num_embeddings, embedding_dim, budget_bytes)
        space: list[dict[str, Any]] = [{}, {"niter": 2 * DEFAULT_NITER}]
        if num_embeddings > DEFAULT_TRAIN_SIZE:
            space.append({"train_size": int(num_embeddings)})
        if k > 2:
            p2 = 1 << (int(k).bit_length() - 1)
            if p2 < k:
                space.append({"K": p2})
        return space

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        niter = self.option("niter")
        n_train = min(int(num_embeddings), self.option("train_size"))
        cap = min(int(num_embeddings), n_train)  # faiss needs at least K training points
        k = min(max_k(num_embeddings, embedding_dim, budget_bytes), cap)
        forced = self.option("K")
        if forced is not None:
            if not 1 <= forced <= cap:
                raise UsageError(f"kmeans option K={forced} must be between 1 and {cap} (training rows)")
            if kmeans_bytes(num_embeddings, embedding_dim, forced) > budget_bytes:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                        kmeans_bytes(num_embeddings, embedding_dim, forced))
            k = forced
        if k < 1:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                    kmeans_bytes(num_embeddings, embedding_dim, 1))
        return {"K": k, "index_bits": index_bits(k), "niter": niter, "train_size": n_train}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        import faiss

        k, bits = int(config["K"]), int(config["index_bits"])
        x = np.ascontiguousarray(table.detach().float().cpu().numpy())
        v, d = x.shape
        xt = x
        if v > int(config["train_size"]):
            idx = torch.randperm(v, generator=generator(seed))[: int(config["train_size"])].sort().values.numpy()
            xt = np.ascontiguousarray(x[idx])
        # the data is the table being compressed: no "39 points per centroid" warning, no inner subsampling
        km = faiss.Kmeans(d, k, niter=int(config["niter"]), seed=int(seed), verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=math.ceil(xt.shape[0] / k) + 1)
        km.train(xt)
        _, labels = km.index.search(x, 1)
        stream = faiss.pack_bitstrings(np.ascontiguousarray(labels.reshape(1, v).astype(np.int32)), bits)
        centroids = torch.from_numpy(np.array(km.centroids, dtype=np.float32).reshape(k, d))
        return KMeansEmbedding(torch.from_numpy(stream.reshape(-1).copy()), centroids, v, bits)
