"""quant, pca, rabitq, rq, lsq, compositions (A+B) and tiered: bytes on known shapes, faithfulness to faiss,
round trips, budget rules."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from compbench.bench.cell.accounting import stored_bytes, stored_bytes_breakdown
from compbench.bench.cell.budget import Budget, reference_bytes
from compbench.errors import UnattainableBudgetError, UsageError
from compbench.methods import get_method
from compbench.methods.additive import aq_bytes
from compbench.methods.bitstring import pack_rows, unpack_rows
from compbench.methods.compose import ComposedEmbedding, compose, composed_method
from compbench.methods.pca import pca_bytes
from compbench.methods.quant_budget import quant_bytes
from compbench.methods.rabitq import code_size, rabitq_bytes
from compbench.methods.tiered import TieredEmbedding, map_bytes, tier_sizes

V, D = 300, 48
MINILM_V, MINILM_D = 30522, 384
REF = reference_bytes(MINILM_V, MINILM_D)


@pytest.fixture(autouse=True)
def _one_omp_thread():
    """faiss' OpenMP pool busy-waits badly on a shared machine; these tables are tiny."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _budget(spec: str, v: int = MINILM_V, d: int = MINILM_D) -> int:
    return Budget.parse(spec).resolve(reference_bytes(v, d))


def _compress(name: str, table: torch.Tensor, budget: int | None = None, seed: int = 0, **opts):
    m = get_method(name, **opts)
    cfg = m.configure(table.shape[0], table.shape[1], budget if budget is not None else reference_bytes(*table.shape))
    return cfg, m.compress(table, cfg, seed=seed)


def _other(table: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(777)
    return torch.randn(table.shape, generator=g) * float(table.std())


def _round_trip(mod: torch.nn.Module, rebuilt: torch.nn.Module) -> None:
    """``rebuilt`` (compressed from other data) loads ``mod``'s state_dict strictly and gives the same outputs."""
    rebuilt.load_state_dict({k: v.clone() for k, v in mod.state_dict().items()}, strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval().materialize(), mod.eval().materialize())


# -- bitstrings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16])
def test_bitstring_rows_match_faiss_layout(bits: int) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=(11, 13)).astype(np.int32)
    packed = pack_rows(torch.from_numpy(codes), bits)
    assert packed.shape == (11, (13 * bits + 7) // 8) and packed.dtype == torch.uint8
    np.testing.assert_array_equal(packed.numpy(), faiss.pack_bitstrings(codes, bits))
    np.testing.assert_array_equal(unpack_rows(packed, bits, 13).numpy(), codes)


# -- quant -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("opts", "expected"), [
    ({"bits": 3, "scale_dtype": "fp32"}, 300 * (18 + 8)),           # 144 bits -> 18 B + lo/step fp32
    ({"bits": 5, "scale_dtype": "fp16"}, 300 * (30 + 4)),           # 240 bits -> 30 B + lo/step fp16
    ({"bits": 1, "scale_dtype": "fp16"}, 300 * (6 + 2)),            # sign bits + one fp16 scale
    ({"bits": 7, "scale_dtype": "fp32", "group_size": 16}, 300 * (42 + 3 * 8)),
])
def test_quant_bytes_on_known_shapes(opts, expected, tiny_table) -> None:
    cfg, mod = _compress("quant", tiny_table, **opts)
    assert stored_bytes(mod) == expected == quant_bytes(V, D, cfg["bits"], 4 if cfg["scale_dtype"] == "float32" else 2,
                                                          cfg["group_size"])
    assert mod.codes.dtype == torch.uint8
    scales = [t for k, t in mod.state_dict().items() if k != "codes"]
    assert all(t.dtype == (torch.float32 if cfg["scale_dtype"] == "float32" else torch.float16) for t in scales)


