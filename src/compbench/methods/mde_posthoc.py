"""``mde-posthoc``: mixed-dimension embeddings (Ginart et al., ISIT'21) fitted to a pretrained table.

The layout is :mod:`compbench.methods.mde`'s: ids ranked by frequency and cut into ``k`` geometric blocks
(``V/2^(k-1), V/2^(k-1), ..., V/2`` ids, head first); block ``i`` gets width ``d_i = lambda p_i^alpha`` (the
paper's power rule, ``p_i`` the mean popularity of one id of the block), ``lambda`` the largest that fits the
budget; every narrower block has its own ``d_i x d`` projection; the packed block id of every row is stored.
Everything is counted: ``4 sum n_i d_i + 4 sum_{d_i < d} d_i d + ceil(V ceil(log2 k) / 8)`` bytes
(:func:`compbench.methods.mde.mde_bytes`).

**Fitting post hoc** (the paper trains the blocks; here the table exists): block ``i``'s rows ``X_i`` are
replaced by their best rank-``d_i`` approximation in Frobenius norm, ``T_i P_i`` with ``P_i`` the top ``d_i``
right singular vectors of ``X_i`` and ``T_i = X_i P_i^T`` (Eckart-Young: the optimal ``T_i, P_i`` for that
block); full-width blocks keep their rows. No centring (the paper's ``E = T P`` has no bias).

**Frequencies** (never the evaluation data): the shipped token counts of the calibration corpus when the table
is MiniLM's 30,522-row WordPiece vocabulary (``datasets/data/token-frequency``; name and sha256 recorded in the
config), otherwise the row order as a Zipf law ``1 / (row + 1)`` (GloVe is frequency-sorted; a store has no
frequencies) -- :func:`compbench.methods.tiered.row_counts`.

Tuning (on validation data, by the harness): the temperature ``alpha`` in {0.1, 0.2, 0.3, 0.5} and ``k`` in
{4, 8} blocks (8 candidates): the paper treats ``alpha`` as the knob that trades head width for tail width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.mde import MDEmbedding, block_popularity, budget_dims, mde_bytes
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, OptionRange, at_least, opt
from compbench.methods.streaming import project_rows, top_right_singular_vectors
from compbench.methods.tiered import is_frequency_mode, row_counts
from compbench.methods.vldb_common import blocks_by_frequency

FREQUENCIES = ("auto", "corpus", "row-order")
ALPHAS = (0.1, 0.2, 0.3, 0.5)
BLOCKS = (4, 8)


def layout(num_embeddings: int, blocks: int, frequencies: str = "auto") -> tuple[np.ndarray, np.ndarray,
                                                                                   list[int], dict[str, Any]]:
    """``(block of every id, counts, block sizes, frequency source)`` for a ``V``-row table."""
    counts, source = row_counts(int(num_embeddings), frequencies)
    block_of, sizes = blocks_by_frequency(counts, int(blocks))
    return block_of, counts, sizes, source


def low_rank_block(rows: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(T [n, width], P [width, d])`` minimising ``||rows - T P||_F`` (``P`` None when ``width >= d``)."""
    if width >= rows.shape[1]:
        return rows.clone(), None

    proj = top_right_singular_vectors(rows, width)  # exact SVD, or the Gram route on large blocks (streaming.py)
    return project_rows(rows, proj, out_dtype=torch.float32), proj.float()


@METHODS.register("mde-posthoc")
class MDEPosthoc(Method):
    """Mixed-dimension blocks by frequency, each block's rows replaced by their best rank-``d_i`` factors."""

    card = MethodCard(
        name="mde-posthoc",
        version=1,
        family="mixed-dimension",
        reference="Ginart et al. 2021, Mixed Dimension Embeddings with Application to Memory-Efficient "
                  "Recommendation Systems (ISIT, arXiv 1909.11810); fitted post hoc by per-block truncated SVD",
        modes=("posthoc",),
        description="k geometric frequency blocks (calibration-corpus counts, else row order); width "
                    "d_i = lambda p_i^alpha from the budget; per block the best rank-d_i factors T_i P_i; "
                    "projections and packed block ids counted",
    )

    class Options(MethodOptions):
        blocks: int = opt(8, "number k of frequency blocks", at_least(1))
        alpha: float = opt(0.3, "temperature of the power rule d_i ~ p_i^alpha", OptionRange(float, 0, 4))
        frequencies: str = opt("auto", "auto (calibration-corpus counts for MiniLM's vocabulary, else row order) | "
                               "corpus | row-order | file:PATH (your counts: --frequencies FILE)")

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """``alpha`` x ``blocks`` (8 candidates), for the harness' tuning on validation data."""
        return [{"alpha": a, "blocks": k} for k in BLOCKS for a in ALPHAS]

    def _frequencies(self) -> str:
        mode = self.option("frequencies")
        if not is_frequency_mode(mode):
            raise UsageError(f"option frequencies={mode!r} of method 'mde-posthoc' must be one of "
                             f"{', '.join(FREQUENCIES)}")
        return mode

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        v, d = int(num_embeddings), int(embedding_dim)
        k = self.option("blocks")
        alpha = self.option("alpha")
        block_of, counts, sizes, source = layout(v, k, self._frequencies())
        pop = block_popularity(counts, block_of, len(sizes))
        dims = budget_dims(v, d, sizes, pop, alpha, budget_bytes)
        if dims is None:
            raise self.unattainable(v, d, budget_bytes, mde_bytes(v, d, sizes, [1] * len(sizes)))
        return {"blocks": len(sizes), "alpha": alpha, "sizes": sizes, "dims": dims,
                "frequencies": {**source, "mode": self._frequencies()}}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        x = table.detach().float().cpu()
        v, d = x.shape
        block_of, _, sizes, _ = layout(v, int(config["blocks"]), str(config["frequencies"]["mode"]))
        if sizes != [int(s) for s in config["sizes"]]:
            raise ValueError(f"mde-posthoc: frequency blocks {sizes} differ from the configured {config['sizes']}")
        blocks = torch.from_numpy(block_of)
        tables, projs = [], []
        for b, width in enumerate(int(w) for w in config["dims"]):
            rows = x[(blocks == b).nonzero().reshape(-1)]  # id order: MDEmbedding's row within its block
            t, p = low_rank_block(rows, width)
            tables.append(t)
            projs.append(p)
        return MDEmbedding(v, d, blocks, len(sizes), tables, projs)
