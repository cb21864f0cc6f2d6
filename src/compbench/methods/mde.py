"""Mixed-dimension embeddings (MDE), trained from scratch (train track).

Ginart, Naumov, Mudigere, Yang, Zou, "Mixed Dimension Embeddings with Application to Memory-Efficient
Recommendation Systems", ISIT 2021 (arXiv 1909.11810); reference code ``facebookresearch/dlrm``
(``md_embedding_bag.py``: ``md_solver`` / ``alpha_power_rule``, ``PrEmbeddingBag``). Ids are ranked by
frequency and cut into ``k`` blocks; block ``i`` holds ``n_i`` rows of its own width ``d_i`` and, when
``d_i < d``, a ``d_i x d`` projection (no bias) up to the common width::

    E(x) = T_i[r(x)] @ P_i,     i = block(x), r(x) = row of x within its block

Dimensions follow the paper's power rule ``d_i = lambda * p_i^alpha`` (``p_i`` = mean popularity of one id of
block ``i``, ``alpha`` the temperature, default 0.3 as DLRM's ``--md-temperature``), rounded and clipped to
``[1, d]``; ``lambda`` is the largest that fits the budget (the paper's memory-budget form; DLRM and the VLDB
code search ``alpha`` with ``d_0 = d`` instead, which cannot reach 100x here because the head block alone would
then exceed it).

**Frequencies.** The train track does not hand frequencies to ``build()``. MDE ranks ids by the shipped
token-frequency table (``compbench.datasets.frequencies.load_token_frequencies``: MiniLM WordPiece counts of the
calibration corpus, ``datasets/data/token-frequency``, see ``datasets/data/PROVENANCE.md``): the *train* splits
of sst2, trec, stsb, mrpc and imdb and all of mr, cr, subj, mpqa (which have no official split). It contains no
test item of sst2, trec, imdb, 20newsgroups or ag_news, and it *does* contain the task's own train split for
sst2, trec and imdb (unlabelled token counts only). For the ``mr`` and ``subj`` train tasks it also contains
their held-out test sentences (token counts, no labels): a documented leak of unlabelled text statistics.
20newsgroups and ag_news are not in it at all (frequencies from other corpora).

**Blocks.** A text vocabulary is one field, so blocks are frequency-rank ranges, geometric towards the head:
``V/2^(k-1), V/2^(k-1), V/2^(k-2), ..., V/2`` ids (``k = 8`` by default: 238, 239, 477, ..., 15,261 ids for
V = 30,522). Ids never seen in the corpus (count 0) fall in the last blocks. Popularity is add-one smoothed.

**Bytes.** ``4 sum_i n_i d_i`` (tables) ``+ 4 sum_{d_i < d} d_i d`` (projections) ``+ ceil(V b / 8)`` with
``b = ceil(log2 k)``: the block id of every id, packed, *is stored* (the row within a block is the id's rank
among the ids of that block in id order, recomputed from the stored block ids). Counting the assignment is a
choice: it is a fixed function of the shipped table, but a deployed model would have to carry it.

Init (deviation): tables ``N(0, init_std^2)`` and projections ``N(0, 1/d_i)`` (fan-in), so every output entry
starts with std ``init_std = d**-0.5``; DLRM uses uniform ``sqrt(1/n_i)`` tables and Xavier projections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.methods import METHODS
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, OptionRange, at_least, opt, positive
from compbench.methods.vldb_common import (
    as_int_list,
    bits_for,
    frequency_blocks,
    pack_vector,
    rows_within,
    unpack_vector,
)


def mde_bytes(num_embeddings: int, embedding_dim: int, sizes: list[int], dims: list[int]) -> int:
    """Stored bytes: fp32 block tables, fp32 projections of the narrower blocks, packed block ids."""
    d = int(embedding_dim)
    tables = sum(n * k for n, k in zip(sizes, dims))
    proj = sum(k * d for k in dims if k < d)
    ids = (int(num_embeddings) * bits_for(len(sizes)) + 7) // 8
    return 4 * (tables + proj) + ids


def block_popularity(counts: np.ndarray, block_of: np.ndarray, nblocks: int) -> np.ndarray:
    """Mean add-one-smoothed probability of one id of each block."""
    p = (counts.astype(np.float64) + 1.0) / float(counts.sum() + len(counts))
    return np.array([p[block_of == b].mean() for b in range(nblocks)])


def power_dims(lam: float, rel: np.ndarray, alpha: float, d: int) -> list[int]:
    """``clip(round(lam * rel^alpha), 1, d)`` per block."""
    return [int(min(d, max(1, round(lam * float(r) ** alpha)))) for r in rel]


def budget_dims(num_embeddings: int, embedding_dim: int, sizes: list[int], pop: np.ndarray, alpha: float,
                budget_bytes: int) -> list[int] | None:
    """The power-rule widths of the largest ``lambda`` whose layout fits the budget (None when none does)."""
    v, d = int(num_embeddings), int(embedding_dim)
    rel = pop / pop[0]
    # every lambda at which some block's width changes (round(lam * r^alpha) crosses t - 0.5)
    scale = np.array([float(r) ** alpha for r in rel])
    cands = sorted({(t - 0.5) / s for s in scale for t in range(1, d + 1) if s > 0} | {float(d) / scale.min()})
    best: list[int] | None = None
    for lam in cands:  # bytes are not monotone in lambda (a projection vanishes at full width): scan all
        dims = power_dims(lam + 1e-9, rel, alpha, d)
        if mde_bytes(v, d, sizes, dims) <= budget_bytes:
            best = dims
    return best


class MDEmbedding(CompressedEmbedding):
    """Per-block tables of width ``d_i`` and ``d_i x d`` projections; the block of every id is stored, packed."""

    def __init__(self, num_embeddings: int, embedding_dim: int, block_ids: torch.Tensor, nblocks: int,
                 tables: list[torch.Tensor], projections: list[torch.Tensor | None]):
        super().__init__(num_embeddings, embedding_dim)
        self.nblocks = int(nblocks)
        self.id_bits = bits_for(nblocks)
        self.dims = [int(t.shape[1]) for t in tables]
        self.register_buffer("block_ids", pack_vector(block_ids.long(), self.id_bits))
        self.tables = nn.ParameterList([nn.Parameter(t.float().contiguous()) for t in tables])
        self.proj_index = [-1] * self.nblocks  # block -> index into projections (-1: full width, none)
        projs = []
        for b, p in enumerate(projections):
            if p is not None:
                self.proj_index[b] = len(projs)
                projs.append(nn.Parameter(p.float().contiguous()))
        self.projections = nn.ParameterList(projs)
        self.register_buffer("block_of", torch.zeros(num_embeddings, dtype=torch.int64), persistent=False)
        self.register_buffer("row_of", torch.zeros(num_embeddings, dtype=torch.int64), persistent=False)
        self.after_load()

    def after_load(self) -> None:
        """Recompute the id -> (block, row) caches from the stored block ids."""
        blk = unpack_vector(self.block_ids, self.id_bits, self.num_embeddings).to(self.block_of.device)
        self.block_of.copy_(blk)
        self.row_of.copy_(rows_within(blk, self.nblocks))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.after_load()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).long()
        blk = self.block_of[flat]
        row = self.row_of[flat]
        out = torch.zeros(flat.numel(), self.embedding_dim, dtype=self.tables[0].dtype, device=flat.device)
        for b in range(self.nblocks):
            sel = (blk == b).nonzero().reshape(-1)
            if sel.numel() == 0:
                continue
            vec = self.tables[b][row[sel]]
            if self.proj_index[b] >= 0:
                vec = vec @ self.projections[self.proj_index[b]]
            out = out.index_copy(0, sel, vec)
        return out.reshape(*ids.shape, self.embedding_dim)


@METHODS.register("mde")
class MDE(Method):
    """Mixed-dimension embeddings: frequency blocks of decreasing width (power rule) with projections."""

    card = MethodCard(
        name="mde",
        version=1,
        family="mixed-dimension",
        reference="Ginart et al. 2021, Mixed Dimension Embeddings with Application to Memory-Efficient "
                  "Recommendation Systems (ISIT, arXiv 1909.11810)",
        modes=("train",),
        description="ids ranked by the shipped train-split token counts, k=8 geometric blocks; block i has "
                    "width d_i = lambda p_i^alpha (alpha 0.3) and a d_i x d projection; lambda from the budget; "
                    "packed block ids counted",
    )

    class Options(MethodOptions):
        blocks: int = opt(8, "number k of frequency blocks", at_least(1))
        alpha: float = opt(0.3, "temperature of the power rule d_i ~ p_i^alpha", OptionRange(float, 0, 4))
        init_std: float | None = opt(None, "std of every output entry at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        v, d = int(num_embeddings), int(embedding_dim)
        k = self.option("blocks")
        alpha = self.option("alpha")
        block_of, counts, sizes = frequency_blocks(v, k)
        pop = block_popularity(counts, block_of, len(sizes))
        best = budget_dims(v, d, sizes, pop, alpha, budget_bytes)
        smallest = mde_bytes(v, d, sizes, [1] * len(sizes))
        if best is None:
            raise self.unattainable(v, d, budget_bytes, smallest)
        return {"blocks": len(sizes), "alpha": alpha, "sizes": sizes, "dims": best}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        v, d = int(num_embeddings), int(embedding_dim)
        sizes, dims = as_int_list(config["sizes"]), as_int_list(config["dims"])
        block_of, _, got = frequency_blocks(v, int(config["blocks"]))
        if got != sizes:  # the shipped table changed since configure: refuse rather than mis-assign
            raise ValueError(f"mde: frequency blocks {got} differ from the configured {sizes}")
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(d)
        g = generator(seed)
        tables, projs = [], []
        for n, k in zip(sizes, dims):
            tables.append(torch.randn(n, k, generator=g) * std)
            projs.append(torch.randn(k, d, generator=g) / math.sqrt(k) if k < d else None)
        return MDEmbedding(v, d, torch.from_numpy(block_of), len(sizes), tables, projs)