def test_quant_budget_rule() -> None:
    # MiniLM at 10x: 4 bits (192 B + scales) does not fit 153 B/row; 3 bits does, even with fp32 scales
    cfg = get_method("quant").configure(MINILM_V, MINILM_D, _budget("10x"))
    assert (cfg["bits"], cfg["scale_dtype"]) == (3, "float32")
    # a budget where the width fits only with the cheaper fp16 scales
    tight = MINILM_V * (144 + 4)
    cfg = get_method("quant").configure(MINILM_V, MINILM_D, tight)
    assert (cfg["bits"], cfg["scale_dtype"]) == (3, "float16")
    assert get_method("quant").configure(MINILM_V, MINILM_D, MINILM_V * (144 + 4) - 1)["bits"] == 2
    with pytest.raises(UnattainableBudgetError) as exc:
        get_method("quant").configure(MINILM_V, MINILM_D, _budget("40x"))  # 1 bit is 50 B/row
    assert exc.value.min_bytes == MINILM_V * (48 + 2)
    with pytest.raises(UsageError):
        get_method("quant", scale_dtype="bf16").configure(V, D, 10**9)


@pytest.mark.parametrize(("bits", "fixed"), [(8, "quant-int8"), (4, "quant-int4"), (2, "quant-int2"),
                                             (1, "quant-binary")])
def test_quant_equals_the_fixed_width_entries(bits, fixed, tiny_table) -> None:
    _, mod = _compress("quant", tiny_table, bits=bits, scale_dtype="fp32")
    _, ref = _compress(fixed, tiny_table)
    torch.testing.assert_close(mod.materialize(), ref.materialize(), rtol=0, atol=0)
    assert stored_bytes(mod) == stored_bytes(ref)


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
def test_quant_error_within_half_a_step(bits, tiny_table) -> None:
    for dtype in ("fp32", "fp16"):
        _, mod = _compress("quant", tiny_table, bits=bits, scale_dtype=dtype)
        err = (mod.materialize() - tiny_table).abs().amax(1)
        slack = 0.5 if dtype == "fp32" else 0.6  # fp16 lo/step are rounded, and the codes follow them
        assert bool((err <= mod.step.float().squeeze(1) * slack + 1e-6).all())
    _, finer = _compress("quant", tiny_table, bits=bits + 1, scale_dtype="fp32")
    assert (finer.materialize() - tiny_table).norm() < (mod.materialize() - tiny_table).norm()


# -- pca -------------------------------------------------------------------------------------------
def test_pca_bytes_and_reconstruction(tiny_table) -> None:
    cfg, mod = _compress("pca", tiny_table, rank=5)
    assert stored_bytes(mod) == pca_bytes(V, D, 5) == 4 * (V * 5 + 5 * D + D)
    assert stored_bytes_breakdown(mod) == {"coeffs": 4 * V * 5, "axes": 4 * 5 * D, "mean": 4 * D}
    x = tiny_table.double()
    mean = x.mean(0)
    torch.testing.assert_close(mod.mean.double(), mean, rtol=0, atol=1e-6)
    # the optimal rank-5 approximation of the centered table (Eckart-Young)
    u, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    best = (u[:, :5] * s[:5]) @ vh[:5] + mean
    torch.testing.assert_close(mod.materialize().double(), best, rtol=0, atol=1e-5)
    _, half = _compress("pca", tiny_table, rank=5, dtype="fp16")
    assert stored_bytes(half) == stored_bytes(mod) // 2
    assert all(t.dtype == torch.float16 for t in half.state_dict().values())


def test_pca_rank_from_budget() -> None:
    for spec, r32, r16 in (("10x", 37, 75), ("40x", 9, 18), ("100x", 3, 7)):
        b = _budget(spec)
        assert get_method("pca").configure(MINILM_V, MINILM_D, b)["rank"] == r32
        assert get_method("pca", dtype="fp16").configure(MINILM_V, MINILM_D, b)["rank"] == r16
        assert pca_bytes(MINILM_V, MINILM_D, r32) <= b < pca_bytes(MINILM_V, MINILM_D, r32 + 1)


# -- rabitq ----------------------------------------------------------------------------------------
def _faiss_rabitq(table: torch.Tensor, nb_bits: int, seed: int):
    rr = faiss.RandomRotationMatrix(table.shape[1], table.shape[1])
    rr.init(seed)
    inner = faiss.IndexRaBitQ(table.shape[1], faiss.METRIC_L2, nb_bits)
    inner.qb = 0  # float queries: faiss' exact estimator
    index = faiss.IndexPreTransform(rr, inner)
    index.train(table.numpy())
    index.add(table.numpy())
    return index


