"""The ``store`` track runner: compress a corpus' sentence vectors (vector store / RAG storage) and evaluate.

The dense encoder encodes the task's corpus once; the L2-normalised float32 vectors are
cached on disk under ``<cache>/compbench/store-vectors/`` (``<cache>`` = ``$XDG_CACHE_HOME``
or ``~/.cache``), with a JSON sidecar that records the file's sha256 (checked on every read: a mismatch, a
truncated file or a wrong shape re-encodes loudly and the record's ``vectors_cache_rebuilt`` says why), in a file named by the sha256 of (encoder name, encoder revision =
weights sha256, corpus sha256, max sequence length), so a new model revision or new data
never reuses stale vectors. Reference bytes = ``n x d x 4`` (fp32 vectors). The rest is
:class:`compbench.bench.tracks.table_track.TableHooks` and the lifecycle.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compbench.bench.cell.lifecycle import Outcome, Subject
from compbench.bench.measure.core import Stopwatch
from compbench.bench.tracks.posthoc_track import get_encoder
from compbench.bench.tracks.table_track import TableHooks
from compbench.checksums import sha256_file
from compbench.config import cache_dir  # noqa: E402,F401 - the caches' folder lives in config (one place)
from compbench.errors import DataError
from compbench.tasks.store import StoreContext, corpus_sha256


def vectors_key(model_info: dict[str, Any], corpus_sha: str, max_seq_length: int | None) -> str:
    """Cache key of a corpus' vectors under one encoder."""
    blob = json.dumps({"model": model_info.get("name"), "revision": model_info.get("revision"),
                       "path": model_info.get("path") if model_info.get("revision") is None else None,
                       "corpus_sha256": corpus_sha, "max_seq_length": max_seq_length, "normalized": True},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def corpus_vectors(encoder: Any, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, dict[str, Any]]:
    """Dense L2-normalised vectors ``[n, d]`` of ``texts`` (from the disk cache when present) and cache facts."""
    if not texts:
        raise DataError("the store corpus is empty")
    sha = corpus_sha256(texts)
    info = encoder.info.to_dict()
    key = vectors_key(info, sha, getattr(encoder.st, "max_seq_length", None))
    folder = cache_dir() / "store-vectors"
    path = folder / f"{key}.npy"
    facts: dict[str, Any] = {"corpus_size": len(texts), "corpus_sha256": sha, "vectors_cache_key": key}
    side = folder / f"{key}.json"
    if path.is_file():
        vec, reason = _read_cached_vectors(path, side, (len(texts), info["dim"]))
        if vec is not None:
            facts.update(vectors_cached=True, encode_time_s=0.0)
            return vec, facts
        # never silent: a corrupted or truncated cache costs a full re-encode, and the record says why
        print(f"compbench: the store-vector cache {path.name} is not usable ({reason}); encoding the corpus again",
              file=sys.stderr, flush=True)
        facts["vectors_cache_rebuilt"] = reason
    with Stopwatch() as sw:
        vec = np.ascontiguousarray(encoder.encode(texts, batch_size), dtype=np.float32)
    facts.update(vectors_cached=False, encode_time_s=sw.seconds)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npy", dir=folder)
        with os.fdopen(fd, "wb") as f:
            np.save(f, vec)
        os.replace(tmp, path)
        side.write_text(json.dumps({"model": info, "corpus_sha256": sha, "n": len(texts),
                                    "sha256": sha256_file(path)}, indent=1, sort_keys=True))
    except OSError:  # a read-only cache only costs time
        pass
    return vec, facts


def _read_cached_vectors(path: Path, side: Path, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The cached vectors when the file matches the sha256 its sidecar recorded, has ``shape`` and float32 values;
    else ``(None, reason)``. A cache written before checksums were recorded gets its checksum now."""
    try:
        meta = json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError):
        meta = {}
    digest = sha256_file(path)
    expected = meta.get("sha256") if isinstance(meta, dict) else None
    if expected is not None and expected != digest:
        return None, f"checksum mismatch: sha256 {digest[:12]}, recorded {str(expected)[:12]}"
    try:
        vec = np.load(path, allow_pickle=False)  # never unpickle
    except (OSError, ValueError, EOFError) as exc:
        return None, f"unreadable: {type(exc).__name__}"
    if vec.shape != shape or vec.dtype != np.float32:
        return None, f"shape {list(vec.shape)} {vec.dtype}, expected {list(shape)} float32"
    if expected is None and isinstance(meta, dict) and meta:
        try:  # trust on first use, then checked on every read
            side.write_text(json.dumps({**meta, "sha256": digest}, indent=1, sort_keys=True))
        except OSError:
            pass
    return vec, ""


class StoreHooks(TableHooks):
    """The store track: a corpus' sentence vectors (encoded once, cached on disk)."""

    def load(self, ctx: Any) -> Subject:
        """Encode (or read from the cache) the task's corpus with the dense encoder."""
        encoder = get_encoder(ctx)
        vec, facts = corpus_vectors(encoder, ctx.task.corpus(), ctx.config.batch_size)
        model = {**encoder.info.to_dict(), "corpus_size": facts["corpus_size"],
                 "corpus_sha256": facts["corpus_sha256"]}

        extra = {"encode_time_s": facts["encode_time_s"], "vectors_cached": facts["vectors_cached"]}
        query_texts = ctx.task.query_texts()
        queries = None
        if query_texts:
            qvec, qfacts = corpus_vectors(encoder, query_texts, ctx.config.batch_size)
            queries = torch.from_numpy(qvec)
            model["queries"] = len(query_texts)
            model["queries_sha256"] = qfacts["corpus_sha256"]
            extra["encode_time_s"] += qfacts["encode_time_s"]
        subject = self.subject(ctx, torch.from_numpy(vec), model, measurements=extra)
        subject.state["queries"] = queries
        return subject

    def evaluate(self, ctx: Any, subject: Subject, module: torch.nn.Module, config: dict[str, Any],
                 seed: int) -> Outcome:
        """Evaluate the materialised table; the task also gets the module (to search its codes) and the queries."""
        with torch.inference_mode():
            table = module.materialize().float().cpu()  # type: ignore[operator]
        sctx = StoreContext(table, subject.state["table"], seed=seed, module=module,
                            queries=subject.state.get("queries"))
        scores = ctx.task.evaluate(sctx)
        return Outcome(scores=scores, items=sctx.items, measurements=dict(sctx.measurements or {}))
