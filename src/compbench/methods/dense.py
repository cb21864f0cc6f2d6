"""The dense reference: the uncompressed fp32 table (1x)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from compbench.methods import METHODS
from compbench.methods.method_base import CompressedEmbedding, DenseEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, opt, positive


@METHODS.register("dense")
class Dense(Method):
    """The uncompressed table; the reference every retention and speed ratio is measured against."""

    card = MethodCard(
        name="dense",
        version=1,
        family="reference",
        reference="uncompressed fp32 embedding table",
        modes=("posthoc", "train"),
        description="fp32 V x d table; only meets the 1x budget",
    )

    class Options(MethodOptions):
        init_std: float | None = opt(None, "std of the normal init in the train track (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        need = num_embeddings * embedding_dim * 4
        if budget_bytes < need:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, need)
        return {"dtype": "float32"}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        return DenseEmbedding(table.float())

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(embedding_dim)
        w = torch.randn(num_embeddings, embedding_dim, generator=generator(seed)) * std
        return DenseEmbedding(w, trainable=True)
