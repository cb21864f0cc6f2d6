"""The ``scale`` track's tasks: one table shape each, scored by fidelity; what matters is the cost.

A scale cell compresses one table at a budget and records what it costs -- fit time, peak memory (delta
over the phase start, :mod:`compbench.bench.measure.core`), stored bytes -- and how faithful the result is
(mean row cosine and relative Frobenius error on a fixed sample of rows). ``compbench scale`` runs the grid
of shapes x methods and fits how fit time and peak memory grow with ``V * d``.

Shapes:

- real tables: ``minilm`` (all-MiniLM-L6-v2's token table, 30,522 x 384), ``mpnet`` (all-mpnet-base-v2's,
  30,527 x 768; needs the ``mpnet`` extra) and ``glove`` (GloVe 6B 50d, 400,000 x 50);
- synthetic LLM-size tables ``synth-v<V>-d<d>``, V in {32k, 128k, 256k} (32,768 / 131,072 / 262,144 rows)
  x d in {768, 2048, 4096}: at most 4 GiB of fp32 (256k x 4096), so a method within 3x of the table fits
  in 24 GB.

**Synthetic rows** ``X = (G * s) Q^T``: ``G`` i.i.d. N(0, 1) ``[V, d]``; ``s_i = c * i^(-beta)`` a
power-law spectrum with ``beta`` = :data:`SPECTRUM_BETA`, the slope of MiniLM's token table's singular values
(a least-squares line through ``log s_i`` against ``log i``, ``i`` = 1..384; ``tests/test_scale.py`` re-fits it
from the table), and ``c`` chosen so the mean squared row norm is MiniLM's (:data:`MEAN_SQ_ROW_NORM`); ``Q`` a
seeded random orthogonal ``d x d`` matrix (QR of a Gaussian), so the spectrum is not axis-aligned (as in real
tables; product quantisers would otherwise see a few high-variance coordinates). Generated in row chunks from a
seeded generator (deterministic; the seed is the task's, not the cell's, so every method sees the same table).
**Token frequencies** follow row order, a Zipf law ``count ~ 1 / (row + 1)``: frequency-aware methods
(``tiered``, ``mde-posthoc``) and the lookup workload use it, as for any table that is not MiniLM's.

Fidelity is measured on :data:`SAMPLE_ROWS` rows drawn with seed 0 (through the module's own ``forward``, so a
huge table is never materialised twice).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from compbench.models.encoder import SentenceEncoder
from compbench.tasks import TASKS, words
from compbench.tasks.task_base import Task, TaskCard

#: slope of log singular value against log rank of MiniLM's token table (re-fitted in tests/test_scale.py)
SPECTRUM_BETA = 0.396
#: mean squared row norm of MiniLM's token table
MEAN_SQ_ROW_NORM = 1.188
SAMPLE_ROWS = 8192
SYNTHETIC_SEED = 1234
CHUNK_ROWS = 16384
SYNTHETIC_V = {"32k": 32_768, "128k": 131_072, "256k": 262_144}
SYNTHETIC_D = (768, 2048, 4096)


def synthetic_table(num_embeddings: int, dim: int, *, beta: float = SPECTRUM_BETA,
                    mean_sq_norm: float = MEAN_SQ_ROW_NORM, seed: int = SYNTHETIC_SEED) -> torch.Tensor:
    """A ``[V, d]`` float32 table with a power-law spectrum under a random rotation (see the module docstring)."""
    v, d = int(num_embeddings), int(dim)
    g = torch.Generator().manual_seed(int(seed))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ranks = torch.arange(1, d + 1, dtype=torch.float64)
    s = ranks.pow(-float(beta))
    s = s * math.sqrt(mean_sq_norm / float(s.square().sum()))  # E ||row||^2 = sum s_i^2
    rot = (s[:, None] * q.T).float()  # rows of G scaled by s, then rotated: (G * s) Q^T = G (diag(s) Q^T)
    out = torch.empty(v, d, dtype=torch.float32)
    for start in range(0, v, CHUNK_ROWS):
        n = min(CHUNK_ROWS, v - start)
        gc = torch.Generator().manual_seed(int(seed) * 1_000_003 + start)
        torch.matmul(torch.randn(n, d, generator=gc), rot, out=out[start:start + n])
    return out


def sample_rows(num_embeddings: int, n: int = SAMPLE_ROWS) -> torch.Tensor:
    """The fixed rows (seed 0, sorted) on which fidelity is measured."""
    g = torch.Generator().manual_seed(0)
    return torch.randperm(int(num_embeddings), generator=g)[: min(int(n), int(num_embeddings))].sort().values


def sample_fidelity(dense_rows: torch.Tensor, approx_rows: torch.Tensor) -> dict[str, float]:
    """Mean row cosine and relative Frobenius error of the sampled rows."""
    a, b = dense_rows.float(), approx_rows.float()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
    rel = float((a - b).norm() / a.norm().clamp_min(1e-12))
    return {"mean_row_cosine": float(cos.mean()), "rel_frobenius_error": rel, "n_rows": float(len(a))}


class ScaleTask(Task):
    """One table shape (``source``: ``minilm`` | ``mpnet`` | ``glove`` | ``synthetic``)."""

    source: ClassVar[str]
    shape: ClassVar[tuple[int, int]]

    def load_table(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """The fp32 table and what it is (name, shape, how it was made)."""
        if self.source == "glove":
            glove = words.load_glove()  # looked up at call time (tests replace it on the module)
            return glove.vectors.float(), dict(glove.info)
        if self.source in ("minilm", "mpnet"):
            enc = SentenceEncoder(None if self.source == "minilm" else "all-mpnet-base-v2")
            table = enc.token_table.detach().float().cpu().clone()
            return table, enc.info.to_dict()
        v, d = self.shape
        return synthetic_table(v, d), {"name": self.card.name, "kind": "synthetic", "rows": v, "dim": d,
                                       "spectrum_beta": SPECTRUM_BETA, "mean_sq_row_norm": MEAN_SQ_ROW_NORM,
                                       "seed": SYNTHETIC_SEED, "frequencies": "row order, count ~ 1/(row+1)"}


def _card(name: str, v: int, d: int, what: str) -> TaskCard:
    return TaskCard(name, 1, "scale", "mean_row_cosine", True, 0.002, name,
                    f"{what} ({v:,} x {d}); fit time, peak memory and stored bytes of the method; mean row cosine "
                    f"and relative Frobenius error of {SAMPLE_ROWS} fixed rows (seed 0)")


def _register(name: str, source: str, v: int, d: int, what: str) -> None:
    cls = type(f"Scale_{name.replace('-', '_')}", (ScaleTask,),
               {"source": source, "shape": (v, d), "card": _card(name, v, d, what), "__module__": __name__,
                "__doc__": f"Scale task: {what} ({v:,} x {d})."})
    globals()[cls.__name__] = cls  # the lazy registry entry imports it by name
    TASKS.register(f"scale/{name}")(cls)


_register("minilm", "minilm", 30_522, 384, "all-MiniLM-L6-v2 token table")
_register("mpnet", "mpnet", 30_527, 768, "all-mpnet-base-v2 token table")
_register("glove", "glove", 400_000, 50, "GloVe 6B 50d word table")
for _vname, _v in SYNTHETIC_V.items():
    for _d in SYNTHETIC_D:
        _register(f"synth-v{_vname}-d{_d}", "synthetic", _v, _d, "synthetic power-law-spectrum table")

SCALE_TASKS = ("minilm", "mpnet", "glove", *(f"synth-v{n}-d{d}" for n in SYNTHETIC_V for d in SYNTHETIC_D))

__all__ = ["SCALE_TASKS", "SPECTRUM_BETA", "MEAN_SQ_ROW_NORM", "ScaleTask", "sample_fidelity", "sample_rows",
           "synthetic_table"]
