"""Tensor-train (TT-Rec) embeddings, trained from scratch (train track).

Yin, Acun, Wu, Liu, "TT-Rec: Tensor Train Matrix Decomposition for Embedding
Tables in Recommendation Models", MLSys 2021 (arXiv 2101.11714); reference code
``facebookresearch/FBTT-Embedding``. The ``V x d`` table is viewed as a TT-matrix
with row shape ``v1 x v2 x v3`` (``v1 v2 v3 >= V``, the padding rows are never
looked up) and column shape ``d1 x d2 x d3 = d``, stored as three cores::

    G1 [v1, d1, R],   G2 [v2, R, d2, R],   G3 [v3, R, d3]
    E(i)[(a, b, c)] = sum_{r, s} G1[i1, a, r] G2[i2, r, b, s] G3[i3, s, c]

with ``i = (i1 v2 + i2) v3 + i3`` and output column ``(a d2 + b) d3 + c``. The forward
gathers the cores of the looked-up ids and contracts them (two batched matmuls per
distinct id), never materialising the table.

Shapes: ``v`` near ``V^(1/3)`` (two equal factors ``ceil(V^(1/3))`` and the third
``ceil(V / (v1 v3))``), ``d`` split into the most balanced three factors; the smallest
factors go to the middle core, which holds ``R^2`` of the parameters. Stored:
``4 (v1 d1 R + v2 d2 R^2 + v3 d3 R)`` bytes; ``R`` is the largest uniform rank that
fits (capped at ``min(v1 d1, v3 d3)``, beyond which TT ranks add nothing).

Init: TT-Rec initialises the cores from a Gaussian scaled so that the *product*
has a target distribution (its "sampled Gaussian" initialisation; FBTT's
``reset_parameters``). Here every core is N(0, s^2) with ``s = (init_std / R)^(1/3)``,
so each reconstructed entry (a sum of ``R^2`` products of three core entries) has
std ``init_std`` (default ``d**-0.5``, the ``dense`` train init).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive


def row_shape(num_embeddings: int) -> list[int]:
    """``[v1, v2, v3]`` with product >= V: two factors ``ceil(V^(1/3))``, the smallest factor in the middle."""
    c = max(1, math.ceil(round(num_embeddings ** (1.0 / 3.0), 9)))
    while c ** 3 < num_embeddings:  # guard against float round-off
        c += 1
    mid = max(1, -(-num_embeddings // (c * c)))
    return [c, mid, c]


def col_shape(embedding_dim: int) -> list[int]:
    """``[d1, d2, d3]`` with product d: the most balanced factorisation, smallest factor in the middle."""
    best: tuple[int, int, int] | None = None
    for d1 in range(1, embedding_dim + 1):
        if embedding_dim % d1:
            continue
        rest = embedding_dim // d1
        for d2 in range(1, rest + 1):
            if rest % d2:
                continue
            f = sorted((d1, d2, rest // d2))
            if best is None or (f[2] - f[0], f[2]) < (best[2] - best[0], best[2]):
                best = (f[0], f[1], f[2])
    assert best is not None
    small, mid, large = best
    return [large, small, mid]


def tt_bytes(rows: Sequence[int], cols: Sequence[int], rank: int) -> int:
    """Stored bytes of the three fp32 cores at uniform rank R."""
    r = int(rank)
    return 4 * (rows[0] * cols[0] * r + rows[1] * cols[1] * r * r + rows[2] * cols[2] * r)


class TTEmbedding(CompressedEmbedding):
    """Three TT cores; ``forward`` contracts the cores of the distinct looked-up ids."""

    def __init__(self, num_embeddings: int, cores: Sequence[torch.Tensor]):
        g1, g2, g3 = cores
        super().__init__(num_embeddings, g1.shape[1] * g2.shape[2] * g3.shape[2])
        self.rows = [int(g1.shape[0]), int(g2.shape[0]), int(g3.shape[0])]
        self.cols = [int(g1.shape[1]), int(g2.shape[2]), int(g3.shape[2])]
        if self.rows[0] * self.rows[1] * self.rows[2] < num_embeddings:
            raise UsageError(f"TT row shape {self.rows} covers fewer than V={num_embeddings} ids")
        self.rank = int(g1.shape[2])
        self.core1 = nn.Parameter(g1.float().contiguous())
        self.core2 = nn.Parameter(g2.float().contiguous())
        self.core3 = nn.Parameter(g3.float().contiguous())

    def digits(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TT row index ``(i1, i2, i3)`` of each id."""
        ids = ids.long()
        v2, v3 = self.rows[1], self.rows[2]
        return ids // (v2 * v3), (ids // v3) % v2, ids % v3

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.numel()
        i1, i2, i3 = self.digits(ids)
        d1, d2, d3 = self.cols
        r = self.rank
        a = self.core1[i1]  # [n, d1, R]
        b = self.core2[i2].reshape(n, r, d2 * r)  # [n, R, d2 R]
        c = self.core3[i3]  # [n, R, d3]
        ab = torch.bmm(a, b).reshape(n, d1 * d2, r)  # [n, d1 d2, R]
        return torch.bmm(ab, c).reshape(n, d1 * d2 * d3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        return self._rows(uniq)[inverse].reshape(*ids.shape, self.embedding_dim)


@METHODS.register("tt")
class TT(Method):
    """TT-Rec: three TT cores, the largest uniform rank that fits the budget."""

    card = MethodCard(
        name="tt",
        version=1,
        family="tensor-train",
        reference="Yin et al. 2021, TT-Rec: Tensor Train Matrix Decomposition for Embedding Tables (MLSys, arXiv 2101.11714)",
        modes=("train",),
        description="3 TT cores (v ~ V^(1/3) x 3, d = d1 d2 d3), uniform rank R from the budget; lookups contract cores",
    )

    class Options(MethodOptions):
        rank: int | None = opt(None, "force the TT rank R (must fit the budget)", at_least(1))
        init_std: float | None = opt(None, "std of every reconstructed entry at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        rows, cols = row_shape(num_embeddings), col_shape(embedding_dim)
        cap = max(1, min(rows[0] * cols[0], rows[2] * cols[2]))
        forced = self.option("rank")
        if forced is not None:
            if tt_bytes(rows, cols, forced) > budget_bytes:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, tt_bytes(rows, cols, forced))
            rank = forced
        else:
            if tt_bytes(rows, cols, 1) > budget_bytes:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, tt_bytes(rows, cols, 1))
            # solve v2 d2 R^2 + (v1 d1 + v3 d3) R <= budget / 4, then correct integer round-off
            qa, qb = rows[1] * cols[1], rows[0] * cols[0] + rows[2] * cols[2]
            rank = int((-qb + math.sqrt(qb * qb + 4 * qa * (budget_bytes / 4))) / (2 * qa))
            rank = max(1, min(rank, cap))
            while rank > 1 and tt_bytes(rows, cols, rank) > budget_bytes:
                rank -= 1
            while rank < cap and tt_bytes(rows, cols, rank + 1) <= budget_bytes:
                rank += 1
        return {"rank": int(rank), "row_shape": rows, "col_shape": cols}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        r = int(config["rank"])
        rows = [int(x) for x in config["row_shape"]]
        cols = [int(x) for x in config["col_shape"]]
        if math.prod(cols) != embedding_dim:
            raise UsageError(f"TT column shape {cols} does not multiply to d={embedding_dim}")
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(embedding_dim)
        s = (std / r) ** (1.0 / 3.0)
        g = generator(seed)
        cores = [
            torch.randn(rows[0], cols[0], r, generator=g) * s,
            torch.randn(rows[1], r, cols[1], r, generator=g) * s,
            torch.randn(rows[2], r, cols[2], generator=g) * s,
        ]
        return TTEmbedding(num_embeddings, cores)
