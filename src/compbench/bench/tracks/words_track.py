"""The ``words`` track runner: compress the GloVe 6B 50d table (400,000 x 50) and evaluate word tasks.

Reference bytes = 400,000 x 50 x 4 (the fp32 table); every posthoc method runs at the
requested budget; see :mod:`compbench.tasks.words` for the tasks and
:mod:`compbench.bench.cell.lifecycle` for the measurement protocol.
"""

from __future__ import annotations

from typing import Any

from compbench.bench.cell.lifecycle import Subject
from compbench.bench.tracks.table_track import TableHooks
from compbench.errors import UsageError
from compbench.tasks import words as word_tasks
from compbench.tasks.words import WordsContext


class WordsHooks(TableHooks):
    """The words track: the GloVe table and the word tasks."""

    #: GloVe's rows are sorted by corpus frequency, so the Zipf lookup workload ranks ids in their order
    lookup_options = {"frequency_sorted": True}

    def load(self, ctx: Any) -> Subject:
        """Load GloVe 6B 50d (the only table of this track)."""
        if ctx.config.model not in (None, "glove-6B-50d"):
            raise UsageError(f"the words track has one table, glove-6B-50d; --model {ctx.config.model!r} is not supported")
        glove = word_tasks.load_glove()  # looked up at call time (tests replace it on the module)
        words = glove.words

        def evaluate(task: Any, table: Any, dense: Any, seed: int) -> tuple[dict[str, float], Any]:
            wctx = WordsContext(table, dense, words, seed=seed)
            return task.evaluate(wctx), wctx.items  # the caller's task: the validation half while tuning

        return self.subject(ctx, glove.vectors, glove.info, evaluate)
