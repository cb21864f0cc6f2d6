"""Memory discipline (issue 23): block-by-block encoders give the codes of one call on all rows; the Gram route
gives the SVD's truncated factors; every method's peak-memory estimate is checked before a cell runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compbench.methods import get_method
from compbench.methods import streaming as st


def _table(v: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    decay = torch.arange(1, d + 1, dtype=torch.float32) ** -0.7  # a decaying spectrum, like a real table
    return (torch.randn(v, d, generator=g) * decay) @ torch.linalg.qr(torch.randn(d, d, generator=g))[0]


def test_row_blocks_cover_every_row_once() -> None:
    got = [(s.start, s.stop) for s in st.row_blocks(10, 4)]
    assert got == [(0, 4), (4, 8), (8, 10)]
    assert st.rows_per_block(1 << 20, 4 << 20) == 4
    assert st.rows_per_block(10**12) == 1


def test_gram_route_matches_the_full_svd() -> None:
    x = _table(3000, 48)
    exact = st.top_right_singular_vectors(x, 10, direct_max_elements=10**9)
    gram = st.top_right_singular_vectors(x, 10, direct_max_elements=0)
    assert torch.allclose(exact, gram, atol=1e-8)
    mean = st.column_mean(x)
    assert torch.allclose(mean, x.double().mean(0), atol=1e-12)
    centred = st.top_right_singular_vectors(x, 5, mean, direct_max_elements=0)
    assert torch.allclose(centred, st.top_right_singular_vectors(x, 5, mean, direct_max_elements=10**9), atol=1e-8)
    proj = st.project_rows(x, gram, out_dtype=torch.float64)
    assert torch.allclose(proj, x.double() @ gram.T, atol=1e-10)


def test_svd_and_pca_large_tables_take_the_gram_route(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _table(2000, 32)
    small = {name: get_method(name).compress(x, get_method(name).configure(2000, 32, 2000 * 32), seed=0)
             for name in ("svd", "pca")}
    monkeypatch.setattr(st, "DIRECT_MAX_ELEMENTS", 0)
    import compbench.methods.svd as svd_mod

    monkeypatch.setattr(svd_mod, "DIRECT_MAX_ELEMENTS", 0)
    for name, ref in small.items():
        m = get_method(name)
        big = m.compress(x, m.configure(2000, 32, 2000 * 32), seed=0)
        assert torch.allclose(big.materialize(), ref.materialize(), atol=1e-4), name


@pytest.mark.parametrize(("name", "ratio"), [("pq", 4), ("quant", 4), ("quant-int4", 4), ("rabitq", 4),
                                             ("rq", 32), ("opq", 4)])
def test_block_encoding_equals_one_call(name: str, ratio: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _table(1500, 32)
    m = get_method(name)
    cfg = m.configure(1500, 32, 1500 * 32 * 4 // ratio)
    whole = m.compress(x, cfg, seed=0).materialize()
    monkeypatch.setattr(st, "BLOCK_BYTES", 1 << 18)  # blocks of tens of rows
    blocked = m.compress(x, cfg, seed=0).materialize()
    assert torch.equal(whole, blocked), name


def test_encode_blocks_matches_a_whole_call() -> None:
    x = np.arange(60, dtype=np.float32).reshape(20, 3)

    def enc(b: np.ndarray) -> np.ndarray:
        return (b[:, :2] % 251).astype(np.uint8)

    assert np.array_equal(st.encode_blocks(enc, x, 2, 3), enc(x))
