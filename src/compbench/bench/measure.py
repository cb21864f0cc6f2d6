"""All measurement lives here; methods never time themselves.

- Lookup throughput: the compressed module and the dense table are timed in the
  *same run* on the same ids, interleaved call by call (A, B, A, B, ...) so drift
  and background load hit both; after warm-up, ``iters`` samples each; median,
  p10, p90 and n of tokens/s, plus the ratio of the medians. On CUDA each call is
  bracketed by CUDA events and synchronised (the ids are placed on the device
  first, so no host-to-device copy is timed).
- Peak memory: CPU peak RSS of the process (``ru_maxrss``; the CLI runs each cell
  in a fresh process); CUDA peak allocated and reserved after a reset.
- Threads: :func:`apply_threads` sets torch's (and faiss') thread count; it is recorded.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from compbench.errors import UsageError


def available_cpus() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def apply_threads(threads: int) -> int:
    """Pin torch intra-op threads (and faiss' OpenMP threads) to ``threads``; returns it."""
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        import faiss  # noqa: PLC0415

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    return threads


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (error without a GPU), ``cuda:N`` or ``auto`` (cuda when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was requested but no CUDA device is available (use --device cpu or auto)")
        return torch.device(device)
    raise UsageError(f"unknown device '{device}' (valid: cpu, cuda, cuda:N, auto)")


def device_name(device: torch.device) -> str:
    """Human-readable device model (CPU model string or GPU name)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    import platform

    return platform.processor() or platform.machine()


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples: list[float]) -> dict[str, float]:
    """Median, p10, p90 and n of a list of samples."""
    return {
        "median": statistics.median(samples),
        "p10": _percentile(samples, 0.10),
        "p90": _percentile(samples, 0.90),
        "n": len(samples),
    }


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    if device.type == "cuda":
        def run(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1e3
        return run

    def run_cpu(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run_cpu


@torch.inference_mode()
def compare_lookup(candidate: torch.nn.Module, dense: torch.nn.Module, *, num_embeddings: int,
                   device: torch.device, batch: int = 64, seq: int = 128, warmup: int = 5, iters: int = 30,
                   seed: int = 0) -> dict[str, Any]:
    """Lookup throughput (tokens/s) of ``candidate`` and ``dense`` on the same ids, in the same run.

    Returns a dict with ``candidate`` and ``dense`` summaries (median/p10/p90/n of tokens/s),
    ``ratio`` = candidate median / dense median, and the workload.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, num_embeddings, (batch, seq), generator=g).to(device)
    candidate = candidate.to(device).eval()
    dense = dense.to(device).eval()
    timer = _timer(device)
    for _ in range(warmup):
        candidate(ids)
        dense(ids)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tc: list[float] = []
    td: list[float] = []
    for _ in range(iters):
        tc.append(timer(lambda: candidate(ids)))
        td.append(timer(lambda: dense(ids)))
    n_tok = ids.numel()
    cand = summarize([n_tok / max(t, 1e-12) for t in tc])
    den = summarize([n_tok / max(t, 1e-12) for t in td])
    return {
        "unit": "tokens/s",
        "candidate": cand,
        "dense": den,
        "ratio": cand["median"] / den["median"],
        "batch": batch,
        "seq": seq,
        "warmup": warmup,
    }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes; Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def current_rss_bytes() -> int:
    """Current resident set size (bytes), from /proc when available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover
        return peak_rss_bytes()


def reset_gpu_peak(device: torch.device) -> None:
    """Reset CUDA peak statistics (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak(device: torch.device) -> dict[str, int] | None:
    """CUDA peak allocated and reserved bytes since the last reset (None on CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return {
        "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
    }


class Stopwatch:
    """Wall-clock timer usable as a context manager (synchronises CUDA around the block)."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
