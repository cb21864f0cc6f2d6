"""Stop a fit that runs past ``--max-fit-seconds`` and record it with the status ``timeout``.

A cell's fit (a method's ``compress`` / training, summed over its seeds) gets a deadline. At the deadline
:class:`FitWatchdog`:

1. interrupts the main thread (``_thread.interrupt_main``): Python-level loops (training epochs, OMP
   rounds, ...) stop at their next bytecode, and the lifecycle turns the interrupt into a ``timeout`` record
   through the normal path. ``interrupt_main`` only works while SIGINT has a Python handler; a process started
   in the background by a non-interactive shell (``cmd &``, ``nohup``) inherits SIGINT *ignored*, and the
   interrupt would then do nothing. So, for the length of the fit, the watchdog installs Python's
   ``default_int_handler`` when SIGINT is ignored or default (main thread only) and restores it afterwards;
   in that window a SIGINT sent to the process stops the fit as it would in a terminal;
2. if the main thread is still inside one long native call (a faiss or LAPACK routine holds no Python frame
   to interrupt) after :data:`GRACE_SECONDS`, and the process runs only this cell (``fresh_process``: the
   sweep's workers and ``compbench run``), it writes the ``timeout`` record itself, says so on stderr in one
   line and ends the process with exit code 1. In a shared process (the ``inline`` executor, tests) it never
   kills the process: the cell then stops when the native call returns.

The same limit bounds the two other long phases of a cell, each on its own clock (issue 34: bounded work
everywhere): the evaluation of each seed and the lookup timing; their ``timeout`` records name the phase ("the
evaluation ran past ..."). The default limit is :data:`compbench.config.DEFAULT_MAX_FIT_SECONDS` (one hour); ``0``
or ``None`` means no limit. A ``timeout`` record counts like ``failed`` in a sweep's exit code; a resumed sweep re-runs it only
when given a larger limit than the one it timed out under (re-running it under the same limit would time out
again).
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

GRACE_SECONDS = 30.0  # default; ``$COMPBENCH_FIT_GRACE_SECONDS`` overrides it (tests use a short one)


def grace_seconds() -> float:
    """Seconds between the interrupt and the hard stop."""
    try:
        return float(os.environ.get("COMPBENCH_FIT_GRACE_SECONDS", GRACE_SECONDS))
    except ValueError:
        return GRACE_SECONDS


def _sigint_raises() -> Any:
    """Make SIGINT raise ``KeyboardInterrupt`` in this (main) thread when it is ignored or default.

    Returns the handler to put back afterwards, or None when nothing was changed (a Python handler is
    installed already, or this is not the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGINT)
    if current not in (signal.SIG_IGN, signal.SIG_DFL):
        return None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return current


class FitTimeout(Exception):
    """Raised in the main thread when the fit passed its deadline."""


class FitWatchdog:
    """A context manager around the fit phase: a daemon timer that stops the fit at the deadline.

    Args:
        seconds: the limit (None or <= 0: no watchdog).
        hard_stop: write the record and exit the process when the interrupt is not honoured in time.
        on_hard_stop: called (from the timer thread) before the process exits; writes the timeout record.
        grace: seconds between the interrupt and the hard stop.
    """

    def __init__(self, seconds: float | None, *, hard_stop: bool = False,
                 on_hard_stop: Callable[[], None] | None = None, grace: float | None = None, what: str = "fit"):
        self.seconds = float(seconds) if seconds else None
        self.what = what  # the phase it guards, for the messages: "fit", "evaluation", "lookup timing"
        self.hard_stop = hard_stop
        self.on_hard_stop = on_hard_stop
        self.grace = grace_seconds() if grace is None else float(grace)
        self.expired = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = 0.0
        self._restore_sigint: Any = None

    def _watch(self) -> None:
        assert self.seconds is not None
        if self._done.wait(self.seconds):
            return
        self.expired = True
        _thread.interrupt_main()
        if not self.hard_stop or self._done.wait(self.grace):
            return
        try:
            if self.on_hard_stop is not None:
                self.on_hard_stop()
        finally:
            print(f"error: the {self.what} ran past --max-fit-seconds {self.seconds:g} s inside a native call; "
                  "recorded as timeout and stopped", file=sys.stderr, flush=True)
            os._exit(1)

    def __enter__(self) -> FitWatchdog:
        self.started_at = time.perf_counter()
        if self.seconds is not None:
            self._restore_sigint = _sigint_raises()
            self._thread = threading.Thread(target=self._watch, name="compbench-fit-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        if self._restore_sigint is not None:
            signal.signal(signal.SIGINT, self._restore_sigint)
            self._restore_sigint = None
        if self.expired and exc_type is KeyboardInterrupt:
            raise FitTimeout(self.message()) from None

    def message(self) -> str:
        """The record's error line."""
        return f"the {self.what} ran past --max-fit-seconds {self.seconds:g} s and was stopped"


def timeout_facts(seconds: float | None, elapsed: float) -> dict[str, Any]:
    """What a ``timeout`` record keeps under ``measurements.timeout``."""
    return {"max_fit_seconds": seconds, "elapsed_s": round(elapsed, 3)}


__all__ = ["GRACE_SECONDS", "FitTimeout", "FitWatchdog", "timeout_facts"]
