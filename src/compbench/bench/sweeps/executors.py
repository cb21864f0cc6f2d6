"""Executors: where a sweep's cells run. All of them write results through the same :class:`ResultStore`.

- :class:`LocalExecutor` (``--executor local --jobs N``): up to N cells at a time, each in its
  own fresh Python process (``python -m compbench.bench.cell.worker``), so peak RSS is per cell and
  a cell that crashes (exception, segfault, OOM kill) becomes a ``failed`` record while the
  sweep goes on. Workers run in their own session (a terminal Ctrl-C reaches only the sweep,
  which then stops them) and die with the sweep (``PR_SET_PDEATHSIG``).
- :class:`RayExecutor` (``--executor ray [--address ADDR]``): each cell is a Ray task asking
  for ``num_cpus=threads`` (and ``num_gpus=1`` on CUDA), run in a fresh Ray worker process
  (``max_calls=1``); the task returns the record and the driver writes it into the store.
  Without ``--address`` a local Ray instance is started with this machine's CPUs.
- :class:`InlineExecutor` (``--executor inline``): cells run one after another in this
  process, sharing the loaded encoder -- fastest for small sweeps and debugging, but peak
  RSS is not per cell and a hard crash stops the sweep.

``run(cells, store, on_done, on_start)`` calls ``on_done(cell, record, seconds)`` as each cell
finishes; on KeyboardInterrupt it stops the running cells (their records are simply missing,
never half-written) and re-raises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compbench.bench.cell.outcomes import outcome_record
from compbench.bench.cell.plugins import import_plugins
from compbench.bench.cell.worker import config_from_dict, execute_cell, quiet_worker
from compbench.bench.measure.core import CONCURRENT_CELLS_ENV, EXECUTOR_ENV, available_cpus, concurrency_info
from compbench.bench.results.record import Record, to_json
from compbench.bench.results.record_store import ResultStore
from compbench.errors import RecordError, UsageError

OnDone = Callable[[Any, Record, float], None]
OnStart = Callable[[Any], None]


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:  # pragma: no cover
        return f"signal {-rc}"


def _tail(path: Path, lines: int = 15) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]


class LocalExecutor:
    """A pool of ``jobs`` fresh worker processes (see the module docstring)."""

    def __init__(self, jobs: int = 1, *, imports: Sequence[str] = (), cell_timeout: float | None = None,
                 python: Sequence[str] | None = None, poll_interval: float = 0.05):
        if jobs < 1:
            raise UsageError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.imports = list(imports)
        self.cell_timeout = cell_timeout
        self.python = list(python) if python else [sys.executable]
        self.poll_interval = poll_interval

    def _command(self, cell: Any, store: ResultStore) -> list[str]:
        cmd = [*self.python, "-m", "compbench.bench.cell.worker", "--results", str(store.root.resolve()),
               "--parent-pid", str(os.getpid())]
        for m in self.imports:
            cmd += ["--import", m]
        return [*cmd, json.dumps(cell.config.to_dict(), default=str)]

    def _env(self) -> dict[str, str]:
        """The worker's environment: this one, plus the executor and how many cells may run at once
        (recorded in every record, :func:`compbench.bench.measure.core.concurrency_info`).

        The count is ``jobs``, or more when ``COMPBENCH_CONCURRENT_CELLS`` is already set higher: a user who runs
        two sweeps side by side on one machine declares it there, so neither sweep records its cells as quiet.
        """
        cells = max(self.jobs, concurrency_info()["concurrent_cells"])  # one parser: a bad value is one clear line
        return {**os.environ, EXECUTOR_ENV: "local", CONCURRENT_CELLS_ENV: str(cells)}

    def run(self, cells: Sequence[Any], store: ResultStore, on_done: OnDone, on_start: OnStart | None = None) -> None:
        """Run ``cells`` with at most ``jobs`` processes at a time."""
        pending = deque(cells)
        running: dict[subprocess.Popen[bytes], tuple[Any, float, int, Path]] = {}
        logdir = Path(tempfile.mkdtemp(prefix="compbench-sweep-"))
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    cell = pending.popleft()
                    log = logdir / f"{len(running)}-{time.monotonic_ns()}.log"
                    with open(log, "wb") as fh:
                        proc = subprocess.Popen(self._command(cell, store), stdout=fh, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True,
                                                env=self._env())
                    running[proc] = (cell, time.perf_counter(), time.time_ns(), log)
                    if on_start:
                        on_start(cell)
                finished = [p for p in running if p.poll() is not None]
                now = time.perf_counter()
                for p, (_cell, t0, _, _) in list(running.items()):
                    if p not in finished and self.cell_timeout is not None and now - t0 > self.cell_timeout:
                        self._stop(p)
                        finished.append(p)
                for p in finished:
                    cell, t0, start_ns, log = running.pop(p)
                    seconds = time.perf_counter() - t0
                    record = self._collect(p, cell, store, start_ns, log, seconds)
                    try:
                        log.unlink()
                    except OSError:
                        pass
                    on_done(cell, record, seconds)
                if not finished:
                    time.sleep(self.poll_interval)
        except BaseException:
            for p in list(running):
                self._stop(p)
            raise
        finally:
            for f in logdir.glob("*"):
                try:
                    f.unlink()
                except OSError:
                    pass
            try:
                logdir.rmdir()
            except OSError:
                pass

    @staticmethod
    def _stop(p: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        """SIGTERM the worker's process group (the worker removes its temp file), SIGKILL after ``grace``."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _collect(self, p: subprocess.Popen[bytes], cell: Any, store: ResultStore, start_ns: int, log: Path,
                 seconds: float) -> Record:
        rc = p.returncode
        path = store.path_for(cell.key)
        fresh = path.is_file() and path.stat().st_mtime_ns >= start_ns
        unreadable: str | None = None
        if fresh:
            try:
                return store.read(cell.key)  # written by the worker (even if it crashed while exiting)
            except RecordError as exc:
                unreadable = str(exc)
        tail = _tail(log)
        if unreadable is not None and rc == 0:
            # the worker wrote its record atomically, but this process cannot validate it (typically the code
            # changed while the sweep ran): keep the worker's file, never replace a result by a failure
            return outcome_record(cell.config, "failed", f"the worker wrote {path}, which this sweep cannot read "
                                  f"({(unreadable.splitlines() or [''])[0]}); was compbench changed during the sweep? The file "
                                  "was kept", key=cell.key, measurements={"worker_output_tail": tail})
        timed_out = self.cell_timeout is not None and seconds > self.cell_timeout
        if timed_out:
            error = f"timed out after {self.cell_timeout:g} s (--cell-timeout); the worker was stopped"
        elif rc == 0:
            error = f"worker exited without writing the record {path}"
        elif rc < 0:
            error = f"worker killed by {_signal_name(rc)}" + (" (out of memory?)" if rc == -signal.SIGKILL else "")
        else:
            last = next((ln for ln in reversed(tail) if ln.startswith("error:")), tail[-1] if tail else "")
            error = f"worker exited with code {rc}" + (f": {last}" if last else "")
        record = outcome_record(cell.config, "failed", error, key=cell.key,
                                measurements={"worker_output_tail": tail, "wall_time_s": seconds})
        store.write(record)
        return record


