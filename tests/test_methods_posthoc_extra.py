"""pq, opq, kmeans and direction-ae: bytes, faithfulness to faiss, reconstruction bounds, budgets."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.budget import Budget, reference_bytes
from compbench.errors import UnattainableBudgetError, UsageError
from compbench.methods import get_method
from compbench.methods.direction_ae import ae_bytes, alpha_at, direction_loss, mean_row_cosine
from compbench.methods.kmeans import index_bits, kmeans_bytes, read_bits
from compbench.methods.pq import pq_bytes, unpack_codes

V, D = 300, 48
MINILM_V, MINILM_D = 30522, 384


def _compress(name: str, table: torch.Tensor, seed: int = 0, budget: int | None = None, **opts):
    m = get_method(name, **opts)
    cfg = m.configure(V, D, budget if budget is not None else reference_bytes(V, D))
    return cfg, m.compress(table, cfg, seed=seed)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- bytes on known shapes ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "opts", "expected"), [
    ("pq", {"M": 8, "nbits": 4}, 300 * 4 + 16 * 48 * 4),          # 4-bit codes, 2 per byte
    ("pq", {"M": 8, "nbits": 5}, 300 * 5 + 32 * 48 * 4),          # 40 bits per row = 5 bytes
    ("pq", {"M": 6, "nbits": 3}, 300 * 3 + 8 * 48 * 4),           # 18 bits per row -> 3 bytes
    ("opq", {"M": 8, "nbits": 4}, 300 * 4 + 16 * 48 * 4 + 48 * 48 * 4),
    ("kmeans", {"K": 37}, (300 * 6 + 7) // 8 + 37 * 48 * 4),     # 6-bit indices, one bitstring
    ("kmeans", {"K": 2}, (300 * 1 + 7) // 8 + 2 * 48 * 4),
    ("direction-ae", {"latent_dim": 5, "epochs": 1, "additional_epochs": 0}, 4 * (300 * 5 + 5 * 48 + 48)),
])
def test_stored_bytes_match_formula(name, opts, expected, tiny_table) -> None:
    cfg, mod = _compress(name, tiny_table, **opts)
    assert stored_bytes(mod) == expected
    formula = {
        "pq": lambda: pq_bytes(V, D, cfg.get("M", 0), cfg.get("nbits", 0)),
        "opq": lambda: pq_bytes(V, D, cfg["M"], cfg["nbits"], rotation=True),
        "kmeans": lambda: kmeans_bytes(V, D, cfg["K"]),
        "direction-ae": lambda: ae_bytes(V, D, cfg["latent_dim"]),
    }[name]()
    assert formula == expected
    # codes / indices are uint8, everything else fp32
    for key, t in mod.state_dict().items():
        assert t.dtype == (torch.uint8 if key in ("codes", "indices") else torch.float32), key


def test_configure_picks_largest_on_minilm_shape() -> None:
    ref = reference_bytes(MINILM_V, MINILM_D)
    b10, b40 = Budget.parse("10x").resolve(ref), Budget.parse("40x").resolve(ref)
    pq10 = get_method("pq").configure(MINILM_V, MINILM_D, b10)
    assert (pq10["M"], pq10["nbits"]) == (128, 8)  # next divisor, 192, does not fit
    assert pq_bytes(MINILM_V, MINILM_D, 192, 8) > b10 >= pq_bytes(MINILM_V, MINILM_D, 128, 8)
    assert get_method("pq").configure(MINILM_V, MINILM_D, b40)["M"] == 24
    assert get_method("opq").configure(MINILM_V, MINILM_D, b40)["M"] == 6  # the 4 d^2 rotation is paid
    k10 = get_method("kmeans").configure(MINILM_V, MINILM_D, b10)["K"]
    assert kmeans_bytes(MINILM_V, MINILM_D, k10) <= b10 < kmeans_bytes(MINILM_V, MINILM_D, k10 + 1)
    ae = get_method("direction-ae").configure(MINILM_V, MINILM_D, b10)["latent_dim"]
    svd = get_method("svd").configure(MINILM_V, MINILM_D, b10)["rank"]
    assert ae == svd == 37
    assert ae_bytes(MINILM_V, MINILM_D, ae) <= b10 < ae_bytes(MINILM_V, MINILM_D, ae + 1)


def test_pq_lowers_nbits_on_a_tiny_table() -> None:
    cfg = get_method("pq").configure(V, D, Budget.parse("10x").resolve(reference_bytes(V, D)))
    assert cfg["nbits"] < 8 and D % cfg["M"] == 0  # 8-bit codebooks (49 KB) exceed the 5.8 KB budget
    assert get_method("pq").configure(V, D, reference_bytes(V, D))["nbits"] == 8


# -- faithfulness to faiss ------------------------------------------------------------------------
@pytest.mark.parametrize("nbits", [8, 4, 5, 3])
def test_pq_forward_is_faiss_decode(nbits: int, tiny_table) -> None:
    _, mod = _compress("pq", tiny_table, M=8, nbits=nbits)
    pq = faiss.ProductQuantizer(D, 8, nbits)
    faiss.copy_array_to_vector(mod.centroids.numpy().ravel(), pq.centroids)
    codes = mod.codes.numpy()
    np.testing.assert_allclose(mod.materialize().numpy(), pq.decode(codes), rtol=0, atol=1e-6)
    # codes are the nearest centroids of every row (faiss' own encoder agrees)
    np.testing.assert_array_equal(pq.compute_codes(tiny_table.numpy()), codes)


def test_opq_forward_is_faiss_reverse_transform(tiny_table) -> None:
    _, mod = _compress("opq", tiny_table, M=8, nbits=4)
    rot = mod.rotation
    torch.testing.assert_close(rot @ rot.T, torch.eye(D), atol=1e-4, rtol=0)  # orthonormal
    pq = faiss.ProductQuantizer(D, 8, 4)
    faiss.copy_array_to_vector(mod.centroids.numpy().ravel(), pq.centroids)
    expected = pq.decode(mod.codes.numpy()) @ rot.numpy()
    np.testing.assert_allclose(mod.materialize().numpy(), expected, rtol=0, atol=1e-5)


def test_unpack_codes_generic_path_matches_faiss_unpack() -> None:
    rng = np.random.default_rng(0)
    for nbits in (3, 5, 6, 7, 9, 12):
        codes = rng.integers(0, 1 << nbits, size=(20, 7)).astype(np.int32)
        packed = faiss.pack_bitstrings(codes, nbits)
        got = unpack_codes(torch.from_numpy(packed), 7, nbits).numpy()
        np.testing.assert_array_equal(got, codes)


def test_kmeans_read_bits_matches_faiss_bitstrings() -> None:
    rng = np.random.default_rng(1)
    for bits in (1, 2, 3, 5, 8, 11, 13, 16):
        labels = rng.integers(0, 1 << bits, size=(1, 101)).astype(np.int32)
        stream = torch.from_numpy(faiss.pack_bitstrings(labels, bits).reshape(-1).copy())
        ids = torch.tensor([[0, 100, 50], [7, 99, 1]])
        np.testing.assert_array_equal(read_bits(stream, ids, bits).numpy(), labels[0][ids.numpy()])
    assert index_bits(1) == 1 and index_bits(2) == 1 and index_bits(3) == 2 and index_bits(3022) == 12


def test_kmeans_assigns_nearest_centroid(tiny_table) -> None:
    _, mod = _compress("kmeans", tiny_table, K=20)
    idx = faiss.IndexFlatL2(D)
    idx.add(mod.centroids.numpy())
    _, nearest = idx.search(tiny_table.numpy(), 1)
    np.testing.assert_array_equal(mod.assignments(torch.arange(V)).numpy(), nearest[:, 0])


# -- reconstruction bounds -----------------------------------------------------------------------
def test_pq_one_dim_subspaces_nearly_exact(tiny_table) -> None:
    big = 2 * reference_bytes(V, D)  # 8-bit codebooks for 48 sub-spaces cost more than the fp32 table here
    _, mod = _compress("pq", tiny_table, budget=big, M=D, nbits=8)  # 256 levels per coordinate, 300 rows
    assert _rel(mod.materialize(), tiny_table) < 0.01
    _, coarse = _compress("pq", tiny_table, M=4, nbits=4)
    assert _rel(coarse.materialize(), tiny_table) > _rel(mod.materialize(), tiny_table)


def test_kmeans_with_k_equal_v_is_exact(tiny_table) -> None:
    _, mod = _compress("kmeans", tiny_table, budget=2 * reference_bytes(V, D), K=V)
    torch.testing.assert_close(mod.materialize(), tiny_table, rtol=0, atol=1e-6)


def test_direction_ae_beats_svd_in_cosine(tiny_table) -> None:
    budget = Budget.parse("10x").resolve(reference_bytes(V, D))
    cfg, ae = _compress("direction-ae", tiny_table, budget=budget)
    svd_m = get_method("svd")
    svd = svd_m.compress(tiny_table, svd_m.configure(V, D, budget), seed=0)
    assert cfg["latent_dim"] == svd.rank
    cos_ae = mean_row_cosine(ae.materialize(), tiny_table)
    cos_svd = mean_row_cosine(svd.materialize(), tiny_table)
    assert cos_ae >= cos_svd - 1e-6
    # random init trains too (from cosine ~0 to close to SVD's)
    _, rnd = _compress("direction-ae", tiny_table, budget=budget, init="random", batch_size=16, lr=1e-2,
                      epochs=10, additional_epochs=0)
    assert mean_row_cosine(rnd.materialize(), tiny_table) > 0.9 * cos_svd


def test_direction_ae_loss_and_schedule() -> None:
    assert [alpha_at(e, 20) for e in (0, 10, 19, 20, 29)] == pytest.approx([1.0, 0.55, 0.145, 0.1, 0.1])
    x = torch.randn(4, 6)
    # identical input: cosine term 0, L1 term (1e-10)^alpha
    assert float(direction_loss(x, x, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(direction_loss(-x, x, 1.0)) > 0.9975 / 5 * 2 - 1e-4


# -- determinism, forward/materialize, errors ------------------------------------------------------
@pytest.mark.parametrize(("name", "opts"), [("pq", {"M": 8, "nbits": 4}), ("opq", {"M": 4, "nbits": 4}),
                                            ("kmeans", {"K": 16}),
                                            ("direction-ae", {"init": "random", "epochs": 2,
                                                              "additional_epochs": 0})])
def test_seeded_and_forward_matches_materialize(name, opts, tiny_table) -> None:
    _, a = _compress(name, tiny_table, seed=3, **opts)
    _, b = _compress(name, tiny_table, seed=3, **opts)
    _, c = _compress(name, tiny_table, seed=4, **opts)
    full = a.materialize()
    torch.testing.assert_close(b.materialize(), full, rtol=0, atol=0)
    assert not torch.equal(c.materialize(), full)
    ids = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(ids), full[ids], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "min_bytes"), [
    ("pq", V * 1 + 2 * D * 4),                   # M = 1, nbits = 1
    ("opq", V * 1 + 2 * D * 4 + D * D * 4),
    ("kmeans", (V + 7) // 8 + D * 4),            # K = 1
    ("direction-ae", 4 * (V + D + D)),           # k = 1
])
def test_unattainable_budget_names_smallest(name: str, min_bytes: int) -> None:
    with pytest.raises(UnattainableBudgetError, match="smallest budget it can meet") as exc:
        get_method(name).configure(V, D, min_bytes - 1)
    assert exc.value.min_bytes == min_bytes
    get_method(name).configure(V, D, min_bytes)


@pytest.mark.parametrize(("name", "opts"), [("pq", {"M": 48, "nbits": 8}), ("kmeans", {"K": 299}),
                                            ("direction-ae", {"latent_dim": 48})])
def test_forced_option_that_does_not_fit(name, opts) -> None:
    with pytest.raises(UnattainableBudgetError):
        get_method(name, **opts).configure(V, D, 2000)


@pytest.mark.parametrize(("name", "opts"), [
    ("pq", {"M": 5}), ("pq", {"nbits": 9}), ("pq", {"nbits": 0}), ("opq", {"M": 7}),
    ("kmeans", {"K": 301}), ("kmeans", {"niter": 0}),
    ("direction-ae", {"init": "pca"}), ("direction-ae", {"select": "worst"}), ("direction-ae", {"batch_size": 0}),
    ("pq", {"nbits": "x"}),
])
def test_bad_options_are_usage_errors(name, opts) -> None:
    with pytest.raises(UsageError):
        get_method(name, **opts).configure(V, D, reference_bytes(V, D))
