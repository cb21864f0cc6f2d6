"""The ``table`` track's task: how faithfully a compressed *user* table reproduces the original (``--table FILE``).

``table/fidelity``: the mean cosine between each original row and its decoded row (main metric; the per-row
cosines are the per-item outcomes, so intervals, ties and ``compare`` work as on every track), the relative
Frobenius error, and the 10-NN overlap of 1,000 rows drawn with seed 0 (:func:`compbench.tasks.posthoc.
table_fidelity`, the same figures as the posthoc and words fidelity tasks). The table is the user's, so the
task has no data file of its own; the record names the table's file and sha256 in its ``model`` section.
"""

from __future__ import annotations

from typing import Any

import torch

from compbench.stats import Items
from compbench.tasks.posthoc import table_fidelity
from compbench.tasks.task_base import Task, TaskCard


class TableFidelity(Task):
    """Fidelity of a compressed user table to the original (see the module docstring)."""

    card = TaskCard("fidelity", 1, "table", "mean_row_cosine", True, 0.002, None,
                    "mean row cosine (per-row items), relative Frobenius error, 10-NN overlap of 1000 rows (seed 0)")

    def data_sha256(self) -> dict[str, str]:
        """No shipped data: the table's own sha256 is in the record's model section."""
        return {}

    @staticmethod
    def score(task: Any, candidate: torch.Tensor, dense: torch.Tensor, seed: int) -> tuple[dict[str, float], Any]:
        """``(scores, per-row cosine items)`` of ``candidate`` against ``dense``."""
        scores = table_fidelity(dense, candidate)
        cos = torch.nn.functional.cosine_similarity(dense.float(), candidate.float(), dim=1, eps=1e-12)
        return scores, Items("mean", cos.double().numpy())


__all__ = ["TableFidelity"]
