"""Trainable (train-track) methods: exact forward and byte count on known shapes, budgets at the
MiniLM vocabulary, determinism, gradient flow, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.budget import Budget, reference_bytes
from compbench.errors import TrackError, UnattainableBudgetError, UsageError
from compbench.methods import get_method
from compbench.methods.dhe import DHEEmbedding, dhe_bytes
from compbench.methods.fourier_mlp import FourierMLPEmbedding, fourier_features, mlp_bytes
from compbench.methods.hashing import MERSENNE_PRIME, HashedEmbedding
from compbench.methods.qr import QREmbedding
from compbench.methods.tt import TTEmbedding, col_shape, row_shape, tt_bytes

TRAIN_METHODS = ("lowrank", "hashing", "qr", "tt", "dhe", "fourier-mlp")
MINILM_V = 30522


def _build(name: str, v: int, d: int, budget: int, seed: int = 0, **options):
    m = get_method(name, **options)
    cfg = m.configure(v, d, budget)
    return cfg, m.build(v, d, cfg, seed=seed)


# ---------------------------------------------------------------- known shapes: bytes and forward


def test_lowrank_bytes_and_forward() -> None:
    cfg, mod = _build("lowrank", 100, 8, 4 * 3 * (100 + 8) + 7)
    assert cfg == {"rank": 3, "init": "fan_in"}
    assert stored_bytes(mod) == 4 * 3 * (100 + 8)
    ids = torch.tensor([[0, 5], [99, 42]])
    torch.testing.assert_close(mod(ids), mod.a[ids] @ mod.b)
    # rank is capped at d and the output std follows init_std under both inits
    for init in ("fan_in", "balanced"):
        cfg, mod = _build("lowrank", 1000, 16, 10**9, init=init)
        assert cfg["rank"] == 16
        assert 0.7 < float(mod.materialize().std()) * math.sqrt(16) < 1.4
    assert abs(mod.a.std().item() - mod.b.std().item()) < 0.05  # balanced: one scale for both factors


@pytest.mark.parametrize("signed", [False, True])
def test_hashing_bytes_and_forward(signed: bool) -> None:
    cfg, mod = _build("hashing", 100, 8, 10 * 8 * 4, signed=signed)
    assert cfg == {"buckets": 10, "num_hashes": 2, "signed": signed}
    assert isinstance(mod, HashedEmbedding)
    assert stored_bytes(mod) == 10 * 8 * 4  # hash parameters are non-persistent: 0 bytes
    assert set(mod.state_dict()) == {"weight"}
    a, b = mod.hash_a.tolist(), mod.hash_b.tolist()
    ids = [0, 1, 17, 99]
    out = mod(torch.tensor(ids))
    for row, i in zip(out, ids):
        expect = torch.zeros(8)
        for j in range(2):
            bucket = ((a[j] * i + b[j]) % MERSENNE_PRIME) % 10
            sign = 1.0
            if signed:
                sa, sb = mod.sign_a.tolist(), mod.sign_b.tolist()
                sign = 1.0 - 2.0 * (((sa[j] * i + sb[j]) % MERSENNE_PRIME) % 2)
            expect += sign * mod.weight[bucket]
        torch.testing.assert_close(row, expect)


def test_hashing_buckets_spread_and_capped() -> None:
    cfg, mod = _build("hashing", 5000, 4, 64 * 4 * 4, num_hashes=3)
    counts = torch.bincount(mod.buckets(torch.arange(5000)).reshape(-1), minlength=64)
    assert counts.min() > 0.5 * counts.float().mean()  # universal hashing spreads ids over all buckets
    cfg, _ = _build("hashing", 50, 4, 10**9)
    assert cfg["buckets"] == 50  # never more buckets than ids


@pytest.mark.parametrize("op", ["mult", "add", "concat"])
def test_qr_bytes_and_forward(op: str) -> None:
    d = 8
    dims = [4, 4] if op == "concat" else [d, d]
    budget = 4 * (10 * dims[0] + 10 * dims[1])
    cfg, mod = _build("qr", 100, d, budget, op=op, collisions=10)
    assert cfg["radices"] == [10, 10] and cfg["partitions"] == 2
    assert isinstance(mod, QREmbedding)
    assert stored_bytes(mod) == budget
    ids = torch.tensor([0, 9, 10, 57, 99])
    rem, quo = mod.tables[0][ids % 10], mod.tables[1][ids // 10]
    expect = {"mult": rem * quo, "add": rem + quo, "concat": torch.cat([rem, quo], -1)}[op]
    torch.testing.assert_close(mod(ids), expect)


def test_qr_picks_smallest_collisions_and_three_partitions_at_100x() -> None:
    d = 128
    budget = reference_bytes(MINILM_V, d) // 10
    cfg, mod = _build("qr", MINILM_V, d, budget)
    c = cfg["collisions"]
    assert cfg["radices"] == [c, math.ceil(MINILM_V / c)]
    assert 4 * d * (c + math.ceil(MINILM_V / c)) <= budget
    assert 4 * d * (c - 1 + math.ceil(MINILM_V / (c - 1))) > budget  # c is the smallest that fits
    cfg, mod = _build("qr", MINILM_V, d, reference_bytes(MINILM_V, d) // 100)
    assert cfg["partitions"] == 3  # two tables need >= ~2 sqrt(V) rows (~87x), so 100x needs a third
    m1, m2, m3 = cfg["radices"]
    ids = torch.arange(MINILM_V)
    digits = torch.stack(mod.digits(ids), -1)
    assert (digits[:, 0] == ids % m1).all() and (digits[:, 1] == (ids // m1) % m2).all()
    assert (digits[:, 2] == ids // (m1 * m2)).all() and int(digits[:, 2].max()) < m3
    assert torch.unique(digits, dim=0).shape[0] == MINILM_V  # complementary partitions: unique per id
    expect = mod.tables[0][digits[:, 0]] * mod.tables[1][digits[:, 1]] * mod.tables[2][digits[:, 2]]
    torch.testing.assert_close(mod(ids), expect)


def test_tt_bytes_and_forward_equals_full_product() -> None:
    assert row_shape(100) == [5, 4, 5] and col_shape(8) == [2, 2, 2]
    assert col_shape(128) == [8, 4, 4] and col_shape(384) == [8, 6, 8]
    assert row_shape(MINILM_V) == [32, 30, 32]
    budget = tt_bytes([5, 4, 5], [2, 2, 2], 3)
    assert budget == 4 * (5 * 2 * 3 + 4 * 2 * 9 + 5 * 2 * 3)
    cfg, mod = _build("tt", 100, 8, budget)
    assert cfg == {"rank": 3, "row_shape": [5, 4, 5], "col_shape": [2, 2, 2]}
    assert isinstance(mod, TTEmbedding)
    assert stored_bytes(mod) == budget
    # the explicit full TT-matrix, independent of the module's contraction order
    full = torch.einsum("iar,jrbs,ksc->ijkabc", mod.core1, mod.core2, mod.core3).reshape(5 * 4 * 5, 8)
    ids = torch.tensor([[0, 1, 2], [37, 99, 1]])
    torch.testing.assert_close(mod(ids), full[ids], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mod.materialize(), full[:100], rtol=1e-5, atol=1e-6)


def test_dhe_zero_table_bytes_and_encoding() -> None:
    k, h, layers, d = 16, 4, 2, 8
    need = dhe_bytes(k, h, layers, d, True)
    # Linear 16->4, BN(4), Linear 4->4, BN(4), Linear 4->8; BN = 4 fp32 vectors + int64 counter
    assert need == 4 * ((16 * 4 + 4) + (4 * 4 + 4) + (4 * 8 + 8)) + 2 * (4 * 4 * 4 + 8)
    cfg, mod = _build("dhe", 1000, d, need, num_hashes=k, layers=layers)
    assert cfg["width"] == h
    assert isinstance(mod, DHEEmbedding)
    assert stored_bytes(mod) == need
    assert all(key.startswith("mlp.") for key in mod.state_dict())  # no table, no hash parameters
    assert all(t.dim() == 0 or t.shape[0] != 1000 for t in mod.state_dict().values())
    ids = [0, 3, 999]
    enc = mod.encode(torch.tensor(ids))
    a, b = mod.hash_a.tolist(), mod.hash_b.tolist()
    for row, i in zip(enc, ids):
        expect = [2.0 * (((a[j] * i + b[j]) % MERSENNE_PRIME) % 1_000_000) / 999_999 - 1.0 for j in range(k)]
        torch.testing.assert_close(row, torch.tensor(expect), rtol=0, atol=1e-6)
    big = mod.encode(torch.arange(1000))
    assert big.min() >= -1 and big.max() <= 1 and abs(float(big.mean())) < 0.05
    mod.eval()
    torch.testing.assert_close(mod(torch.tensor(ids)), mod.mlp(enc))


def test_dhe_gaussian_batchnorm_edge_cases() -> None:
    cfg, mod = _build("dhe", 500, 8, 10**6, num_hashes=64, distribution="gaussian", activation="relu")
    enc = mod.encode(torch.arange(500))
    assert torch.isfinite(enc).all() and 0.8 < float(enc.std()) < 1.2
    mod.train()
    out = mod(torch.tensor([7, 7, 7]))  # one distinct id in train mode: BN falls back to running stats
    assert out.shape == (3, 8) and mod.training
    mod.materialize()
    assert mod.training  # materialize runs in eval mode and restores the mode
    with pytest.raises(UsageError, match="even"):
        get_method("dhe", num_hashes=63, distribution="gaussian").configure(500, 8, 10**6)


def test_fourier_features_formula_and_residual() -> None:
    v, d = 30522, 16
    ids = [0, 1, 2, 1000, 15261, 30521]
    t = fourier_features(torch.tensor(ids), d, v)
    for row, p in zip(t, ids):
        x = 2.0 * p / (v - 1) - 1.0
        expect = [(math.sin if i % 2 == 0 else math.cos)((i // 2 + 1) * math.pi * x) for i in range(d)]
        torch.testing.assert_close(row, torch.tensor(expect, dtype=torch.float32), rtol=0, atol=1e-6)
    # the official kernel's normalisation (max_seq_len - 1 = 127): x leaves [-1, 1], still exact
    t128 = fourier_features(torch.tensor(ids), d, 128)
    for row, p in zip(t128, ids):
        x = 2.0 * p / 127 - 1.0
        expect = [(math.sin if i % 2 == 0 else math.cos)((i // 2 + 1) * math.pi * x) for i in range(d)]
        torch.testing.assert_close(row, torch.tensor(expect, dtype=torch.float32), rtol=0, atol=1e-5)
    budget = mlp_bytes(d, 5, "geglu")
    assert budget == 4 * (3 * 5 * d + 2 * 5 + d)
    cfg, mod = _build("fourier-mlp", v, d, budget)
    assert cfg == {"mlp": "geglu", "norm_len": v, "width": 5}
    assert isinstance(mod, FourierMLPEmbedding)
    assert stored_bytes(mod) == budget  # the Fourier map costs nothing
    out = mod(torch.tensor(ids))
    torch.testing.assert_close(out, mod.mlp(t) + t)
    cfg, mod = _build("fourier-mlp", v, d, 10**9)
    assert cfg["width"] == 4 * d  # capped at the paper's x4 expansion
    cfg, mod = _build("fourier-mlp", v, d, 10**9, mlp="linear", norm_len=128)
    assert stored_bytes(mod) == 4 * (d * d + d) and cfg["norm_len"] == 128


def test_fourier_kernel_normalisation_is_a_mod_127_hash() -> None:
    # documented finding (docs/trainable-methods.md): with norm_len=128 the features, hence the embeddings,
    # depend only on p mod 127, so the whole vocabulary shares 127 distinct vectors; the paper's
    # normalisation keeps every id distinct
    v, d = 30522, 32
    ids = torch.tensor([5, 5 + 127, 5 + 127 * 200, 6])
    t128 = fourier_features(ids, d, 128)
    torch.testing.assert_close(t128[0], t128[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(t128[0], t128[2], rtol=0, atol=1e-5)
    assert float((t128[0] - t128[3]).abs().max()) > 0.1
    t = fourier_features(ids, d, v)
    assert float((t[0] - t[1]).abs().max()) > 1e-3


# ---------------------------------------------------------------- budgets at the MiniLM vocabulary


@pytest.mark.parametrize("d", [128, 384])
@pytest.mark.parametrize("name", TRAIN_METHODS)
def test_budget_respected_at_minilm_vocab(name: str, d: int) -> None:
    ref = reference_bytes(MINILM_V, d)
    for ratio in ("10x", "40x", "100x"):
        allowed = Budget.parse(ratio).resolve(ref)
        cfg, mod = _build(name, MINILM_V, d, allowed)
        nbytes = stored_bytes(mod)
        assert 0 < nbytes <= allowed, f"{name} {ratio} d={d}: {nbytes} > {allowed}"
        if name not in ("lowrank", "fourier-mlp", "qr"):  # these quantise coarsely or cap (see docs)
            assert nbytes > 0.85 * allowed, f"{name} {ratio} d={d} wastes budget: {nbytes} of {allowed}"
        with torch.no_grad():
            out = mod(torch.tensor([[0, 101, MINILM_V - 1]]))
        assert out.shape == (1, 3, d) and torch.isfinite(out).all()


# ---------------------------------------------------------------- determinism, init scale, gradients

SMALL = dict(v=400, d=16)
SMALL_OPTIONS = {"dhe": {"num_hashes": 64}}


def _small(name: str, seed: int):
    v, d = SMALL["v"], SMALL["d"]
    return _build(name, v, d, reference_bytes(v, d) // 4, seed=seed, **SMALL_OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", TRAIN_METHODS)
def test_determinism_and_init_scale(name: str) -> None:
    state = torch.random.get_rng_state()
    _, m1 = _small(name, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state), "build must not consume the global RNG"
    _, m2 = _small(name, seed=3)
    _, m3 = _small(name, seed=4)
    ids = torch.arange(SMALL["v"])
    with torch.no_grad():
        e1, e2, e3 = m1(ids), m2(ids), m3(ids)
    assert torch.equal(e1, e2)
    assert not torch.equal(e1, e3)
    std = float(e1.std())
    target = 1.0 if name == "fourier-mlp" else SMALL["d"] ** -0.5  # PETE: the Fourier residual (std ~0.7)
    assert 0.4 * target < std < 2.5 * target, f"{name}: output std {std}"


@pytest.mark.parametrize("name", TRAIN_METHODS)
def test_one_adamw_step_lowers_regression_loss(name: str) -> None:
    _, mod = _small(name, seed=0)
    mod.train()
    params = [p for p in mod.parameters()]
    assert params and all(p.requires_grad for p in params)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SMALL["v"], (8, 12), generator=g)
    target = torch.randn(8, 12, SMALL["d"], generator=g) * 0.3
    opt = torch.optim.AdamW(mod.parameters(), lr=1e-2, weight_decay=0.0)
    before = [p.detach().clone() for p in params]
    loss0 = nn.functional.mse_loss(mod(ids), target)
    loss0.backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        loss1 = nn.functional.mse_loss(mod(ids), target)
    assert loss1.item() < loss0.item(), f"{name}: {loss0.item()} -> {loss1.item()}"
    assert all(not torch.equal(p, q) for p, q in zip(params, before)), f"{name}: a parameter did not move"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", TRAIN_METHODS)
def test_train_only_and_unattainable(name: str) -> None:
    m = get_method(name)
    with pytest.raises(TrackError, match="supports: train"):
        m.compress(torch.zeros(10, 4), {}, seed=0)
    with pytest.raises(UnattainableBudgetError, match="smallest budget it can meet"):
        m.configure(MINILM_V, 128, 100)


@pytest.mark.parametrize(("name", "options", "match"), [
    ("qr", {"op": "max"}, "op"),
    ("lowrank", {"init": "xavier"}, "init"),
    ("qr", {"partitions": 1}, "partitions"),
    ("dhe", {"activation": "tanh"}, "activation"),
    ("dhe", {"distribution": "zipf"}, "distribution"),
    ("fourier-mlp", {"mlp": "kan"}, "mlp"),
    ("hashing", {"num_hashes": 0}, "num_hashes"),
    ("hashing", {"num_hashes": "two"}, "num_hashes"),
])
def test_bad_options_are_usage_errors(name: str, options: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        get_method(name, **options).configure(1000, 16, 10**6)


def test_forced_hyperparameters_must_fit() -> None:
    with pytest.raises(UnattainableBudgetError):
        get_method("tt", rank=500).configure(MINILM_V, 128, reference_bytes(MINILM_V, 128) // 10)
    with pytest.raises(UnattainableBudgetError):
        get_method("hashing", buckets=30000).configure(MINILM_V, 128, reference_bytes(MINILM_V, 128) // 10)
    assert get_method("tt", rank=8).configure(MINILM_V, 128, reference_bytes(MINILM_V, 128) // 10)["rank"] == 8
