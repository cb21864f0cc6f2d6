"""Run configuration: frozen dataclasses; precedence CLI > environment > defaults.

The only environment variable compbench reads is ``COMPBENCH_RESULTS`` (the
default results folder), and it is read here, once, at import.

Where records go and come from:

- ``compbench run``, ``sweep`` and ``mteb`` *write* to ``--results``, else ``$COMPBENCH_RESULTS``,
  else ``results/local/`` (:func:`default_results_dir`). ``results/local/`` is gitignored, and a
  ResultStore reads only its track folders (``results/<track>/...``), so a user's runs never touch
  the committed leaderboard; that is written only with an explicit ``--results results``.
- ``compbench report`` *reads* ``--results``, else ``$COMPBENCH_RESULTS``, else ``results/``
  (:func:`leaderboard_results_dir`): by default it regenerates the committed ``reports/`` from the
  committed ``results/``. Report your own runs with ``--results results/local --out DIR``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ENV_RESULTS = os.environ.get("COMPBENCH_RESULTS")
DEFAULT_RESULTS = "results/local"  # gitignored: user runs never write into the committed leaderboard
LEADERBOARD_RESULTS = "results"  # the committed leaderboard (written only with an explicit --results results)


def default_results_dir() -> Path:
    """Where run/sweep/mteb write: ``$COMPBENCH_RESULTS`` if it was set when compbench was imported,
    else ``results/local/`` (gitignored, outside the committed leaderboard)."""
    return Path(ENV_RESULTS or DEFAULT_RESULTS)


def leaderboard_results_dir() -> Path:
    """Where ``compbench report`` reads by default: ``$COMPBENCH_RESULTS`` if set, else the committed
    leaderboard ``results/``."""
    return Path(ENV_RESULTS or LEADERBOARD_RESULTS)


CACHE_DIR: Path | None = None  # override (tests); None: $XDG_CACHE_HOME/compbench or ~/.cache/compbench


def cache_dir() -> Path:
    """Folder of compbench's on-disk caches: :data:`CACHE_DIR` when set, else ``$XDG_CACHE_HOME/compbench``, else
    ``~/.cache/compbench`` (read at call time, so a test or a user can point it elsewhere for one process)."""
    if CACHE_DIR is not None:
        return Path(CACHE_DIR)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compbench"


DEFAULT_MAX_FIT_SECONDS = 3600.0  # one hour: ``compbench run`` / ``sweep --max-fit-seconds`` default
MAX_FIT_SECONDS = 30 * 24 * 3600.0  # the largest limit a flag or a suite may give (30 days; 0 still means none)


@dataclass(frozen=True)
class RunConfig:
    """One cell to run.

    Attributes:
        method: method registry name.
        budget: budget string (``40x``, ``1.5MiB``...).
        track: ``posthoc`` (default), ``train``, ...
        task: task name (None: the track's default, ``stsb`` for posthoc).
        device: ``cpu`` / ``cuda`` / ``cuda:N`` / ``auto``.
        threads: torch intra-op threads (None: all available cores); recorded.
        seed: seed for every random choice of the cell.
        options: method hyperparameter overrides (``--option k=v``), recorded and part of the key.
        model: sentence encoder (None: the bundled all-MiniLM-L6-v2).
        fresh_process: whether this process was started for this cell (peak RSS is then per cell).
        batch_size: evaluation batch size.
        lookup_iters: timed lookup calls per module.
        lookup_workload: how lookup ids are drawn: ``zipf`` (default: token frequencies of the shipped
            calibration corpus for the MiniLM vocabulary, else a Zipf law) or ``uniform``; recorded.
        seeds: train track: several seeds aggregated into one record (mean +- std).
        tune: choose the method's options for the budget on the task's validation split first
            (:mod:`compbench.bench.cell.tuning`); a tuned cell is its own variant (key ``<method>+tuned``).
        max_fit_seconds: stop a fit that runs longer (seconds, summed over seeds) and record the cell as
            ``timeout`` (:mod:`compbench.bench.cell.watchdog`); ``None`` or 0: no limit. Not part of the key.
    """

    method: str
    budget: str
    track: str = "posthoc"
    task: str | None = None
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    fresh_process: bool = False
    batch_size: int = 64
    lookup_iters: int = 30
    lookup_workload: str = "zipf"
    tune: bool = False
    seeds: tuple[int, ...] | None = None
    max_fit_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (recorded in provenance)."""
        d = asdict(self)
        d["seeds"] = list(self.seeds) if self.seeds is not None else None
        return d
