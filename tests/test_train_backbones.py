"""Train-track backbones (shapes, masking) and train-task splits (deterministic, disjoint, documented sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compbench.errors import UsageError
from compbench.methods.method_base import DenseEmbedding
from compbench.models.classifier import BackboneConfig, build_classifier, masked_mean, sinusoidal_positions
from compbench.tasks import get_task, list_tasks
from compbench.tasks.train import TrainTask, seeded_subset, stratified_carve

V, D, C = 50, 16, 3


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    emb = DenseEmbedding(torch.randn(V, D, generator=torch.Generator().manual_seed(1)), trainable=True)
    return build_classifier(emb, C, BackboneConfig(d_model=D, max_len=12, **kw)).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, V, (4, 9), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([9, 5, 2, 7])
    mask = torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)
    return ids.masked_fill(~mask, 0), mask


CONFIGS = [
    {"kind": "bag"},
    {"kind": "transformer"},
    {"kind": "transformer", "positions": "sinusoidal", "pooling": "attention", "layers": 2},
    {"kind": "transformer", "pooling": "attention", "heads": 2, "ffn": 24},
]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_forward_shape_and_padding_invariance(kw) -> None:
    model = _model(**kw)
    ids, mask = _batch()
    with torch.no_grad():
        out = model(ids, mask)
        assert out.shape == (4, C) and torch.isfinite(out).all()
        # whatever sits under the padding does not change the logits ...
        noisy = torch.where(mask, ids, torch.randint(1, V, ids.shape, generator=torch.Generator().manual_seed(3)))
        torch.testing.assert_close(model(noisy, mask), out, atol=1e-5, rtol=1e-5)
        # ... nor does extra padding at the end
        ids2 = torch.cat([ids, torch.zeros(4, 3, dtype=torch.long)], 1)
        mask2 = torch.cat([mask, torch.zeros(4, 3, dtype=torch.bool)], 1)
        torch.testing.assert_close(model(ids2, mask2), out, atol=1e-5, rtol=1e-5)
        # and each row is classified on its own
        torch.testing.assert_close(model(ids[1:2], mask[1:2]), out[1:2], atol=1e-5, rtol=1e-5)


def test_bag_is_masked_mean_then_linear() -> None:
    model = _model(kind="bag")
    ids, mask = _batch()
    with torch.no_grad():
        manual = model.out(masked_mean(model.embedding(ids), mask))
        torch.testing.assert_close(model(ids, mask), manual)
        row = model.embedding(ids[2, :2]).mean(0)
        torch.testing.assert_close(masked_mean(model.embedding(ids), mask)[2], row)


def test_backbone_params_and_gradients_reach_the_embedding() -> None:
    model = _model(kind="transformer").train()
    ids, mask = _batch()
    model(ids, mask).sum().backward()
    grad = model.embedding.weight.grad
    used = torch.unique(ids[mask])
    assert grad[used].abs().sum(1).gt(0).all()
    unused = torch.tensor(sorted(set(range(V)) - set(ids.flatten().tolist())))
    assert grad[unused].abs().sum() == 0


def test_sinusoids_known_values() -> None:
    pe = sinusoidal_positions(4, 6)
    assert pe.shape == (4, 6)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    assert pe[1, 0] == pytest.approx(np.sin(1.0)) and pe[1, 1] == pytest.approx(np.cos(1.0))
    assert sinusoidal_positions(3, 5).shape == (3, 5)


@pytest.mark.parametrize("kw,match", [
    ({"kind": "cnn"}, "unknown backbone"),
    ({"heads": 3}, "divide d_model"),
    ({"pooling": "max"}, "unknown pooling"),
    ({"positions": "rope"}, "unknown positions"),
    ({"dropout": 1.0}, "dropout"),
])
def test_backbone_config_validation(kw, match) -> None:
    with pytest.raises(UsageError, match=match):
        BackboneConfig(d_model=16, **kw)


def test_too_long_input_and_width_mismatch_are_clear_errors() -> None:
    model = _model()
    with pytest.raises(UsageError, match="max_len"):
        model(torch.ones(1, 13, dtype=torch.long), torch.ones(1, 13, dtype=torch.bool))
    emb = DenseEmbedding(torch.zeros(V, 8))
    with pytest.raises(UsageError, match="d_model=16"):
        build_classifier(emb, C, BackboneConfig(d_model=16))


# -- tasks and splits --------------------------------------------------------------------------


def test_train_tasks_registered_with_cards() -> None:
    names = list_tasks("train")
    assert set(names) >= {"sst2", "trec", "imdb", "20newsgroups", "mr", "subj", "ag_news_test8020"}
    assert "ag_news" not in names  # never mistaken for the 120k-train paper setting
    for n in names:
        t = get_task("train", n)
        assert isinstance(t, TrainTask)
        c = t.card
        assert c.track == "train" and c.metric == "accuracy" and c.higher_is_better and c.version >= 1
        assert "AdamW" in c.protocol and "split" in c.protocol
    assert "NOT the paper" in get_task("train", "ag_news_test8020").card.protocol


def test_stratified_carve() -> None:
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    rest, carved = stratified_carve(y, 0.1, seed=0)
    assert sorted(np.bincount(y[carved]).tolist()) == [2, 3, 5]
    assert len(np.intersect1d(rest, carved)) == 0 and len(rest) + len(carved) == 100
    again = stratified_carve(y, 0.1, seed=0)
    assert np.array_equal(again[1], carved)
    _, capped = stratified_carve(y, 0.5, seed=0, cap=10)
    assert len(capped) == 10
    sub = seeded_subset(np.arange(100), 7)
    assert len(sub) == 7 and np.array_equal(sub, seeded_subset(np.arange(100), 7))
    assert np.array_equal(seeded_subset(np.arange(5), 0), np.arange(5))


@pytest.mark.parametrize("name,sizes", [
    ("trec", (4906, 546, 500)),
    ("mr", (8636, 960, 1066)),
    ("ag_news_test8020", (5472, 608, 1520)),
])
def test_task_splits_are_fixed_and_disjoint(name, sizes) -> None:
    task = get_task("train", name)
    parts = task.splits(task.recipe)
    assert tuple(len(parts[k]) for k in ("train", "val", "test")) == sizes
    same_source = [p for p in parts.values() if p.source == parts["train"].source]
    for i, a in enumerate(same_source):
        for b in same_source[i + 1:]:
            assert len(np.intersect1d(a.indices, b.indices)) == 0
    again = task.splits(task.recipe)
    assert all(np.array_equal(parts[k].indices, again[k].indices) for k in parts)
    limited = task.splits(task.recipe.with_(max_train_samples=64, max_eval_samples=32))
    assert (len(limited["train"]), len(limited["val"]), len(limited["test"])) == (64, 32, 32)
    assert np.isin(limited["train"].indices, parts["train"].indices).all()
