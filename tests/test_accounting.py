"""Byte accounting on known shapes: parameters and buffers at stored width, shared storage once."""

from __future__ import annotations

import torch
from torch import nn

from compbench.bench.cell.accounting import count_params, stored_bytes, tensor_bytes
from compbench.methods import get_method
from compbench.methods.packing import pack, packed_width, unpack


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(10, 8))  # 320 B fp32
        self.register_buffer("codes", torch.zeros(10, 3, dtype=torch.uint8))  # 30 B
        self.register_buffer("halves", torch.zeros(5, dtype=torch.float16))  # 10 B
        self.register_buffer("cache", torch.zeros(1000), persistent=False)  # 0 B: not stored


def test_params_and_buffers_counted_at_their_width() -> None:
    assert stored_bytes(_Mixed()) == 320 + 30 + 10


def test_shared_storage_counted_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 16, bias=False)
            self.b = nn.Linear(16, 8, bias=False)
            self.b.weight = nn.Parameter(self.a.weight.T)  # a view of the same storage

    m = Tied()
    assert stored_bytes(m) == 8 * 16 * 4
    assert count_params(m).total == 2 * 8 * 16  # distinct Parameter objects


def test_views_of_one_storage_merge() -> None:
    base = torch.zeros(100)
    assert tensor_bytes([base[:50], base[25:75]]) == 75 * 4
    assert tensor_bytes([base[:10], base[90:]]) == 20 * 4


def test_param_counts_trainable() -> None:
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    m[0].weight.requires_grad_(False)
    c = count_params(m)
    assert c.total == 4 * 3 + 3 + 3 * 2 + 2
    assert c.trainable == c.total - 12


def test_packing_round_trip_and_width() -> None:
    g = torch.Generator().manual_seed(0)
    for bits in (1, 2, 4, 8):
        codes = torch.randint(0, 2**bits, (7, 13), generator=g, dtype=torch.uint8)
        packed = pack(codes, bits)
        assert packed.dtype == torch.uint8
        assert packed.shape == (7, packed_width(13, bits))
        assert torch.equal(unpack(packed, bits, 13), codes)


def test_quant_bytes_known_shapes() -> None:
    table = torch.randn(100, 64)
    big = 10**9
    expect = {
        "quant-int8": 100 * 64 + 100 * 8,
        "quant-int4": 100 * 32 + 100 * 8,
        "quant-int2": 100 * 16 + 100 * 8,
        "quant-binary": 100 * 8 + 100 * 4,
        "quant-fp16": 100 * 64 * 2,
        "quant-fp8": 100 * 64 + 100 * 4,
    }
    for name, nbytes in expect.items():
        m = get_method(name)
        mod = m.compress(table, m.configure(100, 64, big), seed=0)
        assert stored_bytes(mod) == nbytes, name


def test_svd_bytes_known_shape() -> None:
    m = get_method("svd")
    cfg = m.configure(100, 64, 10 * 4 * (100 + 64))
    assert cfg == {"rank": 10}
    assert stored_bytes(m.compress(torch.randn(100, 64), cfg, seed=0)) == 10 * 4 * (100 + 64)
