"""ROBE: Random Offset Block Embedding array, trained from scratch (train track).

Desai, Chou, Shrivastava, "Random Offset Block Embedding (ROBE) for compressed embedding tables in deep
learning recommendation systems", MLSys 2022 (arXiv 2108.02191). All ids share one trainable array ``M`` of
``m`` floats, read circularly. The ``d`` values of an id are cut into chunks of ``Z`` consecutive dimensions
(ROBE-Z); chunk ``c`` of id ``x`` is the block of ``Z`` consecutive array slots that starts at a hashed offset,
each value multiplied by a sign hash::

    E(x)[j] = g(x, j) * M[(h(x, j // Z) + j mod Z) mod m]
    h(x, c) = ((a x + c' c + b) mod p) mod m,     g(x, j) = 1 - 2 (((a' x + c'' j + b') mod p) mod 2)

with ``p = 2^31 - 1`` and ``a, b, c', a', b', c''`` drawn from the seed: universal hashes of (id, chunk) as in
the VLDB benchmark's ``robe_hash_kernel`` / ``robe_sign_kernel`` (Hetu), which hash ``B x + C c + D`` with
``P = 2038074743``. The hash parameters are deterministic functions of the seed, kept in non-persistent
buffers: 0 bytes. Stored: ``M`` only, ``4 m`` bytes; ``m = floor(budget / 4)``, capped at ``V d``.

- ``block_size`` (``Z``, default 32): the paper's ROBE-Z; ``Z = 1`` is HashedNet-style per-value hashing,
  ``Z = d`` reads one contiguous block per id. Deviation (documented): the VLDB benchmark's ``Z: 1`` means "one
  chunk per embedding" in its kernel's convention (``npart = dim / Z``), i.e. ``block_size = d`` here;
  ``-o block_size=128`` (at d=128) reproduces it. The default 32 follows ROBE's DLRM configuration.
- ``signed`` (default true): the sign hash ``g``, as in the paper and Hetu.
- Init: ``M ~ N(0, init_std^2)`` (``init_std = d**-0.5``), so every output entry starts with std ``init_std``
  (Hetu: Xavier-normal over the ``m x 1`` array).
- No slot coefficient: the VLDB kernel adds ``A e`` for the feature field ``e`` when fields share one array;
  a text vocabulary is one field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.hashing import MERSENNE_PRIME
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive


def robe_bytes(size: int) -> int:
    """Stored bytes: the fp32 array of ``m`` values."""
    return 4 * int(size)


class ROBEEmbedding(CompressedEmbedding):
    """One shared circular array; each chunk of ``Z`` dims of an id is a block at a hashed offset, signed."""

    def __init__(self, num_embeddings: int, embedding_dim: int, array: torch.Tensor, block_size: int,
                 hash_params: torch.Tensor, signed: bool = True):
        super().__init__(num_embeddings, embedding_dim)
        if num_embeddings >= MERSENNE_PRIME:
            raise UsageError(f"robe supports vocabularies below {MERSENNE_PRIME:,} ids, got {num_embeddings:,}")
        self.size = int(array.numel())
        self.block_size = int(block_size)
        self.signed = bool(signed)
        self.array = nn.Parameter(array.float().reshape(-1).contiguous())
        # (a, b, c) of the location hash and (a', b', c'') of the sign hash: functions of the seed, 0 bytes
        self.register_buffer("hash_params", hash_params.long(), persistent=False)
        j = torch.arange(embedding_dim, dtype=torch.int64)
        nchunks = -(-int(embedding_dim) // self.block_size)
        self.register_buffer("chunks", torch.arange(nchunks, dtype=torch.int64), persistent=False)
        self.register_buffer("within", j % self.block_size, persistent=False)
        # (c'' j) mod p of the sign hash, so a lookup adds it to (a' x + b') mod p without another division
        self.register_buffer("sign_offsets", (self.hash_params[5] * j) % MERSENNE_PRIME, persistent=False)

    def locations(self, ids: torch.Tensor) -> torch.Tensor:
        """Array slot of every value: ``[..., d]`` int64 (exact: ``a x < 2^62``)."""
        a, b, c = self.hash_params[0], self.hash_params[1], self.hash_params[2]
        x = ids.long().unsqueeze(-1)
        start = ((a * x + c * self.chunks + b) % MERSENNE_PRIME) % self.size  # one offset per chunk
        loc = start.repeat_interleave(self.block_size, dim=-1)[..., : self.embedding_dim] + self.within
        return torch.where(loc >= self.size, loc - self.size, loc)  # circular: start < m and within < Z <= m

    def signs(self, ids: torch.Tensor) -> torch.Tensor:
        """``+1 / -1`` of every value: ``[..., d]``; ``((a' x + c'' j + b') mod p) mod 2``."""
        a, b = self.hash_params[3], self.hash_params[4]
        h = (a * ids.long().unsqueeze(-1) + b) % MERSENNE_PRIME + self.sign_offsets
        h = torch.where(h >= MERSENNE_PRIME, h - MERSENNE_PRIME, h)
        return (1 - 2 * (h & 1)).to(self.array.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        rows = self.array[self.locations(uniq)]
        if self.signed:
            rows = rows * self.signs(uniq)
        return rows[inverse].reshape(*ids.shape, self.embedding_dim)


@METHODS.register("robe")
class ROBE(Method):
    """ROBE-Z: one shared array of ``m`` floats from the budget; chunks of ``Z`` values at hashed offsets."""

    card = MethodCard(
        name="robe",
        version=1,
        family="hashing",
        reference="Desai, Chou, Shrivastava 2022, Random Offset Block Embedding (ROBE) for compressed embedding "
                  "tables in deep learning recommendation systems (MLSys, arXiv 2108.02191)",
        modes=("train",),
        description="one shared fp32 array of m = budget/4 values; each chunk of Z (default 32) dims of an id "
                    "reads Z consecutive slots at a universal-hashed offset, times a sign hash (0 bytes)",
    )

    class Options(MethodOptions):
        block_size: int = opt(32, "Z, values per hashed block (d = one block per id, the VLDB code's Z=1)",
                              at_least(1))
        signed: bool = opt(True, "multiply each value by a +-1 sign hash")
        size: int | None = opt(None, "force the array size m (must fit the budget)", at_least(1))
        init_std: float | None = opt(None, "std of every output entry at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        z = min(self.option("block_size"), int(embedding_dim))
        size = min(int(budget_bytes) // 4, int(num_embeddings) * int(embedding_dim))
        forced = self.option("size")
        if forced is not None:
            size = forced
        if size < z or robe_bytes(size) > budget_bytes:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, robe_bytes(max(size, z)))
        return {"size": int(size), "block_size": int(z), "signed": self.option("signed")}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        size = int(config["size"])
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(embedding_dim)
        g = generator(seed)
        a = torch.randint(1, MERSENNE_PRIME, (2,), generator=g, dtype=torch.int64)
        b = torch.randint(0, MERSENNE_PRIME, (2,), generator=g, dtype=torch.int64)
        c = torch.randint(1, MERSENNE_PRIME, (2,), generator=g, dtype=torch.int64)
        params = torch.stack([a[0], b[0], c[0], a[1], b[1], c[1]])
        array = torch.randn(size, generator=g) * std
        return ROBEEmbedding(num_embeddings, embedding_dim, array, int(config["block_size"]), params,
                             bool(config.get("signed", True)))
