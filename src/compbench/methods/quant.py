"""Scalar quantisation of a pretrained table: int8 / int4 / int2 / binary / fp16 / fp8.

- ``quant-int{8,4,2}``: affine min-max quantisation per row (or per group of
  ``group_size`` columns): ``x ~= lo + q * step`` with ``q`` in ``[0, 2^b - 1]``,
  ``step = (hi - lo) / (2^b - 1)``; codes packed into uint8 (2 per byte for int4,
  4 for int2); ``lo`` and ``step`` stored in fp32 per group.
- ``quant-binary``: ``x ~= alpha * sign(x)`` with the L2-optimal per-row scale
  ``alpha = mean|x|`` (XNOR-Net, Rastegari et al. 2016); 8 signs per byte.
- ``quant-fp16``: IEEE half precision.
- ``quant-fp8``: float8 e4m3 (``torch.float8_e4m3fn``), by default with a per-row fp32
  scale mapping each row's max |x| to 448 (the e4m3 max); ``scale=none`` is the plain cast
  (exactly 4x, as in Huerga-Perez et al. 2025).

Each has a fixed size, so each meets exactly the budgets at or above its size;
``configure`` names that size otherwise (e.g. int8 cannot meet 10x or 40x).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, at_least, opt
from compbench.methods.packing import pack, packed_width, unpack
from compbench.methods.streaming import row_blocks, rows_per_block

QUANT_REFERENCE = "Jacob et al. 2018 (integer quantisation); sentence-transformers embedding quantisation (2024)"


class AffineQuantEmbedding(CompressedEmbedding):
    """Packed b-bit codes with per-group fp32 offset and step."""

    def __init__(self, codes: torch.Tensor, lo: torch.Tensor, step: torch.Tensor, bits: int, dim: int, group: int):
        super().__init__(codes.shape[0], dim)
        self.bits, self.group = bits, group
        self.register_buffer("codes", codes)
        self.register_buffer("lo", lo.float().contiguous())
        self.register_buffer("step", step.float().contiguous())

    def _decode(self, packed: torch.Tensor, lo: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        q = unpack(packed, self.bits, self.embedding_dim).float()
        q = q.reshape(*q.shape[:-1], -1, self.group)
        return (lo.unsqueeze(-1) + q * step.unsqueeze(-1)).reshape(*q.shape[:-2], self.embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._decode(self.codes[ids], self.lo[ids], self.step[ids])


class BinaryEmbedding(CompressedEmbedding):
    """Packed sign bits with a per-row fp32 scale."""

    def __init__(self, bits: torch.Tensor, scale: torch.Tensor, dim: int):
        super().__init__(bits.shape[0], dim)
        self.register_buffer("signs", bits)
        self.register_buffer("scale", scale.float().contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = unpack(self.signs[ids], 1, self.embedding_dim).float() * 2 - 1
        return s * self.scale[ids].unsqueeze(-1)


class CastEmbedding(CompressedEmbedding):
    """A table stored in a narrower float dtype, optionally with a per-row scale."""

    def __init__(self, table: torch.Tensor, scale: torch.Tensor | None):
        super().__init__(table.shape[0], table.shape[1])
        self.register_buffer("table", table)
        self.has_scale = scale is not None
        if scale is not None:
            self.register_buffer("scale", scale.float().contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.table[ids].float()
        return x * self.scale[ids].unsqueeze(-1) if self.has_scale else x


class _Quant(Method, metaclass=ABCMeta):
    """The fixed-size scalar codes: a subclass gives its exact ``size`` and its ``_config``; ``configure`` meets a
    budget at or above that size and refuses a smaller one."""

    bits: ClassVar[int]

    class Options(MethodOptions):
        """No options (the fixed-size entries without groups: quant-binary, quant-fp16)."""

    @abstractmethod
    def size(self, num_embeddings: int, embedding_dim: int) -> int:
        """Exact stored bytes for a V x d table."""

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        need = self.size(num_embeddings, embedding_dim)
        if need > budget_bytes:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, need)
        return self._config(embedding_dim)

    @abstractmethod
    def _config(self, d: int) -> dict[str, Any]:
        """The configuration recorded for a ``d``-wide table (bits, scale layout)."""


def _card(name: str, desc: str, reference: str = QUANT_REFERENCE) -> MethodCard:
    """A quantisation card; its options come from the method's ``Options`` model."""
    return MethodCard(name=name, version=1, family="quantization", reference=reference,
                      modes=("posthoc",), description=desc)


def group_size(method: Method, d: int) -> int:
    """The method's ``group_size`` option for a ``d``-wide table: ``d`` when unset, else a divisor of ``d``."""
    g = method.option("group_size")
    if g is None:
        return d
    if d % g:
        raise UsageError(f"option group_size={g} of method '{method.card.name}' must be a positive divisor of d={d}")
    return int(g)


