"""``quant``: scalar quantisation whose bit width and scale dtype come from the budget.

The fixed-width entries (``quant-int8``, ``quant-int4``, ``quant-int2``, ``quant-binary``; ``methods/quant.py``)
each meet only the budgets at or above their one size. ``quant`` picks the width:

- ``b >= 2`` bits: affine min-max quantisation per row (or per group of ``group_size`` columns), exactly as
  ``quant-int{8,4,2}``: ``x ~= lo + q step`` with ``q`` in ``0 .. 2^b - 1``; two scales (``lo``, ``step``)
  per group.
- ``b = 1``: the sign with the L2-optimal scale ``mean|x|`` per group (XNOR-Net, as ``quant-binary``); one
  scale per group. (Affine min-max at 1 bit would only keep ``{lo, hi}`` per row.)

Codes are packed: widths 1, 2, 4, 8 with :mod:`compbench.methods.packing` (as the fixed-width entries),
the others (3, 5, 6, 7) as one little-endian bitstring per row (:mod:`compbench.methods.bitstring`), so a
row of ``d`` codes takes ``ceil(d b / 8)`` bytes. Scales are fp32 or fp16.

``bytes = V ceil(d b / 8) + V (d / group) n_scales s``, with ``n_scales`` = 2 (b >= 2) or 1 (b = 1) and
``s`` = 4 (fp32) or 2 (fp16).

Budget rule: ``b`` is the largest width in 1..8 whose codes fit with fp16 scales (the smallest scale
overhead); the scale dtype is then fp32 when fp32 scales also fit at that width, else fp16. With fp16 scales
the codes are computed against the fp16-rounded ``lo`` and ``step`` (what is stored is what is decoded).
``-o bits=`` and ``-o scale_dtype=`` force either (they must still fit). On MiniLM (30522 x 384): 10x
gives 3 bits + fp32 scales (152 B/row, 10.1x), 40x and 100x are below the 1-bit size (50 B/row with fp16
scales, 30.7x), so unattainable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator

from compbench.methods import METHODS
from compbench.methods.bitstring import pack_rows, row_bytes, unpack_rows
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, at_least, opt
from compbench.methods.quant import QUANT_REFERENCE, group_size
from compbench.methods.streaming import row_blocks, rows_per_block

SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_ALIASES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}


def _scale_dtype_name(value: Any) -> Any:
    """``fp32``/``fp16`` (any case) as ``float32``/``float16``; anything else as given (refused by the model)."""
    return _ALIASES.get(value.lower(), value) if isinstance(value, str) else value


def quant_bytes(num_embeddings: int, embedding_dim: int, bits: int, scale_bytes: int, group: int | None = None) -> int:
    """Stored bytes of ``quant`` at ``bits`` with ``scale_bytes`` (4 or 2) per scale."""
    group = int(group or embedding_dim)
    n_scales = 1 if bits == 1 else 2
    groups = int(embedding_dim) // group
    return int(num_embeddings) * (row_bytes(embedding_dim, bits) + groups * n_scales * int(scale_bytes))


class ScalarQuantEmbedding(CompressedEmbedding):
    """Packed ``b``-bit codes ``[V, ceil(d b / 8)]`` + per-group scales (``lo``/``step``, or ``scale`` at 1 bit)."""

    def __init__(self, codes: torch.Tensor, scales: dict[str, torch.Tensor], bits: int, dim: int, group: int):
        super().__init__(codes.shape[0], dim)
        self.bits, self.group = int(bits), int(group)
        self.register_buffer("codes", codes.to(torch.uint8).contiguous())
        for name, t in scales.items():
            self.register_buffer(name, t.contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        q = unpack_rows(self.codes[ids], self.bits, self.embedding_dim).float()
        q = q.reshape(*q.shape[:-1], -1, self.group)
        if self.bits == 1:
            out = (q * 2 - 1) * self.scale[ids].float().unsqueeze(-1)
        else:
            out = self.lo[ids].float().unsqueeze(-1) + q * self.step[ids].float().unsqueeze(-1)
        return out.reshape(*ids.shape, self.embedding_dim)


def quantize(table: torch.Tensor, bits: int, group: int, scale_dtype: torch.dtype) -> ScalarQuantEmbedding:
    """The ``quant`` codes of ``table`` at ``bits`` with per-group scales stored as ``scale_dtype``.

    Rows are encoded block by block (``streaming.rows_per_block``): the float temporaries stay a few MiB
    whatever ``V`` (a 131,072 x 384 table peaked at 7 GiB when encoded at once)."""
    v, d = table.shape
    parts = [_quantize_rows(table[s], bits, group, scale_dtype)
             for s in row_blocks(v, rows_per_block(d * (8 * bits + 16)))]
    codes = torch.cat([p[0] for p in parts])
    scales = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
    return ScalarQuantEmbedding(codes, scales, bits, d, group)


def _quantize_rows(rows: torch.Tensor, bits: int, group: int,
                   scale_dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Packed codes and scales of a block of rows (see :func:`quantize`)."""
    v, d = rows.shape
    x = rows.detach().float().reshape(v, d // group, group)
    if bits == 1:
        scale = x.abs().mean(dim=-1).to(scale_dtype)
        codes = (x > 0).to(torch.uint8).reshape(v, d)
        return pack_rows(codes, 1), {"scale": scale}
    levels = (1 << bits) - 1
    lo = x.amin(dim=-1).to(scale_dtype)
    step = ((x.amax(dim=-1) - lo.float()) / levels)
    step = torch.where(step > 0, step, torch.ones_like(step)).to(scale_dtype)
    step = torch.where(step.float() > 0, step, torch.ones_like(step))  # an fp16 underflow to 0
    q = torch.round((x - lo.float().unsqueeze(-1)) / step.float().unsqueeze(-1)).clamp_(0, levels)
    return pack_rows(q.to(torch.uint8).reshape(v, d), bits), {"lo": lo, "step": step}


@METHODS.register("quant")
class Quant(Method):
    """Scalar quantisation, bit width 1..8 and scale dtype (fp32/fp16) from the budget."""

    card = MethodCard(
        name="quant",
        version=1,
        family="quantization",
        reference=QUANT_REFERENCE + "; Rastegari et al. 2016 (1-bit: sign x mean|x|)",
        modes=("posthoc",),
        description="b-bit affine min-max codes (b = 1: sign x mean|x|), b in 1..8 and fp32/fp16 scales "
                    "from the budget",
    )

    class Options(MethodOptions):
        bits: int | None = opt(None, "force the bit width (must fit the budget)", at_least(1, high=8))
        scale_dtype: Annotated[Literal["float32", "float16"] | None, BeforeValidator(_scale_dtype_name)] = opt(
            None, "force the scale dtype (fp32 and fp16 also accepted, any case)")
        group_size: int | None = opt(None, "columns per scale group (unset: the whole row; must divide d)",
                                     at_least(1))

    def _group(self, d: int) -> int:
        return group_size(self, d)

    def _scale_options(self) -> list[str]:
        name = self.option("scale_dtype")
        return ["float16", "float32"] if name is None else [name]

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        group = self._group(embedding_dim)
        bits = self.option("bits")
        widths = [bits] if bits is not None else list(range(8, 0, -1))
        dtypes = self._scale_options()

        def size(b: int, dt: str) -> int:
            return quant_bytes(num_embeddings, embedding_dim, b, SCALE_DTYPES[dt].itemsize, group)

        for b in widths:  # the largest width that fits with the cheapest scales ...
            if size(b, dtypes[0]) <= budget_bytes:
                # ... then the widest scale dtype that still fits at that width
                dt = next(t for t in reversed(dtypes) if size(b, t) <= budget_bytes)
                return {"bits": b, "scale_dtype": dt, "group_size": group,
                        "scheme": "sign-meanabs" if b == 1 else "affine-minmax",
                        "bytes_per_row": size(b, dt) // max(1, num_embeddings)}
        raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                min(size(b, t) for b in widths for t in dtypes))

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        return quantize(table, int(config["bits"]), int(config["group_size"]), SCALE_DTYPES[config["scale_dtype"]])
