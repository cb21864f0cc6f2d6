"""Validation data of the posthoc classification tasks (issue 20): the train track's carve, never a test item."""

from __future__ import annotations

import contextlib
import zlib

import numpy as np
import pytest
import torch

from compbench.datasets import load_split
from compbench.tasks import get_task
from compbench.tasks.posthoc import PosthocContext, validation_carve


class _Encoder:
    """A stand-in encoder: a fixed pseudo-random 8-d vector per text; remembers what it encoded."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @contextlib.contextmanager
    def swapped(self, table: torch.Tensor):
        yield self

    def encode(self, texts, batch_size: int) -> np.ndarray:
        texts = [str(t) for t in texts]
        self.seen.extend(texts)
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(8) for t in texts])


def _run(task) -> tuple[dict[str, float], set[str]]:
    enc = _Encoder()
    t = torch.zeros(2, 2)
    out = task.evaluate(PosthocContext(encoder=enc, table=t, dense_table=t))
    return out, set(enc.seen)


@pytest.mark.parametrize("name", ["trec", "cr"])
def test_validation_never_reads_a_test_item(name: str) -> None:
    task = get_task("posthoc", name)
    val_task = task.validation()
    assert val_task.card.name == f"{name}-validation" and val_task.split == "validation"
    _, val_seen = _run(val_task)
    out, test_seen = _run(task)
    if name == "trec":  # train -> test: validation encodes train texts only, none of the test split
        test_texts = {str(t) for t in load_split("trec", "test")["text"]}
        assert not val_seen & (test_texts - {str(t) for t in load_split("trec", "train")["text"]})
        y = np.asarray(load_split("trec", "train")["label"])
        rest, val = validation_carve(y)
        assert len(val) == round(0.1 * len(y)) or len(val) <= 2000
    else:  # CV: the reported CV and the validation CV use disjoint items (texts in both are duplicates in CR)
        from collections import Counter

        texts = Counter(str(t) for t in load_split("cr", "all")["text"])
        assert val_seen & test_seen <= {t for t, c in texts.items() if c > 1}
        y = np.asarray(load_split("cr", "all")["label"])
        rest, val = validation_carve(y)
        assert out["n_items"] == len(rest) and len(rest) + len(val) == len(y)
        assert task.card.version == 2


def test_the_carve_is_the_train_tracks() -> None:
    from compbench.tasks.train import SPLIT_SEED, stratified_carve

    y = np.asarray(load_split("trec", "train")["label"])
    a = validation_carve(y)
    b = stratified_carve(y, 0.1, SPLIT_SEED, 2000)
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
