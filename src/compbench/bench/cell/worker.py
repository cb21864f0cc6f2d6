"""Run one sweep cell and turn every outcome into a record (the body of every executor).

:func:`execute_cell` never raises for a cell-level problem: an unsupported track or an
unattainable budget becomes a ``skipped`` record with the reason; an exception, a
MemoryError or a CUDA out-of-memory (after retrying at half the evaluation batch, up to
:data:`MAX_OOM_RETRIES` times) becomes a ``failed`` record with the error. Only
KeyboardInterrupt / SystemExit propagate.

``python -m compbench.bench.cell.worker --results DIR CONFIG_JSON`` runs one cell in a fresh
process (the local executor starts one per cell) and writes its record atomically. The
worker dies with its parent (Linux ``PR_SET_PDEATHSIG``) and turns SIGTERM into a clean
exit, so a killed sweep leaves no orphan and no temp file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from compbench.bench.cell.plugins import import_plugins
from compbench.bench.cell.provenance import run_command
from compbench.bench.results.record import Record
from compbench.bench.results.record_store import ResultStore
from compbench.config import RunConfig
from compbench.errors import (
    CompbenchError,
    MemoryRefusal,
    TrackError,
    UnattainableBudgetError,
    UsageError,
    first_line,
)

MAX_OOM_RETRIES = 3


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (lists back to tuples)."""
    d = dict(d)
    if d.get("seeds") is not None:
        d["seeds"] = tuple(int(s) for s in d["seeds"])
    return RunConfig(**d)


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch

        return isinstance(exc, torch.cuda.OutOfMemoryError)
    except (ImportError, AttributeError):  # pragma: no cover
        return False


def _free_cuda() -> None:
    try:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    """Temporarily set ``sys.argv`` (provenance records it as the command)."""
    old = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = old


def execute_cell(config: RunConfig, root: Path | str | None, *, cache: dict[str, Any] | None = None,
                 write: bool = True) -> Record:
    """Run one cell (see the module docstring); write its record into ``root`` when ``write``.

    The record's ``provenance.command`` is the ``compbench run`` command that reproduces the cell."""
    with _argv(run_command(config)):
        return _execute_cell(config, root, cache=cache, write=write)


def _execute_cell(config: RunConfig, root: Path | str | None, *, cache: dict[str, Any] | None,
                  write: bool) -> Record:
    from compbench.bench.cell.outcomes import outcome_record  # heavy: torch
    from compbench.bench.cell.plan import fingerprint  # heavy: torch
    from compbench.bench.cell.runner import run_cell  # heavy: torch

    store = ResultStore(root) if root is not None else None
    batch = config.batch_size
    retries = 0
    skip_kind: str | None = None
    while True:
        cfg = replace(config, batch_size=batch)
        oom = False
        try:
            record = run_cell(cfg, store, write=False, cache=cache, references=False)  # planned by the caller
            oom = (record.status == "failed" and "out of memory" in (record.error or "").lower()
                   and cfg.device != "cpu")
        except TrackError as exc:
            skip_kind = "track"
            record = outcome_record(config, "skipped", str(exc), skip=skip_kind)
        except UnattainableBudgetError as exc:
            skip_kind = "budget"
            record = outcome_record(config, "skipped", str(exc), reference_bytes=exc.reference_bytes, skip=skip_kind)
        except MemoryRefusal as exc:
            skip_kind = "memory"
            record = outcome_record(config, "skipped", str(exc), skip=skip_kind,
                                    measurements={"memory_check": {"estimate_bytes": exc.needed_bytes,
                                                                   "available_bytes": exc.available_bytes}})
        except CompbenchError as exc:
            record = outcome_record(config, "failed", str(exc))
        except MemoryError as exc:
            record = outcome_record(config, "failed", f"out of memory (MemoryError) {exc}".strip())
        except Exception as exc:  # noqa: BLE001 - any crash of a cell becomes a failed record
            oom = _is_cuda_oom(exc)
            tb = traceback.format_exc().strip().splitlines()[-25:]
            record = outcome_record(config, "failed", first_line(exc), measurements={"traceback": tb})
        if oom and batch > 1 and retries < MAX_OOM_RETRIES:
            _free_cuda()
            batch = max(1, batch // 2)
            retries += 1
            continue
        break
    if record.status == "failed" and retries:
        record.error = f"{record.error} (after {retries} retr{'y' if retries == 1 else 'ies'} down to batch {batch})"
    sweep = dict(record.provenance.get("sweep") or {})
    sweep.update({"fingerprint": fingerprint(config), "skip": skip_kind or sweep.get("skip"),
                  "oom_retries": retries, "eval_batch_size": batch})
    record.provenance["sweep"] = sweep
    if write and store is not None:
        store.write(record)
    return record


# ------------------------------------------------------------------------------------------------
# the fresh-process entry point
# ------------------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGTERM this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(143)


def quiet_worker() -> None:
    """Silence library progress bars and warnings through their environment switches (read when they are
    imported), so a worker does not pay for importing datasets/transformers before its cell needs them."""
    import logging
    import warnings

    for k, v in (("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                 ("DATASETS_VERBOSITY", "error"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                 ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(k, v)
    for cat in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=cat)
    logging.getLogger("mteb").setLevel(logging.ERROR)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through ResultStore.write, which removes its temp file


def main(argv: list[str] | None = None) -> int:
    """Worker process: run one cell given as JSON and write its record; exit 0 when a record was written."""
    parser = argparse.ArgumentParser(prog="python -m compbench.bench.cell.worker")
    parser.add_argument("--results", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--import", dest="imports", action="append", default=[])
    parser.add_argument("config")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    _die_with_parent(args.parent_pid)

    quiet_worker()
    try:
        import_plugins(args.imports)
        config = replace(config_from_dict(json.loads(args.config)), fresh_process=True)
        record = execute_cell(config, args.results)
    except UsageError as exc:  # e.g. results directory not writable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"key": record.key, "status": record.status}))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    sys.exit(main())
