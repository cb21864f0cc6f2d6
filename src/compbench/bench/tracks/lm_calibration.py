"""Calibration data of the ``lm`` track, from training text only (never the test or validation text).

- **Token counts** (:func:`ensure_counts`): the frequency-aware methods (``tiered``, ``mde-posthoc``) rank rows
  by how often the LM's tokenizer produces them on the *same sources* as the shipped MiniLM counts (the train
  splits of the shipped datasets, listed in ``datasets/data/token-frequency/minilm-wordpiece-counts.json``),
  each text tokenised on its own with the tokenizer's own special tokens. The counts are deterministic and are
  written once into ``<cache>/compbench/token-frequency/<model>-<revision[:12]>-counts.parquet`` with a JSON
  sidecar in the shipped file's format, where :func:`compbench.datasets.frequencies.token_frequencies_for` finds them
  (by vocabulary size) and records their sha256 in the cell's config.
- **Healing text** (:func:`calibration_windows`): the shipped IMDB train reviews joined with newlines, cut into
  windows by the task's protocol (:func:`compbench.tasks.lm.make_windows`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compbench.config import cache_dir
from compbench.datasets import data_root, file_sha256, split_path
from compbench.datasets.frequencies import TOKEN_FREQUENCY_FILE
from compbench.tasks.lm import make_windows, tokenizer_prefix

HEAL_SOURCE = ("imdb", "train", "text")


def _sources() -> list[dict[str, Any]]:
    meta = json.loads((data_root() / TOKEN_FREQUENCY_FILE).with_suffix(".json").read_text(encoding="utf-8"))
    return list(meta["sources"])


def counts_path(lm: Any) -> Path:
    """Where the LM's calibration counts live."""
    rev = str(lm.info.get("revision") or "norev")[:12]
    return cache_dir() / "token-frequency" / f"{lm.info['name']}-{rev}-counts.parquet"


def ensure_counts(lm: Any) -> Path:
    """Count the calibration sources with the LM's tokenizer (once; see the module docstring)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = counts_path(lm)
    side = path.with_suffix(".json")
    if path.is_file() and side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            if meta.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest():
                return path
        except (OSError, ValueError):
            pass
    vocab = int(lm.info["vocab_size"])
    counts = np.zeros(vocab, dtype=np.int64)
    sources = []
    for src in _sources():
        file = split_path(src["dataset"], src["split"])
        frame = pd.read_parquet(file, columns=list(src["columns"]))
        texts = [str(t) for col in src["columns"] for t in frame[col].tolist()]
        n_tokens = 0
        for i in range(0, len(texts), 1000):
            for ids in lm.tokenizer(texts[i:i + 1000])["input_ids"]:
                arr = np.asarray(ids, dtype=np.int64)
                arr = arr[(arr >= 0) & (arr < vocab)]
                np.add.at(counts, arr, 1)
                n_tokens += len(ids)
        sources.append({"dataset": src["dataset"], "split": src["split"], "columns": list(src["columns"]),
                        "texts": len(texts), "tokens": n_tokens, "file_sha256": file_sha256(file)})
    ids = np.nonzero(counts)[0]
    table = pa.table({"id": pa.array(ids.astype(np.int32)), "count": pa.array(counts[ids])})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    meta = {"name": path.stem, "tokenizer": {"name": lm.info["name"], "revision": lm.info.get("revision"),
                                             "vocab_size": vocab},
            "counting": "each text tokenised on its own with the tokenizer's special tokens; no truncation",
            "sources": sources, "total_tokens": int(counts.sum()), "distinct_ids": int(ids.size),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    side.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return path


def calibration_windows(lm: Any, n_windows: int, context: int) -> torch.Tensor:
    """``[n_windows, context]`` windows of the healing text (IMDB train) for the LM's tokenizer."""
    import pandas as pd

    name, split, column = HEAL_SOURCE
    texts = pd.read_parquet(split_path(name, split), columns=[column])[column].astype(str).tolist()
    prefix = tokenizer_prefix(lm.tokenizer)
    need = n_windows * (context - len(prefix))
    ids: list[int] = []
    for i in range(0, len(texts), 500):  # tokenise only as much text as the windows need
        ids.extend(lm.tokenizer("\n".join(texts[i:i + 500]) + "\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= need:
            break
    return make_windows(ids, prefix, n_windows, context)


__all__ = ["HEAL_SOURCE", "calibration_windows", "counts_path", "ensure_counts"]
