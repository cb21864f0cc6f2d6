"""Uncertainty of a score: bootstrap intervals over the test items, paired comparisons, statistical ties.

A task that can say how each test item contributed to its main score hands the lifecycle an
:class:`Items`: the per-item predictions (``values``; one row per seed) and, for rank-correlation
metrics, the gold scores. The main score is a function of them (:func:`score_of`):

- ``mean``: the mean of the per-item values (accuracy from per-item correctness, mean row cosine from
  per-row cosines, analogy accuracy, recall per query);
- ``spearman``: Spearman's rank correlation between the gold scores and the per-item predictions
  (STS-B, WordSim-353, SimLex-999: the predictions are cosine similarities).

With several seeds the score is the mean over the seeds of the per-seed score.

**Intervals** (:func:`interval`): 95% percentile bootstrap, 1,000 resamples, seeded (default seed 0).
One seed: ``scipy.stats.bootstrap`` with ``paired=True`` over the items (gold and prediction resampled
together). Several seeds: a two-level bootstrap that combines seed variance and item resampling (each
resample draws the seeds with replacement, then the items with replacement, and averages the per-seed
scores); scipy has no two-level bootstrap, so it is written out with numpy here.

**Paired comparisons** (:func:`paired_difference`): two cells evaluated on the same test items are
compared by a paired bootstrap of the difference of their scores (the items resampled jointly for
both; each cell's seeds averaged); the difference is significant at 5% when its 95% interval excludes
0. Cells not significantly different from the best cell at a budget are *tied* with it.

**Retention** (:func:`ratio_interval`): the candidate's score over the dense reference's on the same
resampled items.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("mean", "spearman")
N_RESAMPLES = 1000
LEVEL = 0.95
METHOD_ONE_SEED = "percentile bootstrap over test items (scipy.stats.bootstrap, paired)"
METHOD_SEEDS = "two-level percentile bootstrap: seeds with replacement, then test items with replacement"


@dataclass
class Items:
    """Per-item outcomes of a cell on its test items: ``values[seed, item]`` (and ``gold[item]`` for spearman)."""

    kind: str
    values: np.ndarray  # [n_seeds, n_items] float
    gold: np.ndarray | None = None  # [n_items] float (spearman)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown item kind '{self.kind}' (kinds: {', '.join(KINDS)})")
        v = np.asarray(self.values, dtype=np.float64)
        self.values = v[None, :] if v.ndim == 1 else v
        if self.kind == "spearman":
            if self.gold is None:
                raise ValueError("spearman items need gold scores")
            self.gold = np.asarray(self.gold, dtype=np.float64)
            if self.gold.shape != (self.values.shape[1],):
                raise ValueError(f"gold has {self.gold.shape} values for {self.values.shape[1]} items")

    @property
    def n_items(self) -> int:
        """Number of test items."""
        return int(self.values.shape[1])

    @property
    def n_seeds(self) -> int:
        """Number of seeds (rows of ``values``)."""
        return int(self.values.shape[0])

    @classmethod
    def stack(cls, parts: list[Items]) -> Items:
        """One Items over several seeds (each part one seed, same items)."""
        first = parts[0]
        return cls(first.kind, np.concatenate([p.values for p in parts], axis=0), first.gold)

    def to_npz(self) -> bytes:
        """Compact bytes, compressed npz: ``mean`` values as float16 (0/1 correctness is exact; a mean of row
        cosines moves by < 1e-4), ``spearman`` predictions and gold as float32 (float16 would tie ranks)."""
        buf = io.BytesIO()
        dtype = np.float16 if self.kind == "mean" else np.float32
        arrays: dict[str, Any] = {"kind": np.array(self.kind), "values": self.values.astype(dtype)}
        if self.gold is not None:
            arrays["gold"] = self.gold.astype(np.float32)
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_npz(cls, blob: bytes) -> Items:
        """Inverse of :meth:`to_npz` (never unpickles)."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return cls(str(z["kind"]), z["values"].astype(np.float64),
                       z["gold"].astype(np.float64) if "gold" in z.files else None)

    def sha256(self) -> str:
        """sha256 of :meth:`to_npz`."""
        return hashlib.sha256(self.to_npz()).hexdigest()


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _spearman(gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Spearman along the last axis (average ranks for ties), vectorised over leading axes."""
    a, b = _rank(gold), _rank(pred)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), 0.0)


def _metric(kind: str) -> Callable[[np.ndarray | None, np.ndarray], np.ndarray]:
    if kind == "mean":
        return lambda gold, pred: pred.mean(-1)
    return lambda gold, pred: _spearman(gold, pred)  # type: ignore[arg-type]


def score_of(items: Items) -> float:
    """The main score the items give: the mean over seeds of the per-seed score."""
    f = _metric(items.kind)
    return float(np.mean([f(items.gold, items.values[s]) for s in range(items.n_seeds)]))


def _summary(low: float, high: float, method: str, n_resamples: int, seed: int, level: float,
             n_items: int, n_seeds: int) -> dict[str, Any]:
    return {"low": float(low), "high": float(high), "level": level, "method": method, "n_resamples": n_resamples,
            "seed": seed, "n_items": n_items, "n_seeds": n_seeds}


def interval(items: Items, *, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """95% bootstrap interval of the main score (see the module docstring)."""
    f = _metric(items.kind)
    if items.n_seeds == 1:
        from scipy.stats import bootstrap

        pred = items.values[0]
        data = (items.gold, pred) if items.kind == "spearman" else (pred,)

        def stat(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
            return f(arrays[0], arrays[1]) if items.kind == "spearman" else f(None, arrays[0])

        res = bootstrap(data, stat, paired=True, vectorized=True, n_resamples=n_resamples, confidence_level=level,
                        method="percentile", random_state=np.random.default_rng(seed), batch=100)
        ci = res.confidence_interval
        return _summary(ci.low, ci.high, METHOD_ONE_SEED, n_resamples, seed, level, items.n_items, 1)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        seeds = rng.integers(0, items.n_seeds, items.n_seeds)
        idx = rng.integers(0, items.n_items, items.n_items)
        gold = items.gold[idx] if items.gold is not None else None
        stats[b] = float(np.mean(f(gold, items.values[seeds][:, idx])))
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return _summary(low, high, METHOD_SEEDS, n_resamples, seed, level, items.n_items, items.n_seeds)


def _resampled_scores(items: Items, idx: np.ndarray) -> np.ndarray:
    """Scores of ``items`` on each row of the resample index matrix ``idx [B, n]`` (seeds averaged)."""
    f = _metric(items.kind)
    gold = items.gold[idx] if items.gold is not None else None
    out = np.zeros(idx.shape[0])
    for s in range(items.n_seeds):
        out += f(gold, items.values[s][idx])
    return out / items.n_seeds


def _check_pair(a: Items, b: Items) -> None:
    if a.kind != b.kind or a.n_items != b.n_items:
        raise ValueError(f"cannot pair {a.kind} items ({a.n_items}) with {b.kind} items ({b.n_items})")
    if a.gold is not None and b.gold is not None and not np.allclose(a.gold, b.gold):
        raise ValueError("the two cells were scored against different gold values")


def _index_matrix(n_items: int, n_resamples: int, seed: int, chunk: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, (min(chunk, n_resamples - i), n_items)) for i in range(0, n_resamples, chunk)]


def paired_difference(a: Items, b: Items, *, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL,
                      higher_is_better: bool = True) -> dict[str, Any]:
    """Paired bootstrap of ``score(a) - score(b)`` on the same items: the difference, its interval, and whether it is
    significant (the interval excludes 0)."""
    _check_pair(a, b)
    diffs = np.concatenate([_resampled_scores(a, idx) - _resampled_scores(b, idx)
                            for idx in _index_matrix(a.n_items, n_resamples, seed, 250)])
    alpha = (1 - level) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    diff = score_of(a) - score_of(b)
    return {"diff": diff, "low": float(low), "high": float(high), "significant": bool(low > 0 or high < 0),
            "level": level, "n_resamples": n_resamples, "seed": seed,
            "method": "paired percentile bootstrap of the score difference over the shared test items"}


def ratio_interval(candidate: Items, dense: Items, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> dict[str, Any] | None:
    """Interval of retention = score(candidate) / score(dense) on the same resampled items (None when the dense
    score can be 0 on a resample)."""
    _check_pair(candidate, dense)
    ratios = []
    for idx in _index_matrix(candidate.n_items, n_resamples, seed, 250):
        d = _resampled_scores(dense, idx)
        if np.any(d == 0):
            return None
        ratios.append(_resampled_scores(candidate, idx) / d)
    r = np.concatenate(ratios)
    alpha = (1 - level) / 2
    low, high = np.quantile(r, [alpha, 1 - alpha])
    return _summary(low, high, "paired percentile bootstrap of the score ratio over the shared test items",
                    n_resamples, seed, level, candidate.n_items, candidate.n_seeds)


__all__ = ["KINDS", "Items", "interval", "paired_difference", "ratio_interval", "score_of"]
