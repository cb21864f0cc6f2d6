"""Differentiable Product Quantization (DPQ), trained from scratch (train track).

Chen, Li, Sun, "Differentiable Product Quantization for End-to-End Embedding Compression", ICML 2020
(arXiv 1908.09756); the VLDB benchmark's layer is Hetu's ``methods/layers/dpq.py``. Every id has a *query*
vector ``q`` (a ``V x d`` table), split into ``D`` parts of ``s = d / D`` dims. Part ``j`` picks one of ``K``
centroids by the response of its query sub-vector to ``K`` keys, normalised per choice by batch
normalisation (no affine, as in Hetu)::

    code_j(x) = argmax_k BN(resp(q_j(x), key_{j,k})),   E(x) = concat_j value_{j, code_j(x)}

- ``sx`` (softmax): ``resp = q . key`` (dot product); the forward uses the one-hot of the argmax and the
  backward the softmax (straight-through), so keys and queries are trained through the softmax; keys and
  values are separate codebooks.
- ``vq``: ``resp = -||q - key||^2`` and the value codebook *is* the key codebook; the forward returns the
  selected centroid, the backward passes the gradient straight through to the query (``q + sg(v - q)``), and the
  centroids learn from the codebook loss ``mean ||v - sg(q)||^2`` added to the task loss (as Hetu's ``reg``;
  added here through autograd, see ``vldb_common.add_loss``, since the harness computes the task loss only).

**What is stored, before and after training.** The state_dict holds exactly the discrete codes, packed at
``ceil(log2 K)`` bits per part (rows byte-aligned), and the value codebooks (fp32 ``D x K x s``, or ``K x s``
with ``shared``). The query table, the separate key codebook (sx) and the batch-norm statistics are
training-only (a :class:`~compbench.methods.vldb_common.TrainScaffold`, 0 stored bytes, like optimizer state):
DPQ discards them after training. Each training forward computes the codes of the looked-up ids and writes
them into the stored codes (Hetu's ``codebook_update``); evaluation reads codes + codebooks only, so the harness
counts the same bytes before and after training. Ids never looked up in training keep their initial codes
(the argmax of the raw responses of the initial query table; Hetu starts them at code 0).

**Budget.** Bytes: ``V * ceil(D b / 8) + 4 K d`` (unshared) with ``b = ceil(log2 K)``. ``K`` defaults to 32
(the VLDB configuration); ``D`` is the largest divisor of ``d`` that fits (the VLDB code fixes ``D = 8``; the
paper's D varies). When even ``D = 1`` does not fit, ``K`` is halved until it does.

Deviations: batch statistics are over the distinct ids of a batch (each id is embedded once per batch), and
the running statistics are not kept (never used: evaluation reads stored codes). Init: queries, keys and
values ``N(0, init_std^2)`` (``init_std = d**-0.5``; Hetu: Xavier normal).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive
from compbench.methods.vldb_common import (
    ScaffoldedEmbedding,
    add_loss,
    bits_for,
    divisors,
    pack_rows,
    row_stride,
    unpack_rows,
)

MODES = ("sx", "vq")
BN_EPS = 1e-5


def dpq_bytes(num_embeddings: int, embedding_dim: int, parts: int, choices: int, shared: bool = False) -> int:
    """Stored bytes: packed codes (byte-aligned rows) + fp32 value codebooks."""
    sub = int(embedding_dim) // int(parts)
    books = int(choices) * sub * (1 if shared else int(parts))
    return int(num_embeddings) * row_stride(parts, bits_for(choices)) + 4 * books


def batch_norm(resp: torch.Tensor) -> torch.Tensor:
    """Normalise ``resp [n, D, K]`` per choice over (n, D), no affine (a single row is left as is)."""
    if resp.shape[0] * resp.shape[1] < 2:
        return resp
    mean = resp.mean(dim=(0, 1), keepdim=True)
    var = resp.var(dim=(0, 1), unbiased=False, keepdim=True)
    return (resp - mean) / torch.sqrt(var + BN_EPS)


def responses(q: torch.Tensor, keys: torch.Tensor, mode: str) -> torch.Tensor:
    """``q [n, D, s]`` against ``keys [D, K, s]``: dot products (sx) or negative squared distances (vq)."""
    dot = torch.einsum("nds,dks->ndk", q, keys)
    if mode == "sx":
        return dot
    return 2 * dot - (q * q).sum(-1, keepdim=True) - (keys * keys).sum(-1).unsqueeze(0)


class DPQEmbedding(ScaffoldedEmbedding):
    """Stored: packed codes ``[V, ceil(D b / 8)]`` + value codebooks; training-only: queries (+ keys for sx)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, parts: int, choices: int, mode: str,
                 query: torch.Tensor, values: torch.Tensor, keys: torch.Tensor | None, codes: torch.Tensor):
        super().__init__(num_embeddings, embedding_dim)
        if mode not in MODES:
            raise UsageError(f"dpq mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.parts, self.choices, self.mode = int(parts), int(choices), mode
        self.sub = int(embedding_dim) // self.parts
        self.bits = bits_for(choices)
        self.values = nn.Parameter(values.float().contiguous())  # [D or 1, K, s]
        self.init_codes(codes)
        self.scaffold.query = nn.Parameter(query.float().contiguous())
        if mode == "sx":
            assert keys is not None
            self.scaffold.keys = nn.Parameter(keys.float().contiguous())

    def init_codes(self, codes: torch.Tensor) -> None:
        """Register the stored codes: one packed row per id."""
        self.register_buffer("codes", pack_rows(codes, self.bits))

    def write_codes(self, ids: torch.Tensor, codes: torch.Tensor) -> None:
        """Store ``codes [n, D]`` of the distinct ``ids``."""
        self.codes[ids] = pack_rows(codes, self.bits)

    def restrict(self, ids: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
        """Responses with the choices ``ids`` may not use masked out (none in DPQ)."""
        return resp

    def _books(self, t: torch.Tensor) -> torch.Tensor:
        return t.expand(self.parts, -1, -1)

    def _pick(self, codes: torch.Tensor) -> torch.Tensor:
        """Selected centroids ``[n, D, s]`` of codes ``[n, D]``."""
        part = torch.arange(self.parts, device=codes.device).expand_as(codes)
        return self._books(self.values)[part, codes]

    def code_responses(self, q: torch.Tensor) -> torch.Tensor:
        """Batch-normalised responses ``[n, D, K]`` of query sub-vectors ``q [n, D, s]``."""
        keys = self._books(self.values if self.mode == "vq" else self.scaffold.keys)
        return batch_norm(responses(q, keys, self.mode))

    def train_forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        q = self.scaffold.query[uniq].reshape(-1, self.parts, self.sub)
        resp = self.code_responses(q)
        codes = self.restrict(uniq, resp).argmax(-1)
        with torch.no_grad():
            self.write_codes(uniq, codes)
        if self.mode == "vq":
            v = self._pick(codes)
            out = q + (v - q).detach()
            out = add_loss(out, ((v - q.detach()) ** 2).mean())
        else:
            prob = torch.softmax(resp, dim=-1)
            onehot = nn.functional.one_hot(codes, self.choices).to(prob.dtype)
            w = prob + (onehot - prob).detach()
            out = torch.einsum("ndk,dks->nds", w, self._books(self.values))
        return out.reshape(-1, self.embedding_dim)[inverse].reshape(*ids.shape, self.embedding_dim)

    def stored_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """The stored codes ``[n, D]`` of flat ``ids``."""
        return unpack_rows(self.codes[ids], self.bits, self.parts)

    def stored_forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        out = self._pick(self.stored_codes(uniq)).reshape(-1, self.embedding_dim)
        return out[inverse].reshape(*ids.shape, self.embedding_dim)

    def sync(self) -> None:
        """Nothing to rebuild: every training forward already wrote the codes of the ids it looked up."""


@torch.no_grad()
def initial_codes(query: torch.Tensor, keys: torch.Tensor, parts: int, mode: str, chunk: int = 4096,
                  limits: torch.Tensor | None = None) -> torch.Tensor:
    """Argmax of the raw (not normalised) responses of every query row: long ``[V, D]``.
    ``limits`` (long ``[V]``), when given, restricts row ``i`` to its first ``limits[i]`` choices (MGQE)."""
    v, d = query.shape
    keys = keys.expand(parts, -1, -1)
    out = []
    for s in range(0, v, chunk):
        q = query[s:s + chunk].reshape(-1, parts, d // parts)
        resp = responses(q, keys, mode)
        if limits is not None:
            k = torch.arange(resp.shape[-1])
            resp = resp.masked_fill(k.view(1, 1, -1) >= limits[s:s + chunk].view(-1, 1, 1), -math.inf)
        out.append(resp.argmax(-1))
    return torch.cat(out, 0)


@METHODS.register("dpq")
class DPQ(Method):
    """DPQ: learned discrete codes (D parts x K choices) + codebooks; softmax (sx) or VQ variant."""

    card = MethodCard(
        name="dpq",
        version=1,
        family="learned-codes",
        reference="Chen, Li, Sun 2020, Differentiable Product Quantization for End-to-End Embedding Compression "
                  "(ICML, arXiv 1908.09756)",
        modes=("train",),
        description="query table (training only) -> D-part codes over K=32 learned centroids (sx: softmax "
                    "straight-through; vq: nearest centroid + codebook loss); stored: packed codes + codebooks",
    )

    class Options(MethodOptions):
        mode: Literal["sx", "vq"] = opt("sx", "sx (softmax) or vq")
        choices: int | None = opt(None, "K, centroids per part (unset: 32, halved when even D=1 does not fit)",
                                  at_least(2, high=65536))
        parts: int | None = opt(None, "D, code parts; must divide d (unset: the largest that fits)", at_least(1))
        shared: bool = opt(False, "one codebook shared by all parts")
        init_std: float | None = opt(None, "std of queries and centroids at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        v, d = int(num_embeddings), int(embedding_dim)
        mode, shared = self.option("mode"), self.option("shared")
        forced_k, forced_d = self.option("choices"), self.option("parts")
        if forced_d is not None and d % forced_d:
            raise UsageError(f"option parts={forced_d} of method '{self.card.name}' must divide d={d}")
        part_opts = [forced_d] if forced_d is not None else divisors(d)
        k = forced_k if forced_k is not None else 32
        smallest = None
        while k >= 2:
            fits = [p for p in part_opts if dpq_bytes(v, d, p, k, shared) <= budget_bytes]
            if fits:
                return {"mode": mode, "choices": int(k), "parts": int(max(fits)), "shared": shared}
            nbytes = min(dpq_bytes(v, d, p, k, shared) for p in part_opts)
            smallest = nbytes if smallest is None else min(smallest, nbytes)
            if forced_k is not None:
                break
            k //= 2
        raise self.unattainable(v, d, budget_bytes, int(smallest))

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        v, d = int(num_embeddings), int(embedding_dim)
        parts, k, mode = int(config["parts"]), int(config["choices"]), str(config["mode"])
        books = 1 if config.get("shared") else parts
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(d)
        g = generator(seed)
        query = torch.randn(v, d, generator=g) * std
        values = torch.randn(books, k, d // parts, generator=g) * std
        keys = torch.randn(books, k, d // parts, generator=g) * std if mode == "sx" else None
        codes = initial_codes(query, values if mode == "vq" else keys, parts, mode)
        return DPQEmbedding(v, d, parts, k, mode, query, values, keys, codes)
