"""``pca``: centered PCA of a pretrained table (the mean is stored and counted).

``E ~= mu + C_r W_r`` where ``mu`` is the column mean of the table, ``W_r`` (``r x d``) the top ``r`` principal
axes of the centered table and ``C_r = (E - mu) W_r^T`` (``V x r``) the coefficients (Pearson 1901;
Hotelling 1933). Computed exactly with ``torch.linalg.svd`` of the centered table in float64, the axes'
signs fixed so that each axis' largest-magnitude entry is positive (as ``svd``). Unlike ``svd`` (no
centering), PCA spends ``d`` numbers on the mean, which matters for tables with a large common component.

Stored, in ``dtype`` (``float32`` by default, ``-o dtype=float16`` halves every factor):
``bytes = s (V r + r d + d)`` with ``s`` = 4 or 2. The rank is the largest that fits, capped at
``min(V, d)``; ``-o rank=`` forces one (it must fit). On MiniLM: 10x gives r = 37 in fp32 (75 in fp16),
40x r = 9 (18), 100x r = 3 (7).

``pca`` is also the reducer of the compositions ``pca+<quantizer>`` (``methods/compose.py``), which quantize
``C_r`` and keep ``W_r`` and ``mu``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS, streaming
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, at_least, opt
from compbench.methods.streaming import column_mean, largest_entry_signs, project_rows, top_right_singular_vectors

DTYPES = {"float32": torch.float32, "float16": torch.float16}
_ALIASES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}


def pca_bytes(num_embeddings: int, embedding_dim: int, rank: int, dtype_bytes: int = 4) -> int:
    """Stored bytes of a rank-``r`` PCA: coefficients ``V x r``, axes ``r x d`` and the mean ``d``."""
    v, d, r = int(num_embeddings), int(embedding_dim), int(rank)
    return int(dtype_bytes) * (v * r + r * d + d)


def pca_max_rank(num_embeddings: int, embedding_dim: int, budget_bytes: int, dtype_bytes: int = 4) -> int:
    """Largest ``r <= min(V, d)`` with ``pca_bytes <= budget_bytes`` (0 when even r = 1 does not fit)."""
    room = int(budget_bytes) // int(dtype_bytes) - int(embedding_dim)
    r = room // (int(num_embeddings) + int(embedding_dim)) if room > 0 else 0
    return int(max(0, min(r, num_embeddings, embedding_dim)))


def principal_axes(table: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(coefficients [V, r], axes [r, d], mean [d])`` in float64, exact: the full SVD of the centred table
    up to ``streaming.DIRECT_MAX_ELEMENTS`` entries, the covariance's ``eigh`` (Gram route) beyond."""
    # the threshold is read at call time: tests lower it on the module
    if table.shape[0] * table.shape[1] > streaming.DIRECT_MAX_ELEMENTS and table.shape[0] >= table.shape[1]:
        mean = column_mean(table)
        axes = top_right_singular_vectors(table, rank, mean)
        return project_rows(table, axes, mean), axes, mean
    x = table.detach().double()
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    axes = vh[:rank]
    axes = axes * largest_entry_signs(axes)[:, None]
    return (x - mean) @ axes.T, axes, mean


class PCAEmbedding(CompressedEmbedding):
    """``E[ids] = coeffs[ids] @ axes + mean``; all three stored (fp32 or fp16), computed in fp32."""

    def __init__(self, coeffs: torch.Tensor, axes: torch.Tensor, mean: torch.Tensor):
        super().__init__(coeffs.shape[0], axes.shape[1])
        self.register_buffer("coeffs", coeffs.contiguous())
        self.register_buffer("axes", axes.contiguous())
        self.register_buffer("mean", mean.contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.coeffs).float() @ self.axes.float() + self.mean.float()

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        return self.coeffs.float() @ self.axes.float() + self.mean.float()


def dtype_option(method: Method, key: str = "dtype") -> str:
    """The canonical name (float32 | float16) of a dtype option (fp32 / fp16 accepted, checked by the model)."""
    return _ALIASES[str(method.option(key))]


@METHODS.register("pca")
class PCA(Method):
    """Centered PCA: mean + top-r axes + coefficients, rank from the budget, fp32 or fp16 factors."""

    card = MethodCard(
        name="pca",
        version=1,
        family="low-rank",
        reference="Pearson 1901; Hotelling 1933 (principal component analysis); PCA + quantisation for RAG "
                  "storage: Huerga-Perez et al. 2025 (arXiv 2505.00105)",
        modes=("posthoc",),
        description="E ~= mean + C_r W_r (centered, exact SVD); mean, axes and coefficients stored, "
                    "rank from the budget",
    )

    class Options(MethodOptions):
        rank: int | None = opt(None, "force a rank (must fit the budget)", at_least(1))
        dtype: Literal["float32", "float16", "fp32", "fp16"] = opt(
            "float32", "factor dtype (fp32 = float32, fp16 = float16)")

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """For the harness' tuning on validation data: fp32 factors (default) and fp16 factors at about twice
        the rank (as ``svd``)."""
        return [{}, {"dtype": "float16"}]

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        dtype = dtype_option(self)
        s = DTYPES[dtype].itemsize
        r = pca_max_rank(num_embeddings, embedding_dim, budget_bytes, s)
        forced = self.option("rank")
        if forced is not None:
            if forced > min(num_embeddings, embedding_dim):
                raise UsageError(f"option rank={forced} of method 'pca' must be <= min(V, d) = "
                                 f"{min(num_embeddings, embedding_dim)}")
            if forced > r:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                        pca_bytes(num_embeddings, embedding_dim, forced, s))
            r = forced
        if r < 1:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                    pca_bytes(num_embeddings, embedding_dim, 1, s))
        return {"rank": r, "dtype": dtype, "centered": True}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        dt = DTYPES[str(config.get("dtype", "float32"))]
        coeffs, axes, mean = principal_axes(table, int(config["rank"]))
        return PCAEmbedding(coeffs.to(dt), axes.to(dt), mean.to(dt))
