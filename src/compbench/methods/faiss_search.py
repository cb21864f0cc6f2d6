"""Build faiss search indexes on codes a module already stores (the store track's search on codes).

Every builder copies the module's trained parameters (codebooks, centroid, ranges) and codes into a
faiss index with ``add_sa_codes``: nothing is re-trained or re-encoded, so the index searches exactly
the stored bytes. Tests check each index against the module's own decode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def float_queries(queries: Any) -> np.ndarray:
    """Queries as a C-contiguous float32 ``[q, d]`` array (what faiss' ``search`` takes)."""
    return np.ascontiguousarray(np.asarray(queries, dtype=np.float32))


def index_searcher(index: Any) -> Callable[[Any, int], np.ndarray]:
    """``(queries [q, d], k) -> ids [q, k]`` with a float-query faiss index."""

    def search(queries: Any, k: int) -> np.ndarray:
        return index.search(float_queries(queries), int(k))[1]

    return search


def copy_into(array: Any, vector: Any) -> None:
    """Copy a (torch or numpy) array, flattened, into a faiss ``std::vector``."""
    import faiss

    data = array.detach().float().cpu().numpy() if hasattr(array, "detach") else np.asarray(array, np.float32)
    faiss.copy_array_to_vector(np.ascontiguousarray(data, dtype=np.float32).ravel(), vector)


def codes_array(codes: Any) -> np.ndarray:
    """A module's uint8 code buffer as a C-contiguous numpy array."""
    return np.ascontiguousarray(codes.detach().cpu().numpy(), dtype=np.uint8)


def rotated(index: Any, matrix: Any) -> Any:
    """``index`` behind a fixed linear map ``y = A x`` (``A`` = ``matrix [d_out, d_in]``), as faiss' OPQ/RaBitQ do."""
    import faiss

    a = matrix.detach().float().cpu().numpy() if hasattr(matrix, "detach") else np.asarray(matrix, np.float32)
    lt = faiss.LinearTransform(int(a.shape[1]), int(a.shape[0]), False)
    faiss.copy_array_to_vector(np.ascontiguousarray(a, dtype=np.float32).ravel(), lt.A)
    lt.is_trained = True
    wrapped = faiss.IndexPreTransform(lt, index)  # faiss' wrapper keeps references to lt and index
    wrapped.ntotal = index.ntotal
    wrapped.is_trained = True
    return wrapped