class _IntQuant(_Quant):
    class Options(_Quant.Options):
        # a divisor of d: checked in configure
        group_size: int | None = opt(None, "columns per scale group (unset: the whole row)", at_least(1))

    def _group(self, d: int) -> int:
        return group_size(self, d)

    def _config(self, d: int) -> dict[str, Any]:
        return {"bits": self.bits, "group_size": self._group(d), "scheme": "affine-minmax", "scale_dtype": "float32"}

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """For the harness' tuning on validation data: one scale pair per row (default), then smaller groups
        (d/2, d/4, d/8, 64, 32 columns): finer ranges for 8 more bytes per group, kept only when they fit."""
        d = int(embedding_dim)
        groups = dict.fromkeys(g for g in (d // 2, d // 4, d // 8, 64, 32) if 0 < g < d and d % g == 0)
        return [{}] + [{"group_size": g} for g in groups]

    def size(self, num_embeddings: int, embedding_dim: int) -> int:
        groups = embedding_dim // self._group(embedding_dim)
        return num_embeddings * packed_width(embedding_dim, self.bits) + num_embeddings * groups * 8

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        v, d = table.shape
        g = int(config["group_size"])
        levels = (1 << self.bits) - 1
        codes, los, steps = [], [], []
        for s in row_blocks(v, rows_per_block(d * 16)):  # block by block: bounded float temporaries
            x = table[s].float().reshape(-1, d // g, g)
            lo = x.amin(dim=-1)
            step = (x.amax(dim=-1) - lo) / levels
            step = torch.where(step > 0, step, torch.ones_like(step))
            q = torch.round((x - lo.unsqueeze(-1)) / step.unsqueeze(-1)).clamp_(0, levels).to(torch.uint8)
            codes.append(pack(q.reshape(-1, d), self.bits))
            los.append(lo)
            steps.append(step)
        return AffineQuantEmbedding(torch.cat(codes), torch.cat(los), torch.cat(steps), self.bits, d, g)


@METHODS.register("quant-int8")
class QuantInt8(_IntQuant):
    """8-bit affine quantisation per row/group."""

    bits = 8
    card = _card("quant-int8", "8-bit codes + fp32 offset/step per row (~3.9x)")


@METHODS.register("quant-int4")
class QuantInt4(_IntQuant):
    """4-bit affine quantisation per row/group, two codes per byte."""

    bits = 4
    card = _card("quant-int4", "4-bit packed codes + fp32 offset/step per row (~7.5x)")


@METHODS.register("quant-int2")
class QuantInt2(_IntQuant):
    """2-bit affine quantisation per row/group, four codes per byte."""

    bits = 2
    card = _card("quant-int2", "2-bit packed codes + fp32 offset/step per row (~14x)")


@METHODS.register("quant-binary")
class QuantBinary(_Quant):
    """1-bit sign quantisation with an L2-optimal per-row scale."""

    bits = 1
    card = _card("quant-binary", "sign bits (8 per byte) + fp32 mean|x| per row (~29.5x)",
                 reference="Rastegari et al. 2016 (XNOR-Net binary weights with a scale); binary embedding quantisation")

    def size(self, num_embeddings: int, embedding_dim: int) -> int:
        return num_embeddings * packed_width(embedding_dim, 1) + num_embeddings * 4

    def _config(self, d: int) -> dict[str, Any]:
        return {"bits": 1, "scale": "mean-abs per row", "scale_dtype": "float32"}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        x = table.float()
        scale = x.abs().mean(dim=1)
        return BinaryEmbedding(pack((x > 0).to(torch.uint8), 1), scale, x.shape[1])


@METHODS.register("quant-fp16")
class QuantFP16(_Quant):
    """IEEE half precision."""

    bits = 16
    card = _card("quant-fp16", "float16 table (2x)")

    def size(self, num_embeddings: int, embedding_dim: int) -> int:
        return num_embeddings * embedding_dim * 2

    def _config(self, d: int) -> dict[str, Any]:
        return {"dtype": "float16"}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        return CastEmbedding(table.to(torch.float16), None)


FP8_MAX = 448.0  # largest finite float8 e4m3fn value


@METHODS.register("quant-fp8")
class QuantFP8(_Quant):
    """float8 e4m3 with an optional per-row scale."""

    bits = 8
    card = _card("quant-fp8", "float8 e4m3 (+ fp32 per-row scale by default; scale=none is exactly 4x)",
                 reference="Micikevicius et al. 2022 (FP8 formats); Huerga-Perez et al. 2025 (arXiv 2505.00105)")

    class Options(_Quant.Options):
        scale: Literal["row", "none"] = opt("row", "a per-row fp32 scale (row) or the plain cast (none)")

    def _scaled(self) -> bool:
        return bool(self.option("scale") == "row")

    def size(self, num_embeddings: int, embedding_dim: int) -> int:
        return num_embeddings * embedding_dim + (num_embeddings * 4 if self._scaled() else 0)

    def _config(self, d: int) -> dict[str, Any]:
        return {"dtype": "float8_e4m3fn", "scale": "row-absmax" if self._scaled() else "none"}

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        x = table.float()
        if config["scale"] == "none":
            return CastEmbedding(x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), None)
        amax = x.abs().amax(dim=1).clamp_min(1e-12)
        scale = amax / FP8_MAX
        return CastEmbedding((x / scale[:, None]).to(torch.float8_e4m3fn), scale)
