"""The ``words`` track runner: compress the GloVe 6B 50d table (400,000 x 50) and evaluate word tasks.

Reference bytes = 400,000 x 50 x 4 (the fp32 table); every posthoc method runs at the
requested budget; see :mod:`compbench.tasks.words` for the tasks and
:mod:`compbench.bench.table_track` for the measurement protocol.
"""

from __future__ import annotations

from typing import Any

from compbench.bench.record import Record
from compbench.bench.table_track import run_table_cell
from compbench.errors import UsageError


def run_words(ctx: Any) -> Record:
    """Run one words-track cell."""
    from compbench.tasks.words import WordsContext, load_glove

    if ctx.config.model not in (None, "glove-6B-50d"):
        raise UsageError(f"the words track has one table, glove-6B-50d; --model {ctx.config.model!r} is not supported")
    glove = load_glove()
    words = glove.words

    def evaluate(table: Any, dense: Any) -> dict[str, float]:
        return ctx.task.evaluate(WordsContext(table, dense, words, seed=ctx.config.seed))

    return run_table_cell(ctx, glove.vectors, glove.info, evaluate)
