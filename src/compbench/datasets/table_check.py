"""The one validation gate for embedding tables, whatever loaded them (a bring-your-own file, GloVe, an
encoder's token table, a store-vector cache, a synthetic scale table).

The lifecycle (:func:`compbench.bench.cell.lifecycle.execute`) calls :func:`check_table` on every track's table right
after loading it, so no method ever sees, and no record ever scores, a table that is not 2-D, not float,
smaller than 2 x 2, or holds NaN or Inf; loaders may call it earlier for a message that names their file.
The check runs in row chunks, so it needs no second copy of a large table.
"""

from __future__ import annotations

import torch

from compbench.errors import DataError

#: rows checked at once (bounds the temporary boolean mask to ``CHUNK_ROWS x d`` bytes)
CHUNK_ROWS = 16384


def check_table(table: torch.Tensor, where: str) -> None:
    """Refuse (DataError, one line) what no method can compress: not 2-D, not float, too small, non-finite."""
    if table.ndim != 2:
        raise DataError(f"{where}: an embedding table must be 2-D (rows x dim), got shape {list(table.shape)}")
    if not table.is_floating_point():
        raise DataError(f"{where}: an embedding table must hold floats, got {str(table.dtype).removeprefix('torch.')}")
    v, d = table.shape
    if v < 2 or d < 2:
        raise DataError(f"{where}: an embedding table needs at least 2 rows and 2 columns, got {v} x {d}")
    n_bad, first = 0, -1
    for start in range(0, v, CHUNK_ROWS):
        bad = ~torch.isfinite(table[start:start + CHUNK_ROWS]).all(dim=1)
        count = int(bad.sum())
        if count and first < 0:
            first = start + int(bad.nonzero()[0, 0])
        n_bad += count
    if n_bad:
        raise DataError(f"{where}: {n_bad:,} of {v:,} rows hold NaN or Inf (first: row {first}); clean the table first")


__all__ = ["CHUNK_ROWS", "check_table"]
