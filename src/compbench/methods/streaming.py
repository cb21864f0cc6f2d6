"""Row-chunked building blocks that keep a post-hoc fit within about 3x the table's fp32 size.

The memory rule (issue 23): where an algorithm allows it, a method's fit needs at most about three times the
table's fp32 bytes at peak (the table itself included). Three pieces make that possible:

- :func:`row_blocks` / :func:`map_rows`: apply a row-wise encoder (scalar codes, PQ codes, bit packing) to
  blocks of rows sized by :func:`rows_per_block` (``BLOCK_BYTES`` of temporaries per block), so the
  temporaries never scale with ``V``.
- :func:`top_right_singular_vectors`: the leading right singular vectors of a tall table. Small tables
  (``V d <= DIRECT_MAX_ELEMENTS``) use the exact LAPACK SVD of a float64 copy, as before; larger ones use the
  Gram route: ``G = X^T X`` (or the covariance, when centred) accumulated block by block in float64
  (``d x d``), then ``eigh(G)``. Its eigenvectors are the right singular vectors of ``X`` and its eigenvalues
  their squared singular values, so the truncated factors are the Eckart-Young optimum, like the full SVD;
  only the ``d x d`` Gram matrix and one block are held beside the table. (Squaring the condition number
  costs precision only in the smallest singular values, which a truncation drops; the float64 accumulation
  keeps the leading ones to ~1e-12 relative.) This is the standard tall-skinny solver (e.g. scikit-learn's
  PCA ``covariance_eigh`` solver).
- :func:`project_rows`: ``(X - mean) P^T`` block by block.

The threshold keeps every committed result on the bundled encoders (MiniLM 30,522 x 384, mpnet 30,527 x 768)
on the exact SVD path; the scale track's larger tables take the Gram route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

#: temporaries per block of rows (bytes)
BLOCK_BYTES = 64 << 20
#: tables with at most this many entries (128 MiB in fp32) are factorised by a full float64 LAPACK SVD
DIRECT_MAX_ELEMENTS = 1 << 25


def rows_per_block(bytes_per_row: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows in one block when each row needs ``bytes_per_row`` bytes of temporaries (at least 1)."""
    return max(1, int(block_bytes) // max(1, int(bytes_per_row)))


def row_blocks(n: int, rows: int) -> Iterator[slice]:
    """Consecutive slices of ``rows`` rows covering ``range(n)``."""
    for start in range(0, int(n), max(1, int(rows))):
        yield slice(start, min(int(n), start + int(rows)))


def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int) -> torch.Tensor:
    """``fn`` applied to blocks of ``rows`` rows of ``x`` and concatenated along dim 0 (``fn`` must be row-wise)."""
    if x.shape[0] <= rows:
        return fn(x)
    return torch.cat([fn(x[s]) for s in row_blocks(x.shape[0], rows)])


def encode_blocks(encode: Callable[[np.ndarray], np.ndarray], x: np.ndarray, code_size: int, rows: int) -> np.ndarray:
    """A faiss-style encoder ``encode`` (float32 rows -> uint8 codes ``[n, code_size]``) applied to blocks of
    ``rows`` rows of ``x``; the codes are those of one call on all rows."""
    out = np.empty((x.shape[0], int(code_size)), dtype=np.uint8)
    for s in row_blocks(x.shape[0], rows):
        out[s] = encode(np.ascontiguousarray(x[s], dtype=np.float32))
    return out


def largest_entry_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Per row, the sign (+1/-1) that makes its largest-magnitude entry positive: the deterministic sign convention
    of every factorisation here (svd, pca, the Gram route)."""
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, idx[:, None])).squeeze(1)
    signs[signs == 0] = 1
    return signs


def _sign_fix(vectors: torch.Tensor) -> torch.Tensor:
    """Each row flipped so that its largest-magnitude entry is positive."""
    return vectors * largest_entry_signs(vectors)[:, None]


def column_mean(table: torch.Tensor) -> torch.Tensor:
    """The float64 mean row of ``table``, accumulated block by block."""
    total = torch.zeros(table.shape[1], dtype=torch.float64)
    for s in row_blocks(table.shape[0], rows_per_block(table.shape[1] * 8)):
        total += table[s].double().sum(dim=0)
    return total / max(1, table.shape[0])


def gram(table: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """``(X - mean)^T (X - mean)`` in float64 (``d x d``), accumulated over blocks of rows."""
    d = table.shape[1]
    g = torch.zeros(d, d, dtype=torch.float64)
    for s in row_blocks(table.shape[0], rows_per_block(d * 8)):
        b = table[s].double()
        if mean is not None:
            b -= mean
        g += b.T @ b
    return g


def top_right_singular_vectors(table: torch.Tensor, rank: int, mean: torch.Tensor | None = None,
                               direct_max_elements: int = DIRECT_MAX_ELEMENTS) -> torch.Tensor:
    """The ``rank`` leading right singular vectors ``[rank, d]`` (float64) of ``table - mean``, sign-fixed
    (largest-magnitude entry positive), by the exact SVD (small tables) or the Gram route (see the module)."""
    x = table.detach()
    v, d = x.shape
    if v * d <= direct_max_elements or v < d:
        xd = x.double() if mean is None else x.double() - mean
        _, _, vh = torch.linalg.svd(xd, full_matrices=False)
        return _sign_fix(vh[:rank])
    _, vecs = torch.linalg.eigh(gram(x, mean))  # ascending eigenvalues
    return _sign_fix(vecs.flip(1)[:, :rank].T.contiguous())


def project_rows(table: torch.Tensor, axes: torch.Tensor, mean: torch.Tensor | None = None,
                 out_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(table - mean) @ axes.T`` computed in float64 block by block, returned as ``out_dtype``."""
    r = axes.shape[0]
    a = axes.double()

    def one(b: torch.Tensor) -> torch.Tensor:
        bd = b.double() if mean is None else b.double() - mean
        return (bd @ a.T).to(out_dtype)

    return map_rows(one, table.detach(), rows_per_block((table.shape[1] + r) * 8))


__all__ = ["BLOCK_BYTES", "DIRECT_MAX_ELEMENTS", "column_mean", "encode_blocks", "gram", "largest_entry_signs", "map_rows", "project_rows",
           "row_blocks", "rows_per_block", "top_right_singular_vectors"]