def test_rabitq_code_size_and_bytes(tiny_table) -> None:
    for nb in range(1, 10):
        assert code_size(D, nb) == faiss.RaBitQuantizer(D, faiss.METRIC_L2, nb).code_size
        assert code_size(MINILM_D, nb) == faiss.RaBitQuantizer(MINILM_D, faiss.METRIC_L2, nb).code_size
    cfg, mod = _compress("rabitq", tiny_table, nb_bits=3)
    assert stored_bytes(mod) == rabitq_bytes(V, D, 3) == V * (6 + 12 + 12 + 8) + 4 * D
    assert set(mod.state_dict()) == {"codes", "center"}  # the seeded rotation is not stored
    # bits from the budget on MiniLM: 2 bits at 10x, 1 bit needs 27.4x; below it a projection onto d' < d
    assert get_method("rabitq").configure(MINILM_V, MINILM_D, _budget("10x"))["nb_bits"] == 2
    assert get_method("rabitq").configure(MINILM_V, MINILM_D, _budget("27x"))["dims"] == MINILM_D
    cfg40 = get_method("rabitq").configure(MINILM_V, MINILM_D, _budget("40x"))
    assert (cfg40["nb_bits"], cfg40["dims"]) == (1, 240)  # 30 B of signs + 8 B of factors <= 38.4 B per row
    assert rabitq_bytes(MINILM_V, 240, 1) <= _budget("40x") < rabitq_bytes(MINILM_V, 248, 1)
    with pytest.raises(UnattainableBudgetError) as exc:
        get_method("rabitq", project="off").configure(MINILM_V, MINILM_D, _budget("40x"))
    assert exc.value.min_bytes == MINILM_V * 56 + 4 * MINILM_D


