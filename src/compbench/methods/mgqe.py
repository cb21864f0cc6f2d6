"""Multi-Granular Quantized Embeddings (MGQE), trained from scratch (train track).

Kang, Cheng, Hong, Chen, Wang, Chi (and others), "Learning Multi-granular Quantized Embeddings for
Large-Vocab Categorical Features in Recommender Systems", WWW 2020 companion (arXiv 2002.08530); the VLDB
benchmark's layer is Hetu's ``methods/layers/mgqe.py``. MGQE is DPQ's VQ variant (see :mod:`.dpq`) in which
frequent ids may use more centroids than rare ones: the top ``top_percent`` ids by frequency (default 10%,
as in the VLDB configuration) choose among all ``K_high`` centroids of each part (default 256), the others only
among the first ``K_low`` (default 64; Hetu's ``argmax_partial``). A rare id's code therefore needs
``log2 K_low`` bits instead of ``log2 K_high``.

**Stored**: the value codebooks (fp32 ``D x K_high x s``), the codes of the frequent ids at ``log2 K_high`` bits
per part and of the rare ids at ``log2 K_low`` bits (rows byte-aligned), and one tier bit per id, packed (the row
of an id within its tier is its rank among the ids of that tier in id order, recomputed from the stored bits).
The VLDB code counts a full 32-bit flag per id for the tier; here it is one bit. Training-only (0 bytes): the
query table. Codes are written by each training forward, as in DPQ.

**Frequencies**: the shipped token-frequency table, exactly as :mod:`.mde` documents (train splits of the
shipped datasets; no test item of sst2/trec/imdb; it contains those tasks' own train splits; for mr/subj it
holds their held-out sentences' unlabelled counts).

**Budget**: ``D`` (parts) is the largest divisor of ``d`` that fits, as the VLDB code varies the number of parts
to meet a budget. When even ``D = 1`` does not fit (at 100x for d = 128 the 256-centroid codebook alone is
84% of the budget), both ``K_high`` and ``K_low`` are halved until it does (deviation: the VLDB code fixes
256 / 64).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.dpq import DPQEmbedding, initial_codes
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, OptionRange, at_least, opt, positive
from compbench.methods.vldb_common import (
    bits_for,
    divisors,
    frequency_order,
    pack_rows,
    pack_vector,
    row_stride,
    rows_within,
    token_counts,
    unpack_rows,
    unpack_vector,
)


def high_tier(num_embeddings: int, top_percent: float) -> np.ndarray:
    """Bool ``[V]``: the ``ceil(top_percent V)`` most frequent ids of the shipped table (ties by id)."""
    n_high = min(int(num_embeddings), max(1, math.ceil(float(top_percent) * int(num_embeddings))))
    order = frequency_order(token_counts(num_embeddings))
    out = np.zeros(int(num_embeddings), dtype=bool)
    out[order[:n_high]] = True
    return out


def mgqe_bytes(num_embeddings: int, embedding_dim: int, parts: int, k_high: int, k_low: int, n_high: int) -> int:
    """Stored bytes: tier bits + high-tier and low-tier packed codes + fp32 codebooks ``D x K_high x s``."""
    v = int(num_embeddings)
    codes = n_high * row_stride(parts, bits_for(k_high)) + (v - n_high) * row_stride(parts, bits_for(k_low))
    return (v + 7) // 8 + codes + 4 * int(k_high) * int(embedding_dim)


class MGQEEmbedding(DPQEmbedding):
    """DPQ-VQ whose rare ids may only use the first ``K_low`` centroids; codes stored per tier."""

    def __init__(self, num_embeddings: int, embedding_dim: int, parts: int, k_high: int, k_low: int,
                 high: torch.Tensor, query: torch.Tensor, values: torch.Tensor, codes: torch.Tensor):
        self.k_low = int(k_low)
        self.bits_low = bits_for(k_low)
        self._high = high.bool()
        super().__init__(num_embeddings, embedding_dim, parts, k_high, "vq", query, values, None, codes)
        del self._high

    def init_codes(self, codes: torch.Tensor) -> None:
        high = self._high
        self.register_buffer("tier_bits", pack_vector(high.long(), 1))
        self.register_buffer("codes_high", pack_rows(codes[high], self.bits))
        self.register_buffer("codes_low", pack_rows(codes[~high], self.bits_low))
        self.register_buffer("is_high", torch.zeros(self.num_embeddings, dtype=torch.bool), persistent=False)
        self.register_buffer("tier_row", torch.zeros(self.num_embeddings, dtype=torch.int64), persistent=False)
        self.after_load()

    def after_load(self) -> None:
        """Recompute id -> (tier, row within tier) from the stored tier bits."""
        high = unpack_vector(self.tier_bits, 1, self.num_embeddings).to(self.is_high.device).bool()
        self.is_high.copy_(high)
        self.tier_row.copy_(rows_within((~high).long(), 2))

    def restrict(self, ids: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
        low = ~self.is_high[ids]
        k = torch.arange(resp.shape[-1], device=resp.device)
        mask = low.view(-1, 1, 1) & (k >= self.k_low).view(1, 1, -1)
        return resp.masked_fill(mask, -math.inf)

    def write_codes(self, ids: torch.Tensor, codes: torch.Tensor) -> None:
        high = self.is_high[ids]
        rows = self.tier_row[ids]
        if bool(high.any()):
            self.codes_high[rows[high]] = pack_rows(codes[high], self.bits)
        if bool((~high).any()):
            self.codes_low[rows[~high]] = pack_rows(codes[~high], self.bits_low)

    def stored_codes(self, ids: torch.Tensor) -> torch.Tensor:
        high = self.is_high[ids]
        rows = self.tier_row[ids]
        out = torch.zeros(ids.numel(), self.parts, dtype=torch.int64, device=ids.device)
        out[high] = unpack_rows(self.codes_high[rows[high]], self.bits, self.parts)
        out[~high] = unpack_rows(self.codes_low[rows[~high]], self.bits_low, self.parts)
        return out


@METHODS.register("mgqe")
class MGQE(Method):
    """MGQE: DPQ-VQ with K_high centroids for the top 10% frequent ids and the first K_low for the rest."""

    card = MethodCard(
        name="mgqe",
        version=1,
        family="learned-codes",
        reference="Kang et al. 2020, Learning Multi-granular Quantized Embeddings for Large-Vocab Categorical "
                  "Features in Recommender Systems (WWW companion, arXiv 2002.08530)",
        modes=("train",),
        description="DPQ-VQ codes; the 10% most frequent ids (shipped train-split counts) choose among 256 "
                    "centroids per part, the rest among the first 64; codes stored per tier at 8 / 6 bits",
    )

    class Options(MethodOptions):
        high_choices: int = opt(256, "K_high, centroids for frequent ids", at_least(2, high=65536))
        low_choices: int = opt(64, "K_low, centroids for rare ids", at_least(1, high=65536))
        top_percent: float = opt(0.1, "share of ids in the frequent tier", OptionRange(float, 0, 1, min_open=True))
        parts: int | None = opt(None, "D, code parts; must divide d (unset: the largest that fits)", at_least(1))
        init_std: float | None = opt(None, "std of queries and centroids at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        v, d = int(num_embeddings), int(embedding_dim)
        k_high, k_low = self.option("high_choices"), self.option("low_choices")
        if k_low > k_high:
            raise UsageError(f"method '{self.card.name}' needs low_choices <= high_choices, got {k_low} > {k_high}")
        top = self.option("top_percent")
        n_high = int(high_tier(v, top).sum())
        forced_d = self.option("parts")
        if forced_d is not None and d % forced_d:
            raise UsageError(f"option parts={forced_d} of method '{self.card.name}' must divide d={d}")
        part_opts = [forced_d] if forced_d is not None else divisors(d)
        smallest = None
        while k_low >= 1 and k_high >= 2:
            fits = [p for p in part_opts if mgqe_bytes(v, d, p, k_high, k_low, n_high) <= budget_bytes]
            if fits:
                return {"high_choices": k_high, "low_choices": k_low, "top_percent": top, "n_high": n_high,
                        "parts": int(max(fits))}
            nbytes = min(mgqe_bytes(v, d, p, k_high, k_low, n_high) for p in part_opts)
            smallest = nbytes if smallest is None else min(smallest, nbytes)
            k_high, k_low = k_high // 2, k_low // 2
        raise self.unattainable(v, d, budget_bytes, int(smallest))

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        v, d = int(num_embeddings), int(embedding_dim)
        parts, k_high, k_low = int(config["parts"]), int(config["high_choices"]), int(config["low_choices"])
        high = torch.from_numpy(high_tier(v, float(config["top_percent"])))
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(d)
        g = generator(seed)
        query = torch.randn(v, d, generator=g) * std
        values = torch.randn(parts, k_high, d // parts, generator=g) * std
        limits = torch.where(high, k_high, k_low).long()
        codes = initial_codes(query, values, parts, "vq", limits=limits)
        return MGQEEmbedding(v, d, parts, k_high, k_low, high, query, values, codes)
