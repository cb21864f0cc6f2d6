"""Byte accounting: what a compressed embedding really stores.

The harness, not the method, computes stored bytes from the module's actual
tensors: every entry of ``state_dict`` (parameters and *persistent* buffers) at
its stored element size. Methods that pack sub-byte codes (int4, int2, 1-bit)
store them packed in ``uint8`` tensors, so packed sizes are counted exactly.
Storage shared between tensors (tied weights, views) is counted once.
Non-persistent buffers are caches or deterministic functions of the
configuration (a hash seed grid, Fourier frequencies) and cost 0 bytes, as do
activations and optimizer state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a module (shared parameters counted once)."""

    total: int
    trainable: int


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    st = t.untyped_storage()
    return (str(t.device), st.data_ptr())


def tensor_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of a list of tensors, each distinct byte of shared storage counted once."""
    spans: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for t in tensors:
        if t.numel() == 0:
            continue
        item = t.element_size()
        if t.is_contiguous():
            start = t.storage_offset() * item
            end = start + t.numel() * item
        else:  # a strided view: charge the whole storage it may touch
            start, end = 0, t.untyped_storage().nbytes()
        spans.setdefault(_storage_key(t), []).append((int(start), int(end)))
    total = 0
    for intervals in spans.values():
        intervals.sort()
        cur_s, cur_e = intervals[0]
        for s, e in intervals[1:]:
            if s <= cur_e:
                cur_e = max(cur_e, e)
            else:
                total += cur_e - cur_s
                cur_s, cur_e = s, e
        total += cur_e - cur_s
    return total


def stored_bytes(module: nn.Module) -> int:
    """Stored bytes of ``module``: its state_dict tensors at their stored width, shared storage once."""
    sd = module.state_dict(keep_vars=True)
    tensors = [t.detach() if isinstance(t, torch.Tensor) else t for t in sd.values()]
    return tensor_bytes([t for t in tensors if isinstance(t, torch.Tensor)])


def stored_bytes_breakdown(module: nn.Module) -> dict[str, int]:
    """Per-tensor stored bytes (before de-duplication), for records and debugging."""
    return {
        name: int(t.numel() * t.element_size())
        for name, t in module.state_dict(keep_vars=True).items()
        if isinstance(t, torch.Tensor)
    }


def count_params(module: nn.Module) -> ParamCounts:
    """Total and trainable parameter counts (``parameters()`` de-duplicates shared params)."""
    total = 0
    trainable = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParamCounts(total=total, trainable=trainable)
