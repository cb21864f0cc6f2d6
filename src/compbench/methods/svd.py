"""Truncated SVD (post-hoc low-rank factorisation) of a pretrained table.

``E ~= (U_r S_r) V_r^T`` with both factors stored in fp32 (``4 r (V + d)`` bytes), or in fp16 with
``-o dtype=float16`` (``2 r (V + d)``: about twice the rank; a tuning candidate, see ``tuning_space``).
The rank is the largest that fits the budget (as ``get_lin_rec_latent_dim`` in
the direction-AE paper's code). Computed exactly with ``torch.linalg.svd`` on tables up to
``streaming.DIRECT_MAX_ELEMENTS`` entries; larger tables take the Gram route of :mod:`compbench.methods.streaming`
(``eigh`` of ``X^T X`` accumulated block by block, then ``A = X B^T`` block by block), which gives the same
truncated factors (Eckart-Young) within about 3x the table's fp32 size at peak instead of ~6x.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from compbench.methods import METHODS
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, at_least, opt
from compbench.methods.streaming import (
    DIRECT_MAX_ELEMENTS,
    largest_entry_signs,
    project_rows,
    top_right_singular_vectors,
)


class LowRankEmbedding(CompressedEmbedding):
    """``E[ids] = A[ids] @ B`` with ``A: [V, r]`` and ``B: [r, d]``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, trainable: bool = False):
        super().__init__(a.shape[0], b.shape[1])
        self.a = nn.Parameter(a.float().contiguous(), requires_grad=trainable)
        self.b = nn.Parameter(b.float().contiguous(), requires_grad=trainable)

    @property
    def rank(self) -> int:
        """The factorisation rank r."""
        return self.a.shape[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.a) @ self.b

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        return (self.a @ self.b).float()


class HalfLowRankEmbedding(CompressedEmbedding):
    """``E[ids] = A[ids] @ B`` with both factors stored in fp16 (computed in fp32)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__(a.shape[0], b.shape[1])
        self.register_buffer("a", a.half().contiguous())
        self.register_buffer("b", b.half().contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.a).float() @ self.b.float()

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        return self.a.float() @ self.b.float()


FACTOR_BYTES = {"float32": 4, "float16": 2}


def max_rank(num_embeddings: int, embedding_dim: int, budget_bytes: int, value_bytes: int = 4) -> int:
    """Largest r with factors ``value_bytes r (V + d) <= budget_bytes``, capped at min(V, d)."""
    r = budget_bytes // (value_bytes * (num_embeddings + embedding_dim))
    return int(min(r, num_embeddings, embedding_dim))


@METHODS.register("svd")
class SVD(Method):
    """Truncated SVD with the largest rank that fits the budget."""

    card = MethodCard(
        name="svd",
        version=1,
        family="low-rank",
        reference="Eckart & Young 1936; the SVD baseline of Balazy et al. 2021 (arXiv 2106.08181)",
        modes=("posthoc",),
        description="E ~= (U_r S_r) V_r^T, fp32 factors, rank from the budget",
    )

    class Options(MethodOptions):
        rank: int | None = opt(None, "force a rank (must still fit the budget)", at_least(1))
        dtype: Literal["float32", "float16"] = opt("float32", "factor storage (float16: about twice the rank)")

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """The default (fp32 factors) and fp16 factors at about twice the rank. int8 factors are not offered yet."""
        return [{}, {"dtype": "float16"}]

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        dtype = self.option("dtype")
        vb = FACTOR_BYTES[dtype]
        r = max_rank(num_embeddings, embedding_dim, budget_bytes, vb)
        if r < 1:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, vb * (num_embeddings + embedding_dim))
        forced = self.option("rank")
        if forced is not None:
            if forced > r:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                        vb * forced * (num_embeddings + embedding_dim))
            r = forced
        return {"rank": r} if dtype == "float32" else {"rank": r, "dtype": dtype}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        r = int(config["rank"])
        if table.shape[0] * table.shape[1] > DIRECT_MAX_ELEMENTS and table.shape[0] >= table.shape[1]:
            b = top_right_singular_vectors(table, r)  # the Gram route (streaming.py), same sign convention
            a = project_rows(table, b, out_dtype=torch.float32)
        else:
            u, s, vh = torch.linalg.svd(table.double(), full_matrices=False)
            # sign convention: make the largest-magnitude entry of each right singular vector positive
            signs = largest_entry_signs(vh[:r])
            a = (u[:, :r] * (s[:r] * signs))
            b = vh[:r] * signs[:, None]
        if config.get("dtype", "float32") == "float16":
            return HalfLowRankEmbedding(a.float(), b.float())
        return LowRankEmbedding(a.float(), b.float())
