"""The hashing trick with k hash functions into one shared table (train track).

Weinberger, Dasgupta, Langford, Smola, Attenberg, "Feature Hashing for Large
Scale Multitask Learning", ICML 2009 (arXiv 0902.2206): ids are hashed into ``B``
buckets, optionally with a second hash ``xi(id) in {-1, +1}`` as the sign. The
multi-hash variant (as in the hashing-trick baselines of Shi et al. 2020 and
Kang et al. 2021) sums the rows of ``k`` independent hash functions::

    E(id) = sum_{j < k} s_j(id) * W[h_j(id)],   W: [B, d] trainable, shared by all j

Hash functions come from the universal family of Carter & Wegman,
``h(x) = ((a x + b) mod p) mod B`` with ``p = 2^31 - 1`` and ``a in [1, p)``,
``b in [0, p)`` drawn from the seed. They are deterministic functions of the seed,
kept in non-persistent buffers: 0 stored bytes. Stored: ``W`` only, ``4 B d`` bytes;
``B`` is the largest bucket count that fits, capped at ``V``.

Signs are off by default (option ``signed``): for a learned table they are not
needed (each row learns its own sign) and with ``k >= 2`` an id whose hashes land in
the same bucket with opposite signs would get an identically zero, untrainable
embedding. ``signed=true`` gives Weinberger's signed variant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive

MERSENNE_PRIME = 2**31 - 1  # p of the universal hash family; ids must be < p


def draw_universal(count: int, g: torch.Generator, prime: int = MERSENNE_PRIME) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (a, b) pairs of the universal family: ``a`` in ``[1, p)``, ``b`` in ``[0, p)`` (int64)."""
    a = torch.randint(1, prime, (count,), generator=g, dtype=torch.int64)
    b = torch.randint(0, prime, (count,), generator=g, dtype=torch.int64)
    return a, b


def universal_hash(ids: torch.Tensor, a: torch.Tensor, b: torch.Tensor, buckets: int,
                   prime: int = MERSENNE_PRIME) -> torch.Tensor:
    """``((a * id + b) mod p) mod buckets`` for every id and every (a, b): ``[..., k]`` int64.

    Exact in int64: ``a, id < 2^31`` so ``a * id + b < 2^63``.
    """
    x = ids.long().unsqueeze(-1)
    return ((x * a + b) % prime) % buckets


class HashedEmbedding(CompressedEmbedding):
    """``E(id) = sum_j s_j(id) W[h_j(id)]`` over ``k`` universal hash functions into one ``[B, d]`` table."""

    def __init__(self, num_embeddings: int, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 sign_a: torch.Tensor | None = None, sign_b: torch.Tensor | None = None):
        super().__init__(num_embeddings, weight.shape[1])
        if num_embeddings >= MERSENNE_PRIME:
            raise UsageError(f"hashing supports vocabularies below {MERSENNE_PRIME:,} ids, got {num_embeddings:,}")
        self.num_buckets = int(weight.shape[0])
        self.num_hashes = int(a.numel())
        self.weight = nn.Parameter(weight.float().contiguous())
        self.register_buffer("hash_a", a, persistent=False)
        self.register_buffer("hash_b", b, persistent=False)
        self.signed = sign_a is not None
        if sign_a is not None:
            self.register_buffer("sign_a", sign_a, persistent=False)
            self.register_buffer("sign_b", sign_b, persistent=False)

    def buckets(self, ids: torch.Tensor) -> torch.Tensor:
        """Bucket of every id under every hash function: ``[..., k]``."""
        return universal_hash(ids, self.hash_a, self.hash_b, self.num_buckets)

    def signs(self, ids: torch.Tensor) -> torch.Tensor:
        """``+1 / -1`` of every id under every sign hash (all +1 when unsigned): ``[..., k]``."""
        if not self.signed:
            return torch.ones(*ids.shape, self.num_hashes, dtype=self.weight.dtype, device=ids.device)
        bit = universal_hash(ids, self.sign_a, self.sign_b, 2)
        return (1 - 2 * bit).to(self.weight.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(self.buckets(ids), self.weight)  # [..., k, d]
        if self.signed:
            rows = rows * self.signs(ids).unsqueeze(-1)
        return rows.sum(dim=-2)


def hashing_bytes(buckets: int, embedding_dim: int) -> int:
    """Stored bytes: the fp32 ``[B, d]`` table."""
    return 4 * int(buckets) * int(embedding_dim)


@METHODS.register("hashing")
class Hashing(Method):
    """Multi-hash hashing trick: ``k`` universal hashes into a shared table of ``B`` buckets from the budget."""

    card = MethodCard(
        name="hashing",
        version=1,
        family="hashing",
        reference="Weinberger et al. 2009, Feature Hashing for Large Scale Multitask Learning (ICML, arXiv 0902.2206)",
        modes=("train",),
        description="k universal hashes (default 2) into one shared B x d fp32 table, rows summed; B from the budget",
    )

    class Options(MethodOptions):
        num_hashes: int = opt(2, "number k of hash functions", at_least(1))
        signed: bool = opt(False, "multiply each row by a +-1 sign hash (Weinberger's xi)")
        buckets: int | None = opt(None, "force the bucket count B (must fit the budget)", at_least(1))
        init_std: float | None = opt(None, "std of every output entry at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        k = self.option("num_hashes")
        buckets = min(budget_bytes // (4 * embedding_dim), num_embeddings)
        if buckets < 1:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, hashing_bytes(1, embedding_dim))
        forced = self.option("buckets")
        if forced is not None:
            if hashing_bytes(forced, embedding_dim) > budget_bytes:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                        hashing_bytes(forced, embedding_dim))
            buckets = forced
        return {"buckets": int(buckets), "num_hashes": int(k), "signed": self.option("signed")}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        buckets, k = int(config["buckets"]), int(config["num_hashes"])
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(embedding_dim)
        g = generator(seed)
        a, b = draw_universal(k, g)
        sa, sb = draw_universal(k, g) if config.get("signed") else (None, None)
        w = torch.randn(buckets, embedding_dim, generator=g) * (std / math.sqrt(k))
        return HashedEmbedding(num_embeddings, w, a, b, sa, sb)
