"""Packing of ``b``-bit codes (1 <= b <= 16) into one little-endian bitstring per row.

Code ``j`` of a row occupies bits ``j b .. j b + b - 1`` of the row's bitstring, bit ``k`` of the string
being bit ``k % 8`` of byte ``k // 8``. This is the layout of faiss' ``BitstringWriter`` (PQ, additive
quantizers, RaBitQ's extra-bit codes), and for ``b`` in 1, 2, 4, 8 it is byte-for-byte the layout of
:mod:`compbench.methods.packing`, which is used for those widths. A row of ``n`` codes takes
``ceil(n b / 8)`` bytes.
"""

from __future__ import annotations

import torch

from compbench.methods.packing import pack, packed_width, unpack

__all__ = ["pack_rows", "packed_width", "unpack_rows"]


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes ``[..., n]`` (values < 2**bits) -> uint8 ``[..., ceil(n bits / 8)]``."""
    bits = int(bits)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    if bits in (1, 2, 4, 8):
        return pack(codes.to(torch.uint8), bits)
    n = codes.shape[-1]
    c = codes.long()
    shifts = torch.arange(bits, device=c.device)
    stream = ((c.unsqueeze(-1) >> shifts) & 1).reshape(*c.shape[:-1], n * bits)
    pad = (-stream.shape[-1]) % 8
    if pad:
        stream = torch.nn.functional.pad(stream, (0, pad))
    stream = stream.reshape(*c.shape[:-1], -1, 8)
    weights = torch.ones(8, dtype=torch.long, device=c.device) << torch.arange(8, device=c.device)
    return (stream * weights).sum(-1).to(torch.uint8).contiguous()


def unpack_rows(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: uint8 ``[..., ceil(n bits / 8)]`` -> long codes ``[..., n]``.

    Widths other than 1, 2, 4, 8 gather the (at most 3) bytes each code spans and shift: no bit expansion."""
    bits = int(bits)
    if bits in (1, 2, 4, 8):
        return unpack(packed, bits, n).long()
    pos = torch.arange(n, device=packed.device) * bits
    first, shift = pos >> 3, pos & 7
    last = packed.shape[-1] - 1
    val = torch.zeros(*packed.shape[:-1], n, dtype=torch.long, device=packed.device)
    for j in range((bits + 7 + 7) // 8):  # bytes a code can span
        # clamping is safe: a byte past the end only holds bits above the code (masked below)
        val |= packed.index_select(-1, (first + j).clamp_max(last)).long() << (8 * j)
    return (val >> shift) & ((1 << bits) - 1)


def row_bytes(n: int, bits: int) -> int:
    """Bytes of one packed row of ``n`` codes of ``bits`` bits."""
    return packed_width(int(n), int(bits))