def test_rabitq_projected_codes_are_faiss_codes() -> None:
    """Below the 1-bit size: RandomRotationMatrix(d, d') + IndexRaBitQ(d'), the index faiss' factory builds."""
    table = torch.nn.functional.normalize(torch.randn(2000, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    cfg = get_method("rabitq").configure(2000, 64, 2000 * 64 * 4 // 16)
    assert cfg["dims"] == 56 and cfg["nb_bits"] == 1  # 7 B of signs + 8 B of factors = 15 B <= 16 B per row
    mod = get_method("rabitq").compress(table, cfg, seed=4)
    assert mod.materialize().shape == (2000, 64) and stored_bytes(mod) == rabitq_bytes(2000, 56, 1)
    rr = faiss.RandomRotationMatrix(64, 56)
    rr.init(4)
    index = faiss.IndexPreTransform(rr, faiss.IndexRaBitQ(56, faiss.METRIC_L2, 1))
    index.train(table.numpy())
    assert np.array_equal(index.sa_encode(table.numpy()), mod.codes.numpy())
    assert np.allclose(index.sa_decode(mod.codes.numpy()), mod.materialize().numpy(), atol=1e-5)


def test_rabitq_one_bit_decode_is_faiss_decode(tiny_table) -> None:
    _, mod = _compress("rabitq", tiny_table, nb_bits=1, seed=3)
    index = _faiss_rabitq(tiny_table, 1, seed=3)
    codes = index.sa_encode(tiny_table.numpy())
    np.testing.assert_array_equal(mod.codes.numpy(), codes)  # faiss' codes, byte for byte
    np.testing.assert_allclose(mod.materialize().numpy(), index.sa_decode(codes), rtol=0, atol=1e-6)
    ids = torch.tensor([[0, 5], [299, 17]])
    with torch.no_grad():
        torch.testing.assert_close(mod(ids), mod.materialize()[ids], rtol=0, atol=1e-6)


@pytest.mark.parametrize("nb_bits", [2, 3, 4, 7])
def test_rabitq_multibit_decode_matches_faiss(nb_bits, tiny_table) -> None:
    _, mod = _compress("rabitq", tiny_table, nb_bits=nb_bits, seed=5)
    index = _faiss_rabitq(tiny_table, nb_bits, seed=5)
    codes = index.sa_encode(tiny_table.numpy())
    np.testing.assert_array_equal(mod.codes.numpy(), codes)
    # faiss' decode reads the sign bits only; ours does too when asked to
    sign_only = mod.decode_rotated(mod.codes, sign_only=True) @ mod.rotation
    np.testing.assert_allclose(sign_only.numpy(), index.sa_decode(codes), rtol=0, atol=1e-6)
    # the full decode is the vector faiss' multi-bit search estimates distances with:
    # dist(q, i) = ||q - c||^2 + ||o_i - c||^2 - 2 <q - c, y_i - c> (rotated space)
    q = torch.randn(4, D, generator=torch.Generator().manual_seed(0)) * 0.2
    dist, lab = index.search(q.numpy(), V)
    faiss_dist = np.empty_like(dist)
    np.put_along_axis(faiss_dist, lab, dist, axis=1)
    qr = q @ mod.rotation.T
    y = mod.decode_rotated(mod.codes)
    exb = (D * (nb_bits - 1) + 7) // 8
    norm2 = mod.codes[:, 6 + 12 + exb: 6 + 12 + exb + 4].clone().view(torch.float32)[:, 0]
    est = ((qr - mod.center) ** 2).sum(1, keepdim=True) + norm2 - 2 * (qr - mod.center) @ (y - mod.center).T
    np.testing.assert_allclose(est.numpy(), faiss_dist, rtol=1e-5, atol=1e-5)
    # more bits, better reconstruction
    cos = torch.nn.functional.cosine_similarity(mod.materialize(), tiny_table).mean()
    cos_sign = torch.nn.functional.cosine_similarity(sign_only, tiny_table).mean()
    assert cos > cos_sign


def test_rabitq_least_squares_decode_and_rotation(tiny_table) -> None:
    for nb in (1, 3):
        _, est = _compress("rabitq", tiny_table, nb_bits=nb)
        _, ls = _compress("rabitq", tiny_table, nb_bits=nb, decode="least-squares")
        assert torch.equal(est.codes, ls.codes)
        a, b = est.materialize(), ls.materialize()
        # same directions around the centroid, the L2-optimal length is the shorter one
        c = est.center @ est.rotation
        torch.testing.assert_close(torch.nn.functional.cosine_similarity(a - c, b - c),
                                   torch.ones(V), rtol=0, atol=1e-4)
        assert (b - tiny_table).norm() < (a - tiny_table).norm()
    _, mod = _compress("rabitq", tiny_table, nb_bits=2, seed=9)
    _round_trip(mod, get_method("rabitq", nb_bits=2).compress(_other(tiny_table), {"nb_bits": 2, "decode": "faiss",
                                                                                  "rotation": "random"}, seed=9))
    _, plain = _compress("rabitq", tiny_table, nb_bits=2, rotation="none")
    assert "rotation" not in dict(plain.named_buffers())


# -- rq / lsq --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "m", "nbits"), [("rq", 4, 3), ("rq", 3, 5), ("lsq", 4, 3), ("lsq", 2, 4)])
def test_additive_bytes_and_decode_match_faiss(name, m, nbits, tiny_table) -> None:
    method = get_method(name, M=m, nbits=nbits)
    cfg = method.configure(V, D, reference_bytes(V, D))
    mod = method.compress(tiny_table, cfg, seed=0)
    assert stored_bytes(mod) == aq_bytes(V, D, m, nbits) == V * ((m * nbits + 7) // 8) + 4 * m * (1 << nbits) * D
    q = method._train(tiny_table.numpy(), cfg, 0)  # the same seeded training, kept as a faiss object here
    codes = q.compute_codes(tiny_table.numpy())
    np.testing.assert_array_equal(mod.codes.numpy(), codes)
    np.testing.assert_allclose(mod.materialize().numpy(), q.decode(codes), rtol=0, atol=1e-5)
    ids = torch.tensor([[3, 4, 5], [0, 299, 3]])
    with torch.no_grad():
        torch.testing.assert_close(mod(ids), mod.materialize()[ids], rtol=0, atol=1e-6)
    _round_trip(mod, method.compress(_other(tiny_table), cfg, seed=0))


def test_additive_budget_rule_on_minilm_shape() -> None:
    def pick(name: str, spec: str) -> tuple[int, int]:
        cfg = get_method(name).configure(MINILM_V, MINILM_D, _budget(spec))
        assert aq_bytes(MINILM_V, MINILM_D, cfg["M"], cfg["nbits"]) <= _budget(spec)
        return cfg["M"], cfg["nbits"]

    assert pick("rq", "10x") == (64, 5)
    assert pick("rq", "40x") == (48, 3)
    assert pick("rq", "100x") == (32, 2)
    assert pick("lsq", "10x") == (32, 6)
    assert pick("lsq", "40x") == (29, 4)
    # more code bits never lose to fewer: the pick maximises M * nbits among the pairs that fit
    b = _budget("40x")
    for nb in range(1, 9):
        for m in range(1, 65):
            if aq_bytes(MINILM_V, MINILM_D, m, nb) <= b:
                assert m * nb <= 48 * 3
    with pytest.raises(UnattainableBudgetError):
        get_method("rq").configure(MINILM_V, MINILM_D, 1000)


# -- compositions ----------------------------------------------------------------------------------
def test_composition_bytes_are_what_it_stores(tiny_table) -> None:
    m = compose("pca", "quant-int8", factor_dtype="fp16")
    budget = _budget("4x", V, D)
    cfg = m.configure(V, D, budget)
    r = cfg["rank"]
    mod = m.compress(tiny_table, cfg, seed=0)
    assert isinstance(mod, ComposedEmbedding)
    parts = stored_bytes_breakdown(mod)
    assert parts == {"basis": 2 * r * D, "mean": 2 * D, "codes.codes": V * r, "codes.lo": 4 * V, "codes.step": 4 * V}
    assert stored_bytes(mod) == sum(parts.values()) <= budget
    assert stored_bytes(mod) + V + 2 * D > budget  # rank r + 1 would not fit
    # forward: B's decode of the coefficients, lifted by the kept basis and mean
    coeffs = mod.codes.materialize()
    torch.testing.assert_close(mod.materialize(), coeffs @ mod.basis.float() + mod.mean.float())
    # close to the fp32 PCA of the same rank
    pca = get_method("pca", rank=r)
    ref = pca.compress(tiny_table, pca.configure(V, D, 10**9), seed=0).materialize()
    assert (mod.materialize() - ref).norm() / ref.norm() < 0.02
    _round_trip(mod, m.compress(_other(tiny_table), cfg, seed=0))


def test_composition_card_split_and_errors() -> None:
    m = composed_method("svd+quant-fp8")
    assert (m.card.name, m.card.version, m.card.modes) == ("svd+quant-fp8", 1, ("posthoc",))
    assert m.card.family == "low-rank+quantization"
    assert "Eckart" in m.card.reference and "FP8" in m.card.reference
    cfg = m.configure(MINILM_V, MINILM_D, _budget("40x"))
    assert cfg["rank"] == 32 and cfg["b"]["name"] == "quant-fp8" and cfg["split"] == "auto"
    assert compose("pca", "quant-int8").configure(MINILM_V, MINILM_D, _budget("40x"))["rank"] == 28
    # an explicit split caps A's kept parts; B gets the rest
    cfg = compose("pca", "quant", split=0.1).configure(MINILM_V, MINILM_D, _budget("40x"))
    assert cfg["kept_bytes"] <= 0.1 * _budget("40x") < 4 * MINILM_D * (cfg["rank"] + 2)
    assert cfg["b"]["config"]["bits"] == 3
    b_opts = compose("pca", "quant", **{"b.bits": 2}).configure(MINILM_V, MINILM_D, _budget("40x"))
    assert b_opts["b"]["config"]["bits"] == 2
    with pytest.raises(UsageError, match="first part"):
        compose("pq", "quant-int8")
    with pytest.raises(UsageError):
        compose("pca", "quant-int8", split=1.5)
    with pytest.raises(UnattainableBudgetError, match="smallest budget it can meet"):
        compose("pca", "quant-int8").configure(MINILM_V, MINILM_D, 10_000)


# -- tiered ----------------------------------------------------------------------------------------
def test_tier_sizes_and_map_bytes() -> None:
    counts = np.array([100, 50, 25, 0, 10, 10, 5, 0], dtype=float)
    assert tier_sizes(counts, (0.5, 0.8, 0.9)) == [(0.5, 1), (0.8, 3), (0.9, 4)]
    assert map_bytes(8, 3) == 16 + 1 * 3 * 2  # 2-bit ids for one block of 64 rows + one block x 3 tiers x int16
    assert map_bytes(MINILM_V, 3) == 477 * 16 + 477 * 3 * 2


def test_tiered_locate_and_counted_map() -> None:
    rng = np.random.default_rng(0)
    v, d = 200, 4
    tier_of = torch.from_numpy(rng.integers(0, 3, size=v))  # tiers 0, 1 and the shared code (2)
    sizes = [int((tier_of == t).sum()) for t in range(2)]
    tiers = [torch.nn.Embedding.from_pretrained(torch.randn(n, d)) for n in sizes]
    shared = torch.randn(d)
    mod = TieredEmbedding(tiers, tier_of, shared, torch.tensor([[n, 0, 0] for n in sizes]), d, base="pq",
                          base_options={}, seed=0)
    tier, slot = mod.locate(torch.arange(v))
    assert torch.equal(tier, tier_of)
    for t in range(3):
        sel = tier_of == t
        assert torch.equal(slot[sel], torch.arange(int(sel.sum())))  # index in tier = rank among its rows
    full = mod.materialize()
    for t in range(2):
        torch.testing.assert_close(full[tier_of == t], tiers[t].weight)
    assert bool((full[tier_of == 2] == shared).all())
    parts = stored_bytes_breakdown(mod)
    assert parts["tier_ids"] == 4 * 16 and parts["rank_dir"] == 4 * 3 * 2  # 4 blocks of 64 rows, 3 tiers
    assert parts["shared"] == 4 * d and parts["plan"] == 2 * 3 * 4


@pytest.mark.parametrize("n_ids", [2, 3, 5, 9, 16])
@pytest.mark.parametrize("v", [1, 63, 64, 65, 200, 1000])
def test_tiered_locate_is_the_rank_among_same_tier_rows(n_ids: int, v: int) -> None:
    """The O(1) bit-plane locate (tier = the id's bit in each plane, index = rank-directory entry + popcount of
    the same-tier rows before it) equals the definition for every tier-id width (1 to 4 bits), for a table that is
    not a whole number of 64-row blocks, and for ids in any order with repeats; and after load_state_dict."""
    rng = np.random.default_rng(v * 31 + n_ids)
    d = 3
    tier_of = torch.from_numpy(rng.integers(0, n_ids, size=v))
    sizes = [int((tier_of == t).sum()) for t in range(n_ids - 1)]
    tiers = [torch.nn.Embedding.from_pretrained(torch.randn(max(n, 1), d)) for n in sizes]
    mod = TieredEmbedding(tiers, tier_of, torch.randn(d), torch.tensor([[n, 0, 0] for n in sizes]), d, base="pq",
                          base_options={}, seed=0)
    ids = torch.from_numpy(rng.integers(0, v, size=3 * v + 5))
    tier, slot = mod.locate(ids)
    rank = torch.zeros(v, dtype=torch.long)  # the definition: a row's rank among the rows of its tier
    for t in range(n_ids):
        rank[tier_of == t] = torch.arange(int((tier_of == t).sum()))
    assert torch.equal(tier, tier_of[ids]) and torch.equal(slot, rank[ids])
    other = TieredEmbedding(tiers, torch.from_numpy(rng.integers(0, n_ids, size=v)), torch.randn(d),
                            torch.tensor([[n, 0, 0] for n in sizes]), d, base="pq", base_options={}, seed=0)
    other.load_state_dict(mod.state_dict())  # the derived planes follow the loaded tier ids
    assert torch.equal(other.locate(ids)[1], slot) and "planes" not in mod.state_dict()


def test_popcount64_counts_every_bit_pattern() -> None:
    from compbench.methods.tiered import popcount64

    x = torch.randint(-(2**63), 2**63 - 1, (2000,), generator=torch.Generator().manual_seed(0), dtype=torch.long)
    x[:4] = torch.tensor([-1, 0, -(2**63), 2**63 - 1])
    assert popcount64(x).tolist() == [bin(int(i) & (2**64 - 1)).count("1") for i in x]


def test_tiered_configure_records_the_corpus() -> None:
    cfg = get_method("tiered").configure(MINILM_V, MINILM_D, _budget("40x"))
    freq = cfg["frequencies"]
    assert freq["kind"] == "corpus" and len(freq["sha256"]) == 64 and freq["source"].endswith(".parquet")
    assert cfg["seen_rows"] + cfg["shared_rows"] == MINILM_V and cfg["shared_rows"] > 0
    tops = sorted({c["top_rows"] for c in cfg["candidates"]})
    assert tops == [1278, 2201, 3895]  # the fewest rows covering 80%, 85%, 90% of the corpus tokens
    for c in cfg["candidates"]:
        assert sum(t["budget"] for t in c["tiers"]) + cfg["map_bytes"] + 24 + 4 * MINILM_D == _budget("40x")
    with pytest.raises(UsageError, match="row-order"):
        get_method("tiered", frequencies="corpus").configure(V, D, 10**9)


def test_tiered_search_fits_budget_and_round_trips(tiny_table) -> None:
    budget = _budget("4x", V, D)
    cfg, mod = _compress("tiered", tiny_table, budget=budget)
    assert cfg["frequencies"]["kind"] == "row-order" and cfg["shared_rows"] == 0
    assert stored_bytes(mod) <= budget
    names = set(stored_bytes_breakdown(mod))
    assert {"tier_ids", "rank_dir", "plan"} <= names and any(n.startswith("tiers.1.") for n in names)
    plan = mod.plan.tolist()
    assert plan == mod.fitted["tiers"] and sum(r for r, _, _ in plan) == V
    # the score the search maximised: the row cosine weighted by count^0.5, count ~ 1 / (row + 1) here
    cos = torch.nn.functional.cosine_similarity(mod.materialize(), tiny_table).double()
    w = 1.0 / torch.arange(1, V + 1, dtype=torch.float64).sqrt()
    assert float((cos * w).sum() / w.sum()) == pytest.approx(mod.fitted["score"], abs=2e-6)
    assert plan[0][0] == 86  # the fewest head rows covering 80% of the Zipf mass of 300 rows
    # a rebuild from other data, and one whose search could only choose another plan: both load the state_dict
    _round_trip(mod, get_method("tiered").compress(_other(tiny_table), cfg, seed=0))
    chosen = (mod.fitted["top_rows"], mod.fitted["share"])
    rest = [c for c in cfg["candidates"] if (c["top_rows"], c["share"]) != chosen]
    other = get_method("tiered").compress(_other(tiny_table), {**cfg, "candidates": rest[:1]}, seed=0)
    assert not torch.equal(other.plan, mod.plan)
    _round_trip(mod, other)
    assert torch.equal(other.plan, mod.plan)
    with pytest.raises(UsageError, match="plain posthoc"):
        get_method("tiered", base="tiered").configure(V, D, budget)



def test_tiered_search_keeps_only_the_best_candidates_modules(tiny_table, monkeypatch) -> None:
    """Issue 23 (memory): the search drops every scored tier module but the best candidate's, so the fit's memory
    does not grow with the number of fits; the result is the same module as a search that keeps them all."""
    import gc
    import weakref

    from compbench.methods import tiered

    budget = _budget("4x", V, D)
    cfg, reference = _compress("tiered", tiny_table, budget=budget)
    alive: list[weakref.ref] = []
    peak = [0]
    real = tiered._tier_method

    def counting(base, base_options, nbits):
        m = real(base, base_options, nbits)
        compress = m.compress

        def tracked(table, config, *, seed):
            gc.collect()
            peak[0] = max(peak[0], sum(r() is not None for r in alive))
            out = compress(table, config, seed=seed)
            alive.append(weakref.ref(out))
            return out

        m.compress = tracked
        return m

    monkeypatch.setattr(tiered, "_tier_method", counting)
    mod = get_method("tiered").compress(tiny_table, cfg, seed=0)
    fits = mod.fitted["fits"]
    variants = max(len(t["nbits_variants"]) for c in cfg["candidates"] for t in c["tiers"])
    assert fits > 2 * variants + 2  # enough fits that keeping them all would break the bound below
    assert peak[0] <= 2 * variants + 2  # the best candidate's 2 tiers + the current candidate's tier variants
    assert torch.equal(mod.plan, reference.plan)
    assert torch.equal(mod.materialize(), reference.materialize())

# -- tuning spaces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pca", "rabitq", "tiered", "pca+quant"])
def test_tuning_spaces_are_small_and_configurable(name: str) -> None:
    method = composed_method(name) if "+" in name else get_method(name)
    space = method.tuning_space(MINILM_V, MINILM_D, _budget("10x"))
    assert space[0] == {} and 1 < len(space) <= 12
    for cand in space:
        opts = {**method.options, **cand}
        m = composed_method(name, **opts) if "+" in name else get_method(name, **opts)
        m.configure(MINILM_V, MINILM_D, _budget("10x"))


# -- mde-posthoc -------------------------------------------------------------------------------------
def test_mde_posthoc_bytes_layout_and_block_optimality(tiny_table) -> None:
    """Row-order frequencies for a 300-row table: geometric blocks, power-rule widths from the budget, every
    narrower block the best rank-d_i factors of its rows (Eckart-Young), bytes = mde_bytes."""
    from compbench.methods.mde import mde_bytes
    from compbench.methods.vldb_common import geometric_block_sizes

    budget = V * D * 4 // 8
    cfg, mod = _compress("mde-posthoc", tiny_table, budget, blocks=4)
    assert cfg["sizes"] == geometric_block_sizes(V, 4) and cfg["frequencies"]["kind"] == "row-order"
    dims = cfg["dims"]
    assert dims == sorted(dims, reverse=True) and dims[0] > dims[-1]  # the head (first rows) is widest
    assert stored_bytes(mod) == mde_bytes(V, D, cfg["sizes"], dims) <= budget
    out = mod.materialize()
    start = 0
    for n, k in zip(cfg["sizes"], dims):  # row order: block b holds rows start..start+n-1
        rows = tiny_table[start:start + n].double()
        s = torch.linalg.svdvals(rows)
        err = (out[start:start + n].double() - rows).square().sum()
        assert torch.isclose(err, s[k:].square().sum(), rtol=1e-4, atol=1e-9) if k < D else err < 1e-12
        start += n


def test_mde_posthoc_uses_corpus_counts_on_minilm_shape() -> None:
    from compbench.methods.vldb_common import token_counts

    cfg = get_method("mde-posthoc").configure(MINILM_V, MINILM_D, _budget("40x"))
    assert cfg["frequencies"]["kind"] == "corpus" and cfg["frequencies"]["sha256"]
    from compbench.methods.mde_posthoc import layout

    block_of, _, _, _ = layout(MINILM_V, 8)
    counts = token_counts(MINILM_V)
    assert counts[block_of == 0].min() >= counts[block_of == 7].max()  # head block = the most frequent tokens
    assert len(get_method("mde-posthoc").tuning_space(MINILM_V, MINILM_D, _budget("40x"))) <= 12


@pytest.mark.parametrize("nbits", [3, 5, 6, 7, 9, 10, 12, 13, 16])
def test_unpack_codes_of_any_width_equals_the_bitstring(nbits: int) -> None:
    """The vectorised unpack (three byte gathers and a shift) reads faiss' little-endian bitstring exactly as a
    bit-by-bit expansion does, for every width that is not 1, 2, 4 or 8 (tiered's hot tier uses 5 bits)."""
    from compbench.methods.pq import unpack_codes

    g = torch.Generator().manual_seed(nbits)
    for m in (1, 3, 17, 192):
        packed = torch.randint(0, 256, (40, (m * nbits + 7) // 8), generator=g, dtype=torch.uint8)
        bits = ((packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(40, -1)[:, : m * nbits]
        want = (bits.reshape(40, m, nbits).long() << torch.arange(nbits)).sum(-1)
        assert torch.equal(unpack_codes(packed, m, nbits), want)
        assert torch.equal(unpack_codes(packed[7], m, nbits), want[7])