class InlineExecutor:
    """Cells one after another in this process, sharing loaded models (see the module docstring)."""

    def __init__(self, *, imports: Sequence[str] = ()):
        import_plugins(imports)
        self.cache: dict[str, Any] = {}

    def run(self, cells: Sequence[Any], store: ResultStore, on_done: OnDone, on_start: OnStart | None = None) -> None:
        """Run ``cells`` sequentially."""
        for cell in cells:
            if on_start:
                on_start(cell)
            t0 = time.perf_counter()
            record = execute_cell(cell.config, store.root, cache=self.cache)
            on_done(cell, record, time.perf_counter() - t0)


def _ray_cell(config: dict[str, Any], root: str, imports: list[str], pythonpath: list[str]) -> str:
    """Body of a Ray task: one cell in a fresh Ray worker; returns the record as JSON text."""
    from dataclasses import replace

    for p in reversed(pythonpath):
        if p not in sys.path:
            sys.path.insert(0, p)

    quiet_worker()
    import_plugins(imports)
    record = execute_cell(replace(config_from_dict(config), fresh_process=True), root, write=False)
    return to_json(record)


def import_ray() -> Any:
    """``import ray`` or a UsageError telling how to install the extra."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]')") from exc
    return ray


class RayExecutor:
    """Cells as Ray tasks with their resource requests (see the module docstring)."""

    def __init__(self, address: str | None = None, *, imports: Sequence[str] = (), num_cpus: int | None = None,
                 init_kwargs: dict[str, Any] | None = None):
        self.ray = import_ray()
        self.address = address
        self.imports = list(imports)
        self.num_cpus = num_cpus
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False

    def _ensure_init(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return

        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}

        env = {k: v for k, v in os.environ.items()
               if k.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_", "COMPBENCH_")) or k == "PYTHONPATH"}
        # Ray packs as many cells as the node's CPUs allow (each asks for its threads): record that bound
        env[EXECUTOR_ENV] = "ray"
        env[CONCURRENT_CELLS_ENV] = str(max(1, int(self.num_cpus or available_cpus())))
        kw.setdefault("runtime_env", {"env_vars": env})
        try:
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=self.num_cpus or available_cpus(), **kw)
        except ConnectionError as exc:
            raise UsageError(f"cannot connect to the Ray cluster at {self.address}: {exc}") from exc
        self._started = True

    def close(self) -> None:
        """Shut down the Ray instance this executor started (a cluster given by --address is left running)."""
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False

    def run(self, cells: Sequence[Any], store: ResultStore, on_done: OnDone, on_start: OnStart | None = None) -> None:
        """Submit every cell as a Ray task; write each record as it arrives."""
        ray = self.ray
        self._ensure_init()
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        remote = ray.remote(max_calls=1)(_ray_cell)  # a fresh worker process per cell
        pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        root = str(store.root.resolve())
        refs: dict[Any, tuple[Any, float]] = {}
        try:
            for cell in cells:
                need_cpu = int(cell.config.threads or 1)
                need_gpu = 1 if cell.config.device.startswith("cuda") else 0
                if need_cpu > cpus or need_gpu > gpus:
                    rec = outcome_record(cell.config, "failed", f"infeasible on this Ray cluster: the cell needs "
                                         f"{need_cpu} CPU / {need_gpu} GPU, the cluster has {cpus:g} CPU / {gpus:g} GPU",
                                         key=cell.key)
                    store.write(rec)
                    on_done(cell, rec, 0.0)
                    continue
                ref = remote.options(num_cpus=need_cpu, num_gpus=need_gpu, max_retries=0,
                                     name=f"compbench:{cell.key}").remote(cell.config.to_dict(), root, self.imports,
                                                                         pythonpath)
                refs[ref] = (cell, time.perf_counter())
                if on_start:
                    on_start(cell)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in ready:
                    cell, t0 = refs.pop(ref)
                    seconds = time.perf_counter() - t0
                    try:
                        record = Record.model_validate(json.loads(ray.get(ref)))
                    except ray.exceptions.RayError as exc:
                        text = str(exc).strip().splitlines()
                        msg = next((ln for ln in reversed(text) if ln.strip()), type(exc).__name__)
                        record = outcome_record(cell.config, "failed", f"ray: {type(exc).__name__}: {msg.strip()}",
                                                key=cell.key, measurements={"wall_time_s": seconds})
                    store.write(record)
                    on_done(cell, record, seconds)
        except BaseException:
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while stopping
                    pass
            self.close()
            raise
