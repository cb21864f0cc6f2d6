"""A compbench method written outside the tree: a Johnson-Lindenstrauss random projection.

Stored: ``P = E @ R / sqrt(k)`` in fp16 (``2 V k`` bytes); decoded as ``P @ R^T / sqrt(k)``. ``R [d, k]`` is a
Gaussian matrix drawn from the seed, so it is derivable state and costs 0 bytes (a non-persistent buffer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from compbench.methods import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, at_least, opt


def projection(d: int, k: int, seed: int) -> torch.Tensor:
    """The ``[d, k]`` Gaussian projection of ``seed`` (the same on every machine)."""
    return torch.randn(d, k, generator=torch.Generator().manual_seed(seed)) / math.sqrt(k)


class ProjectedEmbedding(CompressedEmbedding):
    def __init__(self, projected: torch.Tensor, d: int, seed: int):
        super().__init__(projected.shape[0], d)
        self.register_buffer("p", projected.half().contiguous())
        self.register_buffer("r", projection(d, projected.shape[1], seed), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.p).float() @ self.r.T

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        return self.p.float() @ self.r.T


class ToyProjection(Method):
    card = MethodCard(name="toy", version=1, family="projection", modes=("posthoc",),
                      reference="Johnson & Lindenstrauss 1984 (docs/extending.md example)",
                      description="seeded Gaussian random projection, fp16 codes")

    class Options(MethodOptions):  # every option once: its type, default, valid values and help
        k: int | None = opt(None, "force a width (must fit the budget)", at_least(1))

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        k = min(budget_bytes // (2 * num_embeddings), embedding_dim)
        forced = self.option("k")
        k = k if forced is None else min(k, forced)
        if k < 1:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, 2 * num_embeddings)
        return {"k": int(k)}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        r = projection(table.shape[1], int(config["k"]), seed)
        return ProjectedEmbedding(table.float() @ r, table.shape[1], seed)
