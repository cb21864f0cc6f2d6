"""The ``scale`` track's hooks: compress one table shape (real or synthetic) and record the cost.

The table comes from the task (:mod:`compbench.tasks.scale`); the lifecycle times the fit and records peak
memory per phase; the evaluation scores a fixed sample of rows through the module's ``forward`` (a 4 GiB table
is never materialised a second time). The scale track has no dense reference (fidelity is to the table
itself); its lookup throughput is still compared with the dense table in the same run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compbench.bench.cell.lifecycle import Outcome, Subject
from compbench.bench.tracks.table_track import TableHooks
from compbench.tasks.scale import sample_fidelity, sample_rows


class ScaleHooks(TableHooks):
    """Table = the task's shape; evaluation = fidelity of a fixed sample of rows."""

    def load(self, ctx: Any) -> Subject:
        """Build (synthetic) or load (real) the task's table."""
        table, info = ctx.task.load_table()
        subject = self.subject(ctx, table, info)
        subject.model["shape"] = [int(table.shape[0]), int(table.shape[1])]
        subject.model["table_fp32_bytes"] = int(table.numel()) * 4
        return subject

    def evaluate(self, ctx: Any, subject: Subject, module: nn.Module, config: dict[str, Any], seed: int) -> Outcome:
        """Fidelity of the sampled rows, decoded by the module itself."""
        table = subject.state["table"]
        rows = sample_rows(table.shape[0])
        with torch.inference_mode():
            approx = torch.cat([module(rows[i:i + 2048].to(ctx.device)).float().cpu()
                                for i in range(0, len(rows), 2048)])
        return Outcome(scores=sample_fidelity(table[rows], approx))
