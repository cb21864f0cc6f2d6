"""Numeric command-line input checked at once: a bad value is a one-line UsageError (exit 2), before any work.

- :func:`check_threads`: ``1 <= threads <= available_cpus()`` (the cores this process may run on; asking
  for more only oversubscribes them, and ``--threads 10000`` used to run for minutes before anyone noticed).
  Ray sweeps on a cluster (``--executor ray --address ...``) pass ``upper=False``: their cells run on other
  machines.
- :func:`check_seed` / :func:`check_seeds`: ``0 <= seed <= MAX_SEED``. ``MAX_SEED = 2**31 - 1`` is the
  range every seeded library compbench uses accepts: ``torch.manual_seed`` takes up to ``2**64 - 1`` and
  numpy's legacy seed is reduced modulo ``2**32`` by ``runner.seed_everything``, but faiss (``pq``, ``opq``,
  ``kmeans``, ``ade``) stores its seed in a C ``int``, so a larger seed would crash those methods mid-run.
"""

from __future__ import annotations

from collections.abc import Iterable

from compbench.errors import UsageError

MAX_SEED = 2**31 - 1


def available_cpus() -> int:
    """Cores this process may run on (``compbench.bench.measure.core.available_cpus``)."""
    from compbench.bench.measure.core import available_cpus as cpus  # heavy: torch

    return cpus()


def check_threads(threads: int | None, flag: str = "--threads", *, upper: bool = True) -> int | None:
    """``threads`` if it is None (= all available cores) or within ``1..available_cpus()``; else UsageError."""
    if threads is None:
        return None
    if threads < 1:
        raise UsageError(f"{flag} must be >= 1, got {threads}")
    if upper:
        n = available_cpus()
        if threads > n:
            raise UsageError(f"{flag} {threads} is more than the {n} core(s) this process may use; "
                             f"use 1..{n} (default: all {n})")
    return threads


def check_seed(seed: int, flag: str = "--seed") -> int:
    """``seed`` if ``0 <= seed <= MAX_SEED``; else UsageError naming the range."""
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{flag} must be >= 0 and <= {MAX_SEED} (2**31 - 1, the range faiss, numpy and torch "
                         f"all accept), got {seed}")
    return seed


def check_seeds(seeds: Iterable[int], flag: str = "--seeds") -> tuple[int, ...]:
    """Every seed within ``0..MAX_SEED``; the message shows the first one outside it."""
    out = tuple(seeds)
    for s in out:
        if not 0 <= s <= MAX_SEED:
            raise UsageError(f"{flag} must be >= 0 and <= {MAX_SEED} (2**31 - 1, the range faiss, numpy and torch "
                             f"all accept), got {s}")
    return out


__all__ = ["MAX_SEED", "available_cpus", "check_seed", "check_seeds", "check_threads"]
