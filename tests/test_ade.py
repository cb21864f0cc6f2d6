"""ADE: stage-1 distillation, the >= 1 anchor rule, byte accounting, configure at 10x/40x/100x,
GPE positions, VP == naive two-stage lookup, and both classifier variants training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compbench.bench.cell.accounting import count_params, stored_bytes
from compbench.bench.cell.budget import Budget, reference_bytes
from compbench.errors import TrackError, UnattainableBudgetError, UsageError
from compbench.methods import get_method
from compbench.methods.ade import choose, distill, nn_omp, threshold
from compbench.methods.ade_model import (
    ADEClassifier,
    ADEEmbedding,
    CSRAnchors,
    ade_stored_bytes,
    csr_stored_bytes,
    grouped_positions,
    sat_params,
)

MINILM_V, MINILM_D = 30522, 384
FAST = {"kmeans_iters": 4, "mod_iters": 1, "epochs": 1}


def _random_emb(v: int = 50, d: int = 16, k: int = 12, s: int = 4, seed: int = 0, adt=torch.float16) -> ADEEmbedding:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, s + 1, (v,), generator=g)
    ids = torch.stack([torch.randperm(k, generator=g)[:s] for _ in range(v)])
    w = torch.rand(v, s, generator=g) + 0.05
    valid = torch.arange(s) < counts[:, None]
    return ADEEmbedding(torch.randn(k, d, generator=g).to(adt), torch.where(valid, ids, 0), torch.where(valid, w, 0.0),
                        counts)


# ------------------------------------------------------------------------------------------ stage 1


def test_reconstruction_improves_over_training(tiny_table: torch.Tensor) -> None:
    res = distill(tiny_table, 24, 4, seed=0, kmeans_iters=5, mod_iters=2, epochs=8, lr=5e-3, batch_size=100,
                  anchor_dtype=torch.float32)
    cos = {h["phase"]: h["cos"] for h in res.history if "cos" in h}
    assert cos["omp1"] > cos["omp0"]  # the MOD anchor update helps
    assert cos["adam"] >= cos["omp2"] - 1e-6  # Adam on 1 - cos does not hurt
    assert cos["adam"] > cos["omp0"] + 0.01
    assert res.history[-1]["cos"] > 0.8  # 4 of 24 non-negative anchors fit a rank-12 table well
    assert (res.slot_weights >= 0).all()
    # calibration restores row norms (least-squares scale keeps the cosine)
    rec = (res.slot_weights.unsqueeze(-1) * res.anchors.to(torch.float16).float()[res.slot_ids]).sum(1)
    ratio = rec.norm(dim=1) / tiny_table.norm(dim=1)
    assert 0.7 < float(ratio.median()) <= 1.0 + 1e-3


def test_nn_omp_nonnegative_and_exact_for_a_single_anchor() -> None:
    a = F.normalize(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    x = 2.5 * a[[3, 7]]  # each row is a positive multiple of one anchor
    idx, w = nn_omp(x, a, 3)
    assert idx[:, 0].tolist() == [3, 7]
    torch.testing.assert_close(w[:, 0], torch.full((2,), 2.5), atol=1e-4, rtol=0)
    assert (w >= 0).all()


def test_every_token_keeps_at_least_one_anchor() -> None:
    w = torch.tensor([[0.5, 0.002, 0.0], [0.001, 0.004, 0.0], [0.0, 0.0, 0.0]])
    idx = torch.tensor([[4, 1, 2], [0, 3, 1], [2, 5, 6]])
    ids, ws, counts = threshold(idx, w, tau=0.01)
    assert counts.tolist() == [1, 1, 1]
    assert ids[:, 0].tolist() == [4, 3, 2]  # the largest weight survives
    assert ws[0, 0] == 0.5 and ws[1, 0] == pytest.approx(0.01) and ws[2, 0] == pytest.approx(0.01)
    assert (ws[:, 1:] == 0).all() and (ids[:, 1:] == 0).all()


def test_distill_token_opposite_to_every_anchor_keeps_one() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.rand(40, 6, generator=g) + 0.1  # all-positive rows: k-means anchors are all positive
    table[0] = -table[1:].mean(0)  # negatively correlated with every anchor: NNLS gives all zeros
    res = distill(table, 4, 2, seed=0, kmeans_iters=3, mod_iters=0, epochs=0, anchor_dtype=torch.float32)
    assert int(res.counts.min()) >= 1
    assert float(res.slot_weights[0, 0]) > 0
    emb = ADEEmbedding(res.anchors, res.slot_ids, res.slot_weights, res.counts)
    assert torch.isfinite(emb.materialize()).all()


def test_distill_errors() -> None:
    t = torch.randn(20, 4)
    with pytest.raises(UsageError, match="K <= V"):
        distill(t, 30, 2, seed=0)
    with pytest.raises(UsageError, match="S <= K"):
        distill(t, 3, 5, seed=0)


# ------------------------------------------------------------------------------------------- bytes


def test_byte_count_for_known_sizes() -> None:
    # K=12 <= 256: uint8 ids; S=4: uint8 counts; fp16 anchors and weights
    emb = _random_emb(v=50, d=16, k=12, s=4)
    assert stored_bytes(emb) == 12 * 16 * 2 + 50 * 4 * (1 + 2) + 50 == ade_stored_bytes(50, 16, 12, 4)
    assert emb.slot_ids.dtype == torch.uint8 and emb.slot_weights.dtype == torch.float16
    assert emb.counts.dtype == torch.uint8
    # K=500: int16 ids; fp32 anchors
    assert ade_stored_bytes(30522, 384, 500, 8, torch.float32) == 500 * 384 * 4 + 30522 * 8 * 4 + 30522
    # the paper's table: 128,100 x 768 at K=500 with ~7.5 int32+fp32 pairs per word is ~9.28 MB
    # CSR form: anchors + nnz (id, weight) + (V+1) int32 offsets
    csr = emb.to_csr()
    nnz = int(emb.counts.long().sum())
    assert stored_bytes(csr) == csr_stored_bytes(50, 16, 12, nnz) == 12 * 16 * 2 + nnz * 3 + 51 * 4


@pytest.mark.parametrize(("ratio", "k", "s"), [("10x", 700, 33), ("40x", 256, 10), ("100x", 208, 3)])
def test_configure_respects_minilm_budgets(ratio: str, k: int, s: int) -> None:
    allowed = Budget.parse(ratio).resolve(reference_bytes(MINILM_V, MINILM_D))
    cfg = get_method("ade").configure(MINILM_V, MINILM_D, allowed)
    assert (cfg["anchors"], cfg["max_active"]) == (k, s)
    assert cfg["expected_bytes"] == ade_stored_bytes(MINILM_V, MINILM_D, k, s) <= allowed
    # the train sizing stores fine-tuned anchors in fp32 and also fits
    tr = cfg["train"]
    assert tr["anchor_dtype"] == "float32" and tr["train_anchors"] is True
    assert ade_stored_bytes(MINILM_V, MINILM_D, tr["anchors"], tr["max_active"], torch.float32) <= allowed
    # one more slot would not fit
    assert ade_stored_bytes(MINILM_V, MINILM_D, k, s + 1) > allowed or s == 64


def test_configure_forced_and_unattainable() -> None:
    allowed = Budget.parse("40x").resolve(reference_bytes(MINILM_V, MINILM_D))
    cfg = get_method("ade", anchors=500).configure(MINILM_V, MINILM_D, allowed)
    assert cfg["anchors"] == 500 and cfg["id_dtype"] == "int16" and cfg["max_active"] == 6
    with pytest.raises(UnattainableBudgetError, match="smallest budget"):
        get_method("ade", anchors=500, max_active=8).configure(MINILM_V, MINILM_D, allowed)
    with pytest.raises(UnattainableBudgetError) as exc:
        get_method("ade").configure(MINILM_V, MINILM_D, allowed // 10)
    get_method("ade").configure(MINILM_V, MINILM_D, exc.value.min_bytes)
    with pytest.raises(UsageError, match="anchor_dtype"):
        get_method("ade", anchor_dtype="int8").configure(MINILM_V, MINILM_D, allowed)
    assert choose(10, 4, 10, torch.float16) is None


def test_ade_merged_is_train_only() -> None:
    with pytest.raises(TrackError, match="supports"):
        get_method("ade-merged").require("posthoc")


# -------------------------------------------------------------------------------- lookup and GPE


def test_gpe_positions() -> None:
    assert grouped_positions(torch.tensor([3, 1, 4])).tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    # the padded slot layout gives the same positions on its valid slots
    emb = _random_emb()
    ids = torch.tensor([3, 17, 5])
    _, valid = emb.expand(ids)
    slot_pos = torch.arange(3).unsqueeze(1).expand_as(valid)[valid]
    assert slot_pos.tolist() == grouped_positions(emb.counts[ids]).tolist()


@pytest.mark.parametrize("adt", [torch.float16, torch.float32])
def test_vp_lookup_equals_naive_two_stage_exactly(adt: torch.dtype) -> None:
    emb = _random_emb(v=200, d=32, k=40, s=6, adt=adt)
    csr = emb.to_csr()
    assert isinstance(csr, CSRAnchors)
    ids = torch.randint(0, 200, (7, 13), generator=torch.Generator().manual_seed(1))
    vp, naive = emb(ids), csr(ids)
    assert vp.shape == (7, 13, 32)
    assert torch.equal(vp, naive)
    # and both equal the definition sum_j beta_ij A_j
    ref = torch.zeros(7, 13, 32)
    for b in range(7):
        for t in range(13):
            i = int(ids[b, t])
            for j in range(int(emb.counts[i])):
                ref[b, t] += float(emb.slot_weights[i, j]) * emb.anchors[int(emb.slot_ids[i, j])].float()
    torch.testing.assert_close(vp, ref, rtol=1e-5, atol=1e-6)
    x, valid = emb.expand(ids)
    torch.testing.assert_close(x.sum(-2), vp, rtol=1e-5, atol=1e-6)
    assert (x[~valid] == 0).all()


def test_lookup_variants_time_the_naive_path_in_the_same_rotation() -> None:
    """ADE declares its naive two-stage lookup as a variant; the harness times it with VP and dense on the same
    ids (what ``compbench ade-lookup`` reports) and checks the outputs are bitwise equal."""
    from compbench.bench.measure.core import compare_lookup
    from compbench.methods import get_method

    emb = _random_emb(v=300, d=16, k=20, s=4)
    variants = get_method("ade").lookup_variants(emb)
    assert set(variants) == {"naive"}
    res = compare_lookup(emb, torch.nn.Embedding(300, 16), num_embeddings=300, device=torch.device("cpu"), batch=4,
                         seq=8, warmup=1, iters=3, variants=variants)
    naive = res["variants"]["naive"]
    assert naive["equal_to_candidate"] is True
    assert res["candidate"]["n"] == res["dense"]["n"] == naive["n"] == 3
    assert naive["ratio"] > 0 and naive["ratio_to_candidate"] > 0


# -------------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize("variant", ["anchor", "merged"])
def test_classifier_trains_on_a_tiny_batch(variant: str) -> None:
    torch.manual_seed(0)
    emb = _random_emb(v=60, d=32, k=16, s=3, adt=torch.float32)
    emb.anchors.requires_grad_(True)
    model = ADEClassifier(emb, 3, variant=variant, heads=8, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 60, (12, 7), generator=g)
    mask = torch.ones(12, 7, dtype=torch.bool)
    mask[::3, 4:] = False
    y = torch.randint(0, 3, (12,), generator=g)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(ids, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert emb.anchors.grad is not None  # gradients reach the anchors
    # padding does not leak: changing padded ids leaves the logits unchanged
    model.eval()
    ids2 = ids.clone()
    ids2[~mask] = (ids2[~mask] + 1) % 60
    torch.testing.assert_close(model(ids, mask), model(ids2, mask))


def test_anchor_variant_words_sum_to_layernorm_and_ignore_padding_slots() -> None:
    emb = _random_emb(v=30, d=16, k=10, s=3, adt=torch.float32)
    model = ADEClassifier(emb, 2, variant="anchor", heads=8, dropout=0.0).eval()
    ids = torch.randint(0, 30, (2, 5), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 5, dtype=torch.bool)
    # the same dictionary with 2 extra (empty) slots per token gives the same logits
    wide = ADEEmbedding(emb.anchors.detach(), torch.cat([emb.slot_ids.long(), torch.zeros(30, 2, dtype=torch.long)], 1),
                        torch.cat([emb.slot_weights.float(), torch.zeros(30, 2)], 1), emb.counts)
    model2 = ADEClassifier(wide, 2, variant="anchor", heads=8, dropout=0.0).eval()
    head = {k: v for k, v in model.state_dict().items() if not k.startswith("embedding.")}
    model2.load_state_dict(head, strict=False)
    torch.testing.assert_close(model(ids, mask), model2(ids, mask), rtol=1e-5, atol=1e-5)
    # a word's anchor inputs sum to LayerNorm of its word vector (what Algorithm 1 feeds to SAT)
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.1, 0.1)
        x, (bi, li, si) = model.anchor_inputs(ids, mask)
        assert bi.numel() == int(emb.counts[ids].sum())  # exactly the active anchors of the real words
        words = torch.zeros(2, 5, 16).index_put((bi, li), x, accumulate=True)
        torch.testing.assert_close(words, model.norm(emb(ids)), rtol=1e-4, atol=1e-5)


def test_anchor_variant_packing_equals_padded_attention() -> None:
    """SAT over the real anchors only (variable length) gives the same word states as SAT over all L x S padded slots."""
    torch.manual_seed(1)
    emb = _random_emb(v=40, d=16, k=12, s=4, adt=torch.float32)  # 1..4 active anchors per token
    model = ADEClassifier(emb, 2, variant="anchor", heads=8, dropout=0.0).eval()
    ids = torch.randint(0, 40, (3, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 1:] = False
    with torch.no_grad():
        x, (bi, li, si) = model.anchor_inputs(ids, mask)
        b, length, s, d = 3, 6, emb.slots, 16
        valid = torch.zeros(b, length, s, dtype=torch.bool).index_put((bi, li, si), torch.tensor(True))
        x = torch.zeros(b, length, s, d).index_put((bi, li, si), x + model._pe(length)[li])
        ref = model.sat(x.reshape(b, length * s, d), valid.reshape(b, length * s))  # nn.MultiheadAttention, padded
        ref = (ref.reshape(b, length, s, d) * valid.unsqueeze(-1)).sum(2)
        torch.testing.assert_close(model.word_states(ids, mask), ref, rtol=1e-5, atol=1e-5)
        # attention in length-sorted groups of 1 and 2 sequences (each padded to its own longest) is the same
        x = x.reshape(b, length * s, d)[valid.reshape(b, length * s)]
        n = valid.sum((1, 2))
        pos = torch.cat([torch.arange(int(c)) for c in n])
        full = model.sat.forward_packed(x, bi, pos, b)
        for group_rows in (1, 2):
            torch.testing.assert_close(model.sat.forward_packed(x, bi, pos, b, group_rows=group_rows), full,
                                       rtol=1e-5, atol=1e-5)


def test_trainable_parameter_counts() -> None:
    assert sat_params(384) == 591_360 and sat_params(768) == 2_362_368
    emb = _random_emb(v=20, d=384, k=16, s=2)
    for variant in ("anchor", "merged"):
        model = ADEClassifier(emb, 4, variant=variant)
        heads = model.head_params()
        assert heads == {"sat": 591_360, "layernorm": 768, "pooler": 385, "classifier": 1_540}
        assert count_params(model).trainable == sum(heads.values())  # fp16 anchors are frozen


def test_method_build_and_custom_classifier(tiny_table: torch.Tensor) -> None:
    allowed = Budget.parse("4x").resolve(reference_bytes(300, 48))
    for name, variant in (("ade", "anchor"), ("ade-merged", "merged")):
        m = get_method(name, **FAST)
        cfg = m.configure(300, 48, allowed)
        emb = m.build(300, 48, cfg, seed=0, init_table=tiny_table)
        assert stored_bytes(emb) == cfg["train"]["expected_bytes"] <= allowed
        assert emb.anchors.requires_grad and emb.anchors.dtype == torch.float32
        clf = m.custom_classifier(emb, 5, cfg, seed=0)
        assert isinstance(clf, ADEClassifier) and clf.variant == variant
        out = clf(torch.tensor([[1, 2, 3]]), torch.tensor([[True, True, False]]))
        assert out.shape == (1, 5)
        with pytest.raises(UsageError, match="init_table"):
            m.build(300, 48, cfg, seed=0)
    frozen = get_method("ade", train_anchors="false", **FAST)
    cfg = frozen.configure(300, 48, allowed)
    emb = frozen.build(300, 48, cfg, seed=0, init_table=tiny_table)
    assert not emb.anchors.requires_grad and emb.anchors.dtype == torch.float16
    assert cfg["train"]["train_anchors"] is False


def test_posthoc_compress_is_deterministic_and_in_budget(tiny_table: torch.Tensor) -> None:
    allowed = Budget.parse("4x").resolve(reference_bytes(300, 48))
    m = get_method("ade", **FAST)
    cfg = m.configure(300, 48, allowed)
    a = m.compress(tiny_table, cfg, seed=0)
    b = m.compress(tiny_table, cfg, seed=0)
    assert stored_bytes(a) == cfg["expected_bytes"] <= allowed
    assert torch.equal(a.materialize(), b.materialize())
    assert int(a.counts.min()) >= 1
    assert not any(p.requires_grad for p in a.parameters())


def test_block_wise_cosine_and_calibration_equal_the_whole_table_computation() -> None:
    """Issue 23 (memory): stage 1's checks and calibration run block by block; the numbers are the ones a whole-
    table reconstruction gives, bit for bit (rows are independent)."""
    from compbench.methods.ade import calibrate, reconstruct, row_cos

    g = torch.Generator().manual_seed(3)
    table = torch.randn(1000, 24, generator=g)
    anchors = F.normalize(torch.randn(40, 24, generator=g), dim=1)
    idx = torch.randint(0, 40, (1000, 5), generator=g)
    w = torch.rand(1000, 5, generator=g)
    full = F.cosine_similarity(reconstruct(idx, w, anchors, chunk=10**6), table, dim=1, eps=1e-12)
    assert torch.equal(row_cos(idx, w, anchors, table, chunk=37), full)
    assert torch.equal(calibrate(table, idx, w, anchors.half(), chunk=37),
                       calibrate(table, idx, w, anchors.half(), chunk=10**6))
