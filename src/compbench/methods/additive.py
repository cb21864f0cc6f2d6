"""``rq`` and ``lsq``: additive quantisation of a pretrained table, via faiss.

A row is the sum of ``M`` codewords, one from each of ``M`` full-dimensional codebooks of ``K = 2^nbits``
entries: ``x ~= C_1[i_1] + ... + C_M[i_M]``.

- ``rq``: residual quantisation (Chen, Guan & Wang 2010, "Approximate Nearest Neighbor Search by Residual
  Vector Quantization", Sensors; Juang & Gray 1982 multistage VQ) with beam search (Babenko & Lempitsky
  2014; Liu et al. 2015), ``faiss.ResidualQuantizer`` (progressive-dimension k-means per stage, beam
  search encoding).
- ``lsq``: local-search quantisation (Martinez, Zakhmi, Hoos & Little, "LSQ++: Lower running time and higher
  recall in multi-codebook quantization", ECCV 2018), ``faiss.LocalSearchQuantizer`` (codebooks by least
  squares, codes by iterated conditional modes with perturbations).

Stored: ``codes`` ``V x ceil(M nbits / 8)`` uint8, faiss' packing (one little-endian bitstring per row,
``search_type = ST_decompress``: no norm is stored), and ``codebooks`` ``M x 2^nbits x d`` fp32.
``bytes = V ceil(M nbits / 8) + 4 M 2^nbits d``. ``forward(ids)`` unpacks the codes of ``ids`` and sums one
codeword per codebook (``embedding_bag``), which equals faiss' ``decode`` (tested).

Budget rule: every ``nbits`` in 1..8 (with ``2^nbits <=`` training rows) and ``M`` in 1..``max_M`` that fit;
the pair with the most code bits per row ``M nbits`` wins, ties to the larger ``nbits``. Full-dimensional
codebooks are expensive on a 30k-row table (one 8-bit codebook of 384-d is 393 KB, a third of the 40x budget),
so small codebooks with many stages win: on MiniLM, ``rq`` takes 64 x 5 bits at 10x (10.7x), 48 x 3 bits at
40x (41.2x) and 32 x 2 bits at 100x (106x); ``lsq`` (``max_M`` 32) 32 x 6 bits at 10x (12.1x), 29 x 4 at 40x
(40.1x), 32 x 2 at 100x. ``-o M= / -o nbits=`` force either (they must fit).

Training parameters and their cost (MiniLM, 1 thread, a 2-core machine shared with other jobs; all overridable
with ``-o``):

- ``rq``: trained on ``train_size`` = 16384 rows (a seeded subsample; every row is then encoded),
  ``niter`` = 10 k-means iterations per stage (faiss' default), ``beam`` = 5 (faiss' ``max_beam_size``
  default). ``max_M`` = 64 bounds the stages. Measured mean row cosine and fit time: 10x (64 x 5 bits) 0.841,
  ~105 s; 40x (48 x 3 bits) 0.680, 50 s (``compbench run --method rq --budget 40x --task fidelity``);
  100x (32 x 2 bits) 0.539, ~57 s.
- ``lsq``: ``train_size`` = 8192 rows, ``train_iters`` = 10 (faiss: 25), ``encode_ils_iters`` = 8 (faiss: 16),
  faiss' defaults otherwise (``icm_iters`` = 4, ``train_ils_iters`` = 8). Its ICM encoding costs ~``M^2 K`` per
  row and sweep, hence ``max_M`` = 32. Measured: 10x (32 x 6 bits) 0.746, ~110 s; 40x (29 x 4 bits) 0.675,
  22 s. (``pq`` at 40x: 0.698.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.bitstring import unpack_rows
from compbench.methods.faiss_search import codes_array, copy_into, index_searcher
from compbench.methods.method_base import CodeSearch, CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt
from compbench.methods.streaming import encode_blocks, rows_per_block

RQ_NITER, RQ_BEAM = 10, 5
LSQ_TRAIN_ITERS, LSQ_ENCODE_ILS = 10, 8


def aq_code_size(m: int, nbits: int) -> int:
    """Bytes per row of packed additive-quantizer codes: ``ceil(M nbits / 8)`` (faiss ``code_size``)."""
    return (int(m) * int(nbits) + 7) // 8


def aq_bytes(num_embeddings: int, embedding_dim: int, m: int, nbits: int) -> int:
    """Stored bytes: packed codes + ``M`` fp32 codebooks of ``2^nbits x d``."""
    return int(num_embeddings) * aq_code_size(m, nbits) + 4 * int(m) * (1 << int(nbits)) * int(embedding_dim)


class AdditiveEmbedding(CompressedEmbedding):
    """Packed codes ``[V, ceil(M nbits / 8)]`` + codebooks ``[M, 2^nbits, d]``; a row is a sum of M codewords."""

    def __init__(self, codes: torch.Tensor, codebooks: torch.Tensor, nbits: int, quantizer: str = "rq"):
        m, k, d = codebooks.shape
        super().__init__(codes.shape[0], d)
        self.m, self.k, self.nbits = int(m), int(k), int(nbits)
        self.quantizer = str(quantizer)  # which faiss index searches these codes (rq | lsq); not stored
        self.register_buffer("codes", codes.to(torch.uint8).contiguous())
        self.register_buffer("codebooks", codebooks.float().contiguous())
        # offsets of each codebook in the flattened [M K, d] table: a function of (M, K), not stored
        self.register_buffer("offsets", torch.arange(self.m) * self.k, persistent=False)

    def after_load(self) -> None:
        """Recompute the derived (non-persistent) buffers from the plain attributes (an exported module's load)."""
        self.offsets.copy_(torch.arange(self.m, device=self.offsets.device) * self.k)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        idx = unpack_rows(self.codes[ids.reshape(-1)], self.nbits, self.m) + self.offsets
        flat = self.codebooks.reshape(self.m * self.k, self.embedding_dim)
        out = nn.functional.embedding_bag(idx, flat, mode="sum")
        return out.reshape(*ids.shape, self.embedding_dim)

    def code_search(self) -> CodeSearch:
        """faiss ``IndexResidualQuantizer`` / ``IndexLocalSearchQuantizer`` on the stored codes and codebooks:
        inner product through per-codebook look-up tables (``ST_LUT_nonorm``: no norm is stored or needed)."""
        import faiss

        cls = faiss.IndexLocalSearchQuantizer if self.quantizer == "lsq" else faiss.IndexResidualQuantizer
        index = cls(self.embedding_dim, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT,
                    faiss.AdditiveQuantizer.ST_LUT_nonorm)
        aq = index.lsq if self.quantizer == "lsq" else index.rq
        copy_into(self.codebooks, aq.codebooks)
        aq.is_trained = True
        index.is_trained = True
        index.add_sa_codes(codes_array(self.codes))
        return CodeSearch(f"faiss.{cls.__name__} (LUT inner product)", index_searcher(index))


def _sample_rows(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if x.shape[0] <= n:
        return x
    idx = torch.randperm(x.shape[0], generator=generator(seed))[:n].sort().values.numpy()
    return np.ascontiguousarray(x[idx])


def _codebooks(q: Any, m: int, nbits: int, d: int) -> torch.Tensor:
    import faiss

    arr = faiss.vector_to_array(q.codebooks).reshape(m, 1 << nbits, d)
    return torch.from_numpy(arr.copy())


_MAX_M_HELP = "the most codebooks the budget rule may choose (bounds the fit time)"
_TRAIN_SIZE_HELP = "training rows, a seeded subsample (every row is then encoded)"


class _AdditiveOptions(MethodOptions):
    """The options ``rq`` and ``lsq`` share; ``max_M`` and ``train_size`` have a default per method (below)."""

    M: int | None = opt(None, "force the number of codebooks (must fit the budget)", at_least(1))
    nbits: int | None = opt(None, "force the bits per code (1..8; must fit the budget)", at_least(1, high=8))


class _RQOptions(_AdditiveOptions):
    max_M: int = opt(64, _MAX_M_HELP, at_least(1))
    train_size: int = opt(16384, _TRAIN_SIZE_HELP, at_least(2))
    niter: int = opt(RQ_NITER, "k-means iterations per stage (faiss' default)", at_least(1))
    beam: int = opt(RQ_BEAM, "beam size of the encoder (faiss' max_beam_size default)", at_least(1))


class _LSQOptions(_AdditiveOptions):
    max_M: int = opt(32, _MAX_M_HELP, at_least(1))
    train_size: int = opt(8192, _TRAIN_SIZE_HELP, at_least(2))
    train_iters: int = opt(LSQ_TRAIN_ITERS, "codebook/code alternations (faiss: 25)", at_least(1))
    encode_ils_iters: int = opt(LSQ_ENCODE_ILS, "ILS iterations when encoding the table (faiss: 16)", at_least(1))


class _Additive(Method, ABC):
    """Shared budget rule of ``rq`` and ``lsq`` (their options: :class:`_AdditiveOptions`)."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The quantizer's own training parameters (recorded in the config)."""

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        n_train = min(int(num_embeddings), self.option("train_size"))
        cap = max(1, n_train.bit_length() - 1)  # 2^nbits <= training rows
        nb = self.option("nbits")
        if nb is not None:
            if (1 << nb) > n_train:
                raise UsageError(f"option nbits={nb} of method '{self.card.name}' needs >= {1 << nb} training rows, "
                                 f"the table gives {n_train}")
            widths = [nb]
        else:
            widths = list(range(min(8, cap), 0, -1))
        forced_m = self.option("M")
        ms = [forced_m] if forced_m is not None else list(range(1, self.option("max_M") + 1))
        best: tuple[int, int, int] | None = None  # (code bits, nbits, M)
        for nb in widths:
            fits = [m for m in ms if aq_bytes(num_embeddings, embedding_dim, m, nb) <= budget_bytes]
            if fits:
                cand = (max(fits) * nb, nb, max(fits))
                if best is None or cand[:2] > best[:2]:
                    best = cand
        if best is None:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                    min(aq_bytes(num_embeddings, embedding_dim, m, nb) for nb in widths for m in ms))
        _, nb, m = best
        return {"M": m, "nbits": nb, "code_bytes_per_row": aq_code_size(m, nb), "train_size": n_train,
                **self._params()}

    @abstractmethod
    def _train(self, x: np.ndarray, config: Mapping[str, Any], seed: int) -> Any:
        """The trained faiss additive quantizer."""

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        x = np.ascontiguousarray(table.detach().float().cpu().numpy())
        m, nb = int(config["M"]), int(config["nbits"])
        q = self._train(_sample_rows(x, int(config["train_size"]), seed), config, seed)

        # block by block: the encoders' beam / ICM temporaries grow with the rows encoded at once
        codes = encode_blocks(q.compute_codes, x, int(q.code_size), rows_per_block(m * (1 << nb) * 4 * 8))
        return AdditiveEmbedding(torch.from_numpy(codes), _codebooks(q, m, nb, x.shape[1]), nb,
                                 quantizer=self.card.name)


@METHODS.register("rq")
class RQ(_Additive):
    """Residual quantisation (faiss.ResidualQuantizer, beam search); M and nbits from the budget."""

    card = MethodCard(
        name="rq",
        version=1,
        family="quantization",
        reference="Chen, Guan & Wang 2010, Approximate Nearest Neighbor Search by Residual Vector Quantization "
                  "(Sensors); faiss ResidualQuantizer (beam search)",
        modes=("posthoc",),
        description="sum of M codewords from M full-d codebooks of 2^nbits (greedy residual stages, beam "
                    "search); packed codes + fp32 codebooks",
    )
    Options = _RQOptions

    def _params(self) -> dict[str, Any]:
        return {"niter": self.option("niter"), "beam": self.option("beam"), "max_M": self.option("max_M")}

    def _train(self, x: np.ndarray, config: Mapping[str, Any], seed: int) -> Any:
        import faiss

        q = faiss.ResidualQuantizer(x.shape[1], int(config["M"]), int(config["nbits"]))
        q.cp.seed = int(seed)
        q.cp.niter = int(config["niter"])
        q.cp.min_points_per_centroid = 1  # the data is the set being compressed (as pq)
        q.max_beam_size = int(config["beam"])
        q.verbose = False
        q.train(x)
        return q


@METHODS.register("lsq")
class LSQ(_Additive):
    """Local-search quantisation (faiss.LocalSearchQuantizer, LSQ++); M and nbits from the budget."""

    card = MethodCard(
        name="lsq",
        version=1,
        family="quantization",
        reference="Martinez et al. 2018, LSQ++: Lower running time and higher recall in multi-codebook "
                  "quantization (ECCV); faiss LocalSearchQuantizer",
        modes=("posthoc",),
        description="sum of M codewords from M full-d codebooks of 2^nbits (joint codebooks, ICM encoding); "
                    "packed codes + fp32 codebooks",
    )
    Options = _LSQOptions

    def _params(self) -> dict[str, Any]:
        return {"train_iters": self.option("train_iters"), "encode_ils_iters": self.option("encode_ils_iters"),
                "max_M": self.option("max_M")}

    def _train(self, x: np.ndarray, config: Mapping[str, Any], seed: int) -> Any:
        import faiss

        q = faiss.LocalSearchQuantizer(x.shape[1], int(config["M"]), int(config["nbits"]))
        q.random_seed = int(seed)
        q.train_iters = int(config["train_iters"])
        q.encode_ils_iters = int(config["encode_ils_iters"])
        q.verbose = False
        q.train(x)
        return q
