"""Bit packing of sub-byte integer codes into uint8 tensors (little-endian within a byte)."""

from __future__ import annotations

import torch


def packed_width(n: int, bits: int) -> int:
    """Bytes needed to pack ``n`` codes of ``bits`` bits each."""
    return (n * bits + 7) // 8


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack the last dim of uint8 ``codes`` (values < 2**bits) into ``packed_width(n, bits)`` bytes."""
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    if bits not in (1, 2, 4):
        raise ValueError(f"bits must be 1, 2, 4 or 8, got {bits}")
    per = 8 // bits
    n = codes.shape[-1]
    pad = (-n) % per
    c = codes.to(torch.uint8)
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.reshape(*c.shape[:-1], -1, per)
    shifts = torch.arange(per, dtype=torch.uint8, device=c.device) * bits
    return (c << shifts).sum(dim=-1, dtype=torch.uint8).contiguous()


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: uint8 ``[..., packed_width(n)]`` -> uint8 codes ``[..., n]``."""
    if bits == 8:
        return packed[..., :n]
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.uint8, device=packed.device) * bits
    mask = (1 << bits) - 1
    c = (packed.unsqueeze(-1) >> shifts) & mask
    return c.reshape(*packed.shape[:-1], -1)[..., :n]
