"""sentence-transformers' embedding quantisation as registry methods: ``st-int8`` and ``st-binary``.

Exactly the codes of ``sentence_transformers.quantization.quantize_embeddings`` (Aarsen et
al. 2024, "Embedding Quantization"), for vector stores:

- ``st-int8``: *per-dimension* ranges calibrated on the table itself (ST's default when no
  ``calibration_embeddings`` are given): ``start = min``, ``step = (max - min) / 255``,
  ``q = clip(floor((x - start) / step), 0, 255) - 128`` stored as int8, plus the fp32 starts
  and steps (``2 d`` floats, shared by all rows). Decoding is ST's ``_dequantize_embeddings``:
  ``start + (q + 128) * step``. Unlike ``quant-int8`` (per-row affine, rounding), this is
  one grid for the whole table with floor rounding.
- ``st-binary``: ``x > 0`` packed with ``np.packbits`` (big-endian bit order, ST's
  ``ubinary``), ``d / 8`` bytes per row and nothing else: exactly 32x for fp32 tables whose
  ``d`` is a multiple of 8. Decoding gives ``+-1 / sqrt(d)`` (unit-norm rows; the constant
  costs no storage), so cosine similarity ranks rows exactly as Hamming distance does
  (``cos = 1 - 2 h / d``). ``quant-binary`` keeps a per-row scale instead (same cosines,
  4 more bytes per row).

Both are fixed-size: they meet exactly the budgets at or above their size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from compbench.methods import METHODS
from compbench.methods.faiss_search import copy_into, index_searcher
from compbench.methods.method_base import CodeSearch, CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions

ST_REFERENCE = ("Aarsen, Xenova, Reimers et al. 2024, 'Embedding Quantization' (sentence-transformers "
                "quantize_embeddings); Shakir et al. 2024 (binary + scalar int8 retrieval)")


class STInt8Embedding(CompressedEmbedding):
    """int8 codes with per-dimension fp32 start and step (sentence-transformers' int8 scheme)."""

    def __init__(self, codes: torch.Tensor, starts: torch.Tensor, steps: torch.Tensor):
        super().__init__(codes.shape[0], codes.shape[1])
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("starts", starts.float().contiguous())
        self.register_buffer("steps", steps.float().contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        q = self.codes[ids].float() + 128.0
        return self.starts + q * self.steps

    def code_search(self) -> CodeSearch:
        """faiss ``IndexScalarQuantizer(QT_8bit)`` (inner product, float query) on the stored codes. faiss decodes
        ``vmin + (c + 0.5) / 255 * vdiff``; ``vmin = start - step / 2`` and ``vdiff = 255 step`` make that
        ``start + c * step``, this module's decode, with ``c = q + 128``."""
        import faiss
        import numpy as np

        d = self.embedding_dim
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        ranges = torch.cat([self.starts - self.steps / 2, self.steps * 255]).double()
        copy_into(ranges, index.sq.trained)
        index.is_trained = True
        codes = (self.codes.cpu().to(torch.int16) + 128).to(torch.uint8).numpy()
        index.add_sa_codes(np.ascontiguousarray(codes))
        return CodeSearch("faiss.IndexScalarQuantizer (QT_8bit, inner product)", index_searcher(index))


class STBinaryEmbedding(CompressedEmbedding):
    """``np.packbits(x > 0)`` bytes (big-endian bits), decoded to ``+-1/sqrt(d)``."""

    def __init__(self, packed: torch.Tensor, dim: int):
        super().__init__(packed.shape[0], dim)
        self.register_buffer("packed", packed.to(torch.uint8).contiguous())
        self.register_buffer("_shifts", torch.arange(7, -1, -1, dtype=torch.uint8), persistent=False)
        self._value = 1.0 / math.sqrt(dim)

    def after_load(self) -> None:
        """Recompute the derived (non-persistent) bit shifts (an exported module's load)."""
        self._shifts.copy_(torch.arange(7, -1, -1, dtype=torch.uint8, device=self._shifts.device))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        p = self.packed[ids]
        bits = ((p.unsqueeze(-1) >> self._shifts.to(p.device)) & 1).reshape(*p.shape[:-1], -1)[..., : self.embedding_dim]
        return (bits.float() * 2 - 1) * self._value

    def code_search(self) -> CodeSearch:
        """faiss ``IndexBinaryFlat`` (Hamming) on the stored bits; the query is binarised the same way
        (``np.packbits(q > 0)``), as sentence-transformers' binary search does (symmetric)."""
        import faiss
        import numpy as np

        index = faiss.IndexBinaryFlat(self.embedding_dim)
        index.add(np.ascontiguousarray(self.packed.cpu().numpy()))

        def search(queries: Any, k: int) -> Any:
            q = np.packbits(np.asarray(queries, dtype=np.float32) > 0, axis=-1)
            return index.search(np.ascontiguousarray(q), int(k))[1]

        return CodeSearch("faiss.IndexBinaryFlat (Hamming, binarised query)", search)


def st_int8_codes(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes int8 [n, d], starts [d], steps [d])`` exactly as ``quantize_embeddings(table, 'int8')``."""
    x = table.detach().float().cpu()
    starts = x.amin(dim=0)
    steps = (x.amax(dim=0) - starts) / 255
    steps = torch.where(steps == 0, torch.ones_like(steps), steps)
    q = torch.floor((x - starts) / steps).clamp_(0, 255) - 128
    return q.to(torch.int8), starts, steps


def st_binary_packed(table: torch.Tensor) -> torch.Tensor:
    """``np.packbits(table > 0, axis=-1)`` as a uint8 tensor (ST's ``ubinary``)."""
    import numpy as np

    return torch.from_numpy(np.packbits(table.detach().float().cpu().numpy() > 0, axis=-1))


def _card(name: str, desc: str) -> MethodCard:
    """A sentence-transformers quantisation card (no options: see :class:`_STOptions`)."""
    return MethodCard(name=name, version=1, family="quantization", reference=ST_REFERENCE, modes=("posthoc",),
                      description=desc)


class _STOptions(MethodOptions):
    """No options: sentence-transformers' codes are fixed (any option given is refused)."""


@METHODS.register("st-int8")
class STInt8(Method):
    """sentence-transformers int8: per-dimension min/max calibration on the table, floor rounding."""

    card = _card("st-int8", "int8 codes + fp32 per-dimension start/step calibrated on the table (ST int8, ~4x)")
    Options = _STOptions

    def size(self, num_embeddings: int, embedding_dim: int) -> int:
        """Exact stored bytes."""
        return num_embeddings * embedding_dim + 2 * embedding_dim * 4

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        need = self.size(num_embeddings, embedding_dim)
        if need > budget_bytes:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, need)
        return {"bits": 8, "ranges": "per-dimension min/max of the table", "rounding": "floor"}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        codes, starts, steps = st_int8_codes(table)
        return STInt8Embedding(codes, starts, steps).to(table.device)


@METHODS.register("st-binary")
class STBinary(Method):
    """sentence-transformers binary: sign bits only (Hamming-equivalent cosine)."""

    card = _card("st-binary", "packbits(x > 0), d/8 bytes per row, no scale (ST ubinary, 32x)")
    Options = _STOptions

    def size(self, num_embeddings: int, embedding_dim: int) -> int:
        """Exact stored bytes."""
        return num_embeddings * ((embedding_dim + 7) // 8)

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        need = self.size(num_embeddings, embedding_dim)
        if need > budget_bytes:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, need)
        return {"bits": 1, "threshold": 0.0, "bit_order": "big (np.packbits)", "decode": "+-1/sqrt(d)"}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        return STBinaryEmbedding(st_binary_packed(table), table.shape[1]).to(table.device)
