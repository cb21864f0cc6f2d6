"""Product quantisation (PQ) and optimised product quantisation (OPQ) of a pretrained table, via faiss.

``pq`` -- Jegou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011.
Each row is split into ``M`` sub-vectors of ``d / M`` dims (``M`` must divide ``d``; no padding); each
sub-space has its own codebook of ``2^nbits`` centroids learned by k-means (``faiss.ProductQuantizer``),
and a row is stored as ``M`` codes of ``nbits`` bits. Stored:

- codes: ``V x ceil(M nbits / 8)`` uint8, packed exactly as faiss packs them (a little-endian
  bitstring per row; one byte per code when ``nbits = 8``);
- codebooks: ``M x 2^nbits x (d / M)`` fp32, i.e. ``2^nbits d 4`` bytes.

``bytes = V ceil(M nbits / 8) + 4 d 2^nbits``. ``forward(ids)`` unpacks the codes of ``ids`` and
gathers one centroid per sub-space (identical to ``faiss.ProductQuantizer.decode``).

``opq`` -- Ge, He, Ke & Sun, "Optimized Product Quantization", TPAMI 2014 (CVPR 2013): learns an
orthogonal ``d x d`` rotation ``R`` (``faiss.OPQMatrix``, alternating PQ training and a Procrustes
step) so that PQ of ``x R^T`` has lower distortion; the PQ is then trained on the rotated rows, as
faiss' ``"OPQ{M},PQ{M}"`` index does. The rotation is stored (``4 d^2`` bytes on top of PQ's), and
``forward(ids) = decode(codes[ids]) @ R``.

Budget -> hyperparameters: ``nbits`` is 8 by default (the paper's ``k* = 256``) and ``M`` is the
largest divisor of ``d`` that fits. When no ``M`` fits at 8 bits (the codebooks alone exceed the
budget) or the table has fewer rows than ``2^8`` centroids, ``nbits`` is lowered to the largest
value for which some ``M`` fits (and ``2^nbits <= training rows``). ``-o nbits=`` / ``-o M=`` force
either (they must still fit).

Training runs on the table itself (at most ``train_size`` rows, a seeded subsample); faiss'
"at least 39 points per centroid" warning is switched off (``min_points_per_centroid = 1``) because
the k-means data *is* the set being compressed, so there is no generalisation gap to guard.

Deviations (CPU cost; all overridable with ``-o``): ``niter`` defaults to 10 k-means iterations
instead of faiss' 25 (at 10x on MiniLM, M = 128 sub-spaces of 3 dims: fit 174 s -> 57 s on one
thread, mean row cosine 0.9782 -> 0.9777). OPQ runs ``niter_opq`` = 10 alternations (faiss: 50),
``niter_pq_0`` = 10 first-PQ iterations (faiss: 40) and learns the rotation on ``opq_train_size`` =
8192 rows (faiss: 65536); the alternation's inner PQ uses the configured ``nbits`` (faiss: 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.faiss_search import codes_array, copy_into, index_searcher, rotated
from compbench.methods.method_base import CodeSearch, CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt
from compbench.methods.packing import unpack
from compbench.methods.streaming import encode_blocks, rows_per_block

DEFAULT_NBITS = 8
MAX_NBITS = 16
DEFAULT_TRAIN_SIZE = 65536
DEFAULT_NITER = 10  # faiss' ClusteringParameters default is 25; see the module docstring
DEFAULT_NITER_OPQ = 10  # faiss' OPQMatrix.niter default is 50
DEFAULT_NITER_PQ_0 = 10  # faiss' OPQMatrix.niter_pq_0 default is 40
DEFAULT_OPQ_TRAIN_SIZE = 8192  # faiss' OPQMatrix.max_train_points default is 65536


def code_size(m: int, nbits: int) -> int:
    """Bytes per row of packed PQ codes: ``ceil(M nbits / 8)`` (as faiss' ``ProductQuantizer.code_size``)."""
    return (int(m) * int(nbits) + 7) // 8


CODEBOOK_DTYPES = {"float32": 4, "float16": 2}


def pq_bytes(num_embeddings: int, embedding_dim: int, m: int, nbits: int, rotation: bool = False,
             codebook_bytes: int = 4) -> int:
    """Stored bytes: packed codes + codebooks at ``codebook_bytes`` per value (+ the fp32 ``d x d`` rotation for OPQ)."""
    out = int(num_embeddings) * code_size(m, nbits) + int(codebook_bytes) * int(embedding_dim) * (1 << int(nbits))
    if rotation:
        out += 4 * int(embedding_dim) ** 2
    return out


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n``, ascending."""
    return [m for m in range(1, int(n) + 1) if n % m == 0]


def unpack_codes(packed: torch.Tensor, m: int, nbits: int) -> torch.Tensor:
    """faiss-packed PQ codes ``uint8 [..., code_size]`` -> long ``[..., M]`` (little-endian bitstring)."""
    if nbits == 8:
        return packed[..., :m].long()
    if nbits in (1, 2, 4):
        return unpack(packed, nbits, m).long()
    if nbits > 16:  # pragma: no cover - faiss' PQ codes are at most 16 bits
        raise ValueError(f"nbits={nbits} > 16")
    # code i is bits [i*nbits, (i+1)*nbits) of the little-endian bitstring. The layout repeats every g codes
    # (g*nbits bits = gb whole bytes): read each group's gb bytes as one int64 word (gb <= 7: reshapes, shifts
    # and ors, no gather) and cut the g codes out of it with one broadcast shift
    g = 8 // math.gcd(8, nbits)
    gb = nbits * g // 8
    if gb <= 7:
        groups = -(-m // g)
        need = groups * gb
        p = packed[..., :need] if packed.shape[-1] >= need else nn.functional.pad(packed, (0, need - packed.shape[-1]))
        p = p.reshape(*packed.shape[:-1], groups, gb).long()
        word = p[..., 0]
        for k in range(1, gb):  # the group's bytes, little-endian (at most 7: a loop over bytes, not rows)
            word = word | (p[..., k] << (8 * k))
        shifts = torch.arange(g, device=packed.device) * nbits
        codes = (word.unsqueeze(-1) >> shifts) & ((1 << nbits) - 1)
        return codes.reshape(*packed.shape[:-1], groups * g)[..., :m]
    # odd widths above 8 (a group would exceed 7 bytes): each code lies in the 24-bit word of bytes b, b+1, b+2
    # (b = i*nbits // 8), shifted by i*nbits % 8: three gathers and a shift
    pos = torch.arange(m, device=packed.device) * nbits
    byte, shift = pos // 8, (pos % 8).to(torch.int32)
    p = nn.functional.pad(packed, (0, 2)).to(torch.int32)
    word = p[..., byte] | (p[..., byte + 1] << 8) | (p[..., byte + 2] << 16)
    return ((word >> shift) & ((1 << nbits) - 1)).long()


class PQEmbedding(CompressedEmbedding):
    """Packed PQ codes ``[V, code_size]`` + codebooks ``[M, 2^nbits, d/M]`` (+ optional rotation ``[d, d]``)."""

    def __init__(self, codes: torch.Tensor, centroids: torch.Tensor, nbits: int,
                 rotation: torch.Tensor | None = None, codebook_dtype: str = "float32"):
        m, ksub, dsub = centroids.shape
        super().__init__(codes.shape[0], m * dsub)
        self.m, self.ksub, self.dsub, self.nbits = int(m), int(ksub), int(dsub), int(nbits)
        self.register_buffer("codes", codes.to(torch.uint8).contiguous())
        # codebooks are stored at their dtype (fp16 halves them; the codes were assigned with fp32 centroids)
        self.register_buffer("centroids", centroids.to(getattr(torch, codebook_dtype)).contiguous())
        self.has_rotation = rotation is not None
        if rotation is not None:
            self.register_buffer("rotation", rotation.float().contiguous())
        # sub-space offsets into the flattened codebook: a function of (M, ksub), not stored
        self.register_buffer("offsets", torch.arange(self.m) * self.ksub, persistent=False)

    def after_load(self) -> None:
        """Recompute the derived (non-persistent) buffer from the plain attributes (an exported module's load)."""
        self.offsets.copy_(torch.arange(self.m, device=self.offsets.device) * self.ksub)

    def decode_codes(self, packed: torch.Tensor) -> torch.Tensor:
        """Packed codes ``[..., code_size]`` -> reconstructed (rotated-space) vectors ``[..., d]``."""
        if self.nbits == 8:  # int32 indices: the same gather, several times faster on CPU than int64 ones
            idx = packed[..., :self.m].to(torch.int32) + self.offsets.to(torch.int32)
        else:
            idx = unpack_codes(packed, self.m, self.nbits) + self.offsets
        flat = self.centroids.float().reshape(self.m * self.ksub, self.dsub)
        return nn.functional.embedding(idx, flat).reshape(*packed.shape[:-1], self.embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        y = self.decode_codes(self.codes[ids])
        return y @ self.rotation if self.has_rotation else y

    def code_search(self) -> CodeSearch:
        """faiss ``IndexPQ`` (inner product, asymmetric distance computation) on the stored codes and codebooks
        (fp16 codebooks are widened, as the decode does); OPQ's rotation as an ``IndexPreTransform``."""
        import faiss

        index = faiss.IndexPQ(self.embedding_dim, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT)
        copy_into(self.centroids, index.pq.centroids)
        index.is_trained = True
        index.add_sa_codes(codes_array(self.codes))
        kind = "faiss.IndexPQ (ADC, inner product)"
        if self.has_rotation:  # stored rows are x R^T: search q R^T against them
            index, kind = rotated(index, self.rotation), "faiss.IndexPreTransform(OPQ rotation) + IndexPQ (ADC, inner product)"
        return CodeSearch(kind, index_searcher(index))


def _sample_rows(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` rows of ``x`` (a seeded subsample when larger), C-contiguous float32."""
    if x.shape[0] <= n:
        return x
    idx = torch.randperm(x.shape[0], generator=generator(seed))[:n].sort().values.numpy()
    return np.ascontiguousarray(x[idx])


def train_pq(x: np.ndarray, m: int, nbits: int, *, niter: int, seed: int) -> Any:
    """A trained ``faiss.ProductQuantizer`` on rows ``x`` (no further subsampling inside faiss)."""
    import faiss

    pq = faiss.ProductQuantizer(x.shape[1], int(m), int(nbits))
    pq.cp.niter = int(niter)
    pq.cp.seed = int(seed)
    pq.cp.min_points_per_centroid = 1
    pq.cp.max_points_per_centroid = max(256, -(-x.shape[0] // pq.ksub) + 1)
    pq.verbose = False
    pq.train(x)
    return pq


def encode_rows(pq: Any, x: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """``pq.compute_codes`` over blocks of rows (optionally ``transform``-ed first): faiss' BLAS encoder holds an
    ``n x M x ksub`` float distance table, 16 GiB for 131k rows of M = 128, 8-bit codes; block by block it
    stays under ``streaming.BLOCK_BYTES``. Codes are identical to one call on all rows."""
    def encode(block: np.ndarray) -> np.ndarray:
        return pq.compute_codes(transform(block) if transform is not None else block)

    rows = rows_per_block(int(pq.M) * int(pq.ksub) * 4 + 2 * x.shape[1] * 4)
    return torch.from_numpy(encode_blocks(encode, x, int(pq.code_size), rows))


def _centroids(pq: Any) -> torch.Tensor:
    import faiss

    arr = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    return torch.from_numpy(arr.copy())


class _PQOptions(MethodOptions):
    nbits: int | None = opt(None, f"bits per sub-quantizer code (unset: {DEFAULT_NBITS}, lowered automatically when "
                            "nothing fits)", at_least(1, high=MAX_NBITS))
    M: int | None = opt(None, "force the number of sub-quantizers (must divide d and fit the budget)", at_least(1))
    train_size: int = opt(DEFAULT_TRAIN_SIZE, "k-means training rows, a seeded subsample", at_least(1))
    niter: int = opt(DEFAULT_NITER, "k-means iterations per sub-space (faiss' default is 25)", at_least(1))
    codebook_dtype: Literal["float32", "float16"] = opt("float32", "codebook storage (float16: half the codebook "
                                                                   "bytes)")


class _OPQOptions(_PQOptions):
    niter_opq: int = opt(DEFAULT_NITER_OPQ, "OPQ alternating iterations (faiss: 50)", at_least(1))
    niter_pq_0: int = opt(DEFAULT_NITER_PQ_0, "k-means iterations of OPQ's first PQ (faiss: 40)", at_least(1))
    # >= 2**nbits: checked in configure
    opq_train_size: int = opt(DEFAULT_OPQ_TRAIN_SIZE, "rows the rotation is learned on, a seeded subsample "
                              "(faiss: 65536)", at_least(1))


class _PQBase(Method):
    rotation: bool = False
    Options = _PQOptions

    def _candidates(self, num_embeddings: int, embedding_dim: int) -> tuple[list[int], list[int], int]:
        """(nbits values, M values, training rows) allowed by the options and the table."""
        n_train = min(int(num_embeddings), self.option("train_size"))
        m_opts = divisors(embedding_dim)
        forced_m = self.option("M")
        if forced_m is not None:
            if embedding_dim % forced_m:
                raise UsageError(f"option M={forced_m} of method '{self.card.name}' must divide d={embedding_dim} "
                                 f"(divisors: {', '.join(map(str, m_opts))})")
            m_opts = [forced_m]
        nb = self.option("nbits")
        if nb is not None:
            if (1 << nb) > n_train:
                raise UsageError(f"option nbits={nb} of method '{self.card.name}' needs >= {1 << nb} training rows, "
                                 f"the table has {n_train}")
            nbits_opts = [nb]
        else:
            cap = min(DEFAULT_NBITS, max(1, n_train.bit_length() - 1))  # 2^nbits <= training rows
            nbits_opts = list(range(cap, 0, -1))
        return nbits_opts, m_opts, n_train

    def codebook_dtype(self) -> str:
        """``float32`` (default) or ``float16`` codebooks (option ``codebook_dtype``)."""
        return str(self.option("codebook_dtype"))

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """Candidates for the harness' tuning on validation data (at most 12; the default first): k-means
        iterations {10, 25} x codebook dtype {fp32, fp16} x bits per code {8, 6, 4}; M is then the largest that fits.
        Why: faiss' defaults (25 iterations) fit better than our CPU-saving 10; fp16 codebooks free bytes for codes;
        fewer bits per code buy more sub-quantizers."""
        space = [{}]
        for niter in (DEFAULT_NITER, 25):
            for dt in CODEBOOK_DTYPES:
                for nb in (8, 6, 4):
                    cand = {"niter": niter, "codebook_dtype": dt, "nbits": nb}
                    if cand != {"niter": DEFAULT_NITER, "codebook_dtype": "float32", "nbits": DEFAULT_NBITS}:
                        space.append(cand)
        return space[:12]

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        nbits_opts, m_opts, n_train = self._candidates(num_embeddings, embedding_dim)
        cb = CODEBOOK_DTYPES[self.codebook_dtype()]
        cost = lambda m, nb: pq_bytes(num_embeddings, embedding_dim, m, nb, self.rotation, cb)  # noqa: E731
        for nb in nbits_opts:  # highest nbits first, then the largest M that fits
            fits = [m for m in m_opts if cost(m, nb) <= budget_bytes]
            if fits:
                m = max(fits)
                cfg: dict[str, Any] = {"M": m, "nbits": nb, "dsub": embedding_dim // m,
                                       "code_bytes_per_row": code_size(m, nb), "train_size": n_train,
                                       "niter": self.option("niter")}
                if cb != 4:  # recorded only when not the default, so untuned configs stay as they were
                    cfg["codebook_dtype"] = self.codebook_dtype()
                if self.rotation:
                    cfg["niter_opq"] = self.option("niter_opq")
                    cfg["niter_pq_0"] = self.option("niter_pq_0")
                    opq_rows = self.option("opq_train_size")
                    if opq_rows < (1 << nb):
                        raise UsageError(f"option opq_train_size={opq_rows} of method '{self.card.name}' must be "
                                         f">= {1 << nb}")
                    cfg["opq_train_size"] = min(n_train, opq_rows)
                return cfg
        min_bytes = min(cost(m, nb) for nb in nbits_opts for m in m_opts)
        raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, min_bytes)


@METHODS.register("pq")
class PQ(_PQBase):
    """Product quantisation (faiss.ProductQuantizer): M sub-spaces x 2^nbits centroids, packed codes."""

    card = MethodCard(
        name="pq",
        version=1,
        family="quantization",
        reference="Jegou, Douze & Schmid 2011, Product Quantization for Nearest Neighbor Search (TPAMI); faiss",
        modes=("posthoc",),
        description="M codes of nbits per row + fp32 codebooks; M the largest divisor of d that fits",
    )

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        x = np.ascontiguousarray(table.detach().float().cpu().numpy())
        pq = train_pq(_sample_rows(x, int(config["train_size"]), seed), int(config["M"]), int(config["nbits"]),
                      niter=int(config["niter"]), seed=seed)
        codes = encode_rows(pq, x)
        return PQEmbedding(codes, _centroids(pq), int(config["nbits"]),
                           codebook_dtype=str(config.get("codebook_dtype", "float32")))


@METHODS.register("opq")
class OPQ(_PQBase):
    """Optimised PQ (faiss.OPQMatrix rotation + ProductQuantizer); the d x d rotation is stored."""

    rotation = True
    card = MethodCard(
        name="opq",
        version=1,
        family="quantization",
        reference="Ge, He, Ke & Sun 2014, Optimized Product Quantization (TPAMI; CVPR 2013); faiss OPQMatrix",
        modes=("posthoc",),
        description="learned d x d rotation (fp32, stored) + PQ of the rotated rows",
    )
    Options = _OPQOptions

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        import faiss

        m, nbits = int(config["M"]), int(config["nbits"])
        x = np.ascontiguousarray(table.detach().float().cpu().numpy())
        xt = _sample_rows(x, int(config["train_size"]), seed)
        xr = _sample_rows(x, int(config["opq_train_size"]), seed + 1)
        d = x.shape[1]
        opq = faiss.OPQMatrix(d, m)
        opq.niter = int(config["niter_opq"])
        opq.niter_pq_0 = int(config["niter_pq_0"])
        opq.max_train_points = xr.shape[0]
        opq.verbose = False
        inner = faiss.ProductQuantizer(d, m, nbits)  # the PQ used inside the alternation (faiss: 8 bits)
        inner.cp.seed = int(seed)
        inner.cp.min_points_per_centroid = 1
        inner.cp.max_points_per_centroid = max(256, -(-xr.shape[0] // inner.ksub) + 1)
        opq.pq = inner
        opq.train(xr)
        # y = x A^T with A orthonormal [d_out, d_in]; x = y A
        rot = faiss.vector_to_array(opq.A).reshape(opq.d_out, opq.d_in).copy()
        pq = train_pq(opq.apply(xt), m, nbits, niter=int(config["niter"]), seed=seed)
        codes = encode_rows(pq, x, opq.apply)
        return PQEmbedding(codes, _centroids(pq), nbits, rotation=torch.from_numpy(rot),
                           codebook_dtype=str(config.get("codebook_dtype", "float32")))
