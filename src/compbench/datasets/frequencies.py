"""The token-frequency tables: how often each token id occurs in the shipped calibration corpus (the train splits of
the shipped datasets, MiniLM WordPiece), and the counts a track writes for its own tokenizer into
``<cache>/compbench/token-frequency/`` (the lm track: :mod:`compbench.bench.tracks.lm_calibration`). Read by the lookup
workload (:func:`compbench.bench.measure.core.lookup_ids`) and by the frequency-aware methods (tiered, mde, the VLDB
helpers); training data only, never a test split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from compbench.config import cache_dir
from compbench.datasets import data_root
from compbench.errors import DataError

TOKEN_FREQUENCY_FILE = "token-frequency/minilm-wordpiece-counts.parquet"


@dataclass(frozen=True)
class TokenFrequencies:
    """Token-id counts of the shipped calibration corpus (``counts[i]`` = occurrences of id ``i``)."""

    counts: np.ndarray  # int64 [vocab_size]
    vocab_size: int
    total_tokens: int
    sha256: str  # of the parquet file
    source: str  # path relative to compbench/datasets/data
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@lru_cache(maxsize=4)
def load_token_frequencies(path: str | None = None) -> TokenFrequencies:
    """The shipped token-frequency table (or the parquet at ``path``: columns ``id``, ``count``).

    The sidecar ``<name>.json`` gives the vocabulary size the counts were taken for; without it the
    size is ``max(id) + 1``.
    """
    import pyarrow.parquet as pq  # noqa: PLC0415

    file = Path(path) if path is not None else data_root() / TOKEN_FREQUENCY_FILE
    try:
        table = pq.read_table(file, columns=["id", "count"])
        blob = file.read_bytes()
    except Exception as exc:  # noqa: BLE001 - any read failure is a data error
        raise DataError(f"cannot read the token-frequency file {file}: {type(exc).__name__}: {exc}") from exc
    ids = table.column("id").to_numpy().astype(np.int64)
    cnt = table.column("count").to_numpy().astype(np.int64)
    meta: dict[str, Any] = {}
    side = file.with_suffix(".json")
    if side.is_file():
        meta = json.loads(side.read_text())
    vocab = int(meta.get("tokenizer", {}).get("vocab_size") or (int(ids.max()) + 1 if ids.size else 0))
    if ids.size and (ids.min() < 0 or ids.max() >= vocab or (cnt < 0).any()):
        raise DataError(f"token-frequency file {file}: ids must lie in 0..{vocab - 1} and counts be >= 0")
    counts = np.zeros(vocab, dtype=np.int64)
    np.add.at(counts, ids, cnt)
    try:
        source = str(file.relative_to(data_root()))
    except ValueError:
        source = str(file)
    return TokenFrequencies(counts=counts, vocab_size=vocab, total_tokens=int(counts.sum()),
                            sha256=hashlib.sha256(blob).hexdigest(), source=source, meta=meta)


def token_frequencies_for(vocab_size: int) -> TokenFrequencies | None:
    """Token counts for a ``vocab_size``-row vocabulary: the shipped MiniLM counts, else counts that a track wrote
    into ``<cache>/compbench/token-frequency/`` for its own tokenizer (the lm track counts the same calibration
    sources with the LM's tokenizer, :func:`compbench.bench.tracks.lm_calibration.ensure_counts`); None when none match."""
    shipped = load_token_frequencies()
    if shipped.vocab_size == vocab_size:
        return shipped
    folder = cache_dir() / "token-frequency"
    for file in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        side = file.with_suffix(".json")
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if int(meta.get("tokenizer", {}).get("vocab_size") or 0) == vocab_size:
            return load_token_frequencies(str(file))
    return None


__all__ = ["TOKEN_FREQUENCY_FILE", "TokenFrequencies", "load_token_frequencies", "token_frequencies_for"]
