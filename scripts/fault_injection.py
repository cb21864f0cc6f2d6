#!/usr/bin/env python
"""Fault injection: kill a running sweep at random moments, resume it, and check that nothing was lost.

Each trial starts a small sweep (real ``compbench sweep`` processes and real worker processes; the cells run
the real methods on a small table through the fast stand-in runner of ``tests/test_sweep_fakes.py``, so a
sweep takes seconds, not minutes) into a fresh results folder, and at a random moment

- ``sigkill``: SIGKILLs the sweep process (its workers get SIGTERM from the kernel and stop);
- ``sigkill-all``: SIGKILLs the sweep and every worker at once (an OOM killer or a power cut);
- ``sigint``: sends SIGINT (Ctrl-C) to the sweep, which stops its workers and exits 130;
- ``die-in-write`` (only with ``--modes``): no signal from outside; one worker SIGKILLs itself half-way through
  writing its record (``COMPBENCH_FAKE_DIE_IN_WRITE``), leaving a half-written temp file; the sweep records the
  cell as ``failed`` and finishes the others.

It then checks the folder as the kill left it (every record file valid, none half-written), re-runs the
same command to completion, and checks: every cell has exactly one record, at its own path; no record
that existed after the kill was lost or rewritten; no record is malformed; the resume ran exactly the
missing cells. Temp files left by a process killed mid-write are counted; they are never read as records
(``ResultStore.paths`` skips dot-files) and are listed separately.

    PYTHONPATH=tests python scripts/fault_injection.py [--trials 20] [--seed 0] [--jobs 2]

Exit status 0 when every trial passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from compbench.bench.results.record import Record  # noqa: E402
from compbench.bench.results.record_store import ResultStore, load_record  # noqa: E402
from compbench.errors import RecordError  # noqa: E402
from test_sweep_faults import _cmd, _env, _summary, _workers_of  # noqa: E402

SUITE = """name: fault-injection
threads: 1
seeds: [0]
tasks: [posthoc/fidelity]
methods: [svd, quant-int2, quant-binary, pq, quant-int8]
budgets: [8x, 12x, 16x]
"""
MODES = ("sigkill", "sigkill", "sigkill-all", "sigint")  # drawn uniformly: half the trials plain SIGKILL
METHODS = ("svd", "quant-int2", "quant-binary", "pq")  # the suite's methods that run


@dataclass
class Trial:
    """What one kill-and-resume did."""

    n: int
    mode: str
    kill_at: float
    exit_code: int | None = None
    after_kill: int = 0  # valid record files right after the kill
    corrupt_after_kill: int = 0
    temp_files: int = 0
    resumed: int = 0  # cells the resume ran
    final: int = 0
    lost: int = 0  # records present after the kill but missing or changed after the resume
    corrupt: int = 0
    duplicates: int = 0  # files whose record key is not their path, or keys seen twice
    missing: int = 0  # expected cells without a record at the end
    resume_exact: bool = True
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.corrupt or self.corrupt_after_kill or self.duplicates or self.missing
                    or not self.resume_exact or self.problems)


def record_files(results: Path) -> dict[str, bytes]:
    """Every record file (dot-files excluded, as the store does) -> its bytes."""
    return {str(p.relative_to(results)): p.read_bytes() for p in ResultStore(results).paths()}


def check_folder(results: Path) -> tuple[dict[str, Record], list[str], int, int]:
    """(valid records by key, load problems, records stored away from their key's path or twice, temp files)."""
    store = ResultStore(results)
    by_key: dict[str, Record] = {}
    problems: list[str] = []
    misplaced = 0
    for path in store.paths():
        try:
            rec = load_record(path)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        if store.path_for(rec.key) != path or rec.key in by_key:
            misplaced += 1
        by_key[rec.key] = rec
    temps = sum(1 for p in results.rglob(".*") if p.is_file() and p.name.endswith(".tmp"))
    return by_key, problems, misplaced, temps


def run_to_end(suite: Path, results: Path, jobs: int, env: dict[str, str]) -> tuple[int, dict]:
    res = subprocess.run(_cmd(suite, results, "--jobs", str(jobs), "--json"), env=env, capture_output=True, text=True,
                         timeout=900)
    if "{" not in res.stdout:
        raise RuntimeError(f"sweep printed no summary (exit {res.returncode}): {res.stderr[-2000:]}")
    return res.returncode, _summary(res.stdout)


def kill_all(proc: subprocess.Popen, results: Path) -> None:
    """SIGKILL the sweep and its workers at the same moment."""
    workers = _workers_of(results)
    for pid in [proc.pid, *workers]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_workers_gone(results: Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _workers_of(results):
            return True
        time.sleep(0.1)
    return False


def one_trial(n: int, mode: str, kill_at: float, suite: Path, results: Path, expected: set[str], jobs: int,
              env: dict[str, str]) -> Trial:
    t = Trial(n=n, mode=mode, kill_at=kill_at)
    first_env = dict(env, COMPBENCH_FAKE_DIE_IN_WRITE=METHODS[n % len(METHODS)]) if mode == "die-in-write" else env
    proc = subprocess.Popen(_cmd(suite, results, "--jobs", str(jobs)), env=first_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    if mode != "die-in-write":
        time.sleep(kill_at)
    if mode != "die-in-write" and proc.poll() is None:
        if mode == "sigint":
            proc.send_signal(signal.SIGINT)
        elif mode == "sigkill":
            proc.send_signal(signal.SIGKILL)
        else:
            kill_all(proc, results)
    _, err = proc.communicate(timeout=120)
    t.exit_code = proc.returncode
    if mode == "sigint" and proc.returncode not in (130, 0, 1):
        t.problems.append(f"SIGINT gave exit {proc.returncode}: {err.strip().splitlines()[-1:]}")
    if not wait_workers_gone(results):
        t.problems.append("orphan workers outlived the sweep")
    before_files = record_files(results)
    before, bad, misplaced, t.temp_files = check_folder(results)
    t.after_kill, t.corrupt_after_kill = len(before), len(bad)
    t.problems += [f"after kill: {b}" for b in bad]
    t.problems += [f"after kill: {misplaced} misplaced record(s)"] if misplaced else []
    rc, summary = run_to_end(suite, results, jobs, env)
    if rc != 0:
        t.problems.append(f"resume exit {rc}: failed {summary.get('failed')}")
    after_files = record_files(results)
    final, bad, misplaced, _ = check_folder(results)
    t.final, t.corrupt = len(final), len(bad)
    t.duplicates = misplaced + len(set(final) - expected)  # a cell stored twice / away from its path, or a stray cell
    t.missing = len(expected - set(final))
    # lost: a whole, non-failed record present after the kill that is gone or rewritten after the resume
    keep = {str(ResultStore(results).path_for(k).relative_to(results)) for k, r in before.items() if r.status != "failed"}
    t.lost = sum(1 for p in keep if after_files.get(p) != before_files[p])
    t.resumed = int(summary.get("ran", 0)) + int(summary.get("skipped_known", 0))
    t.resume_exact = t.resumed == len(expected) - len(keep)
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times and modes")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes of the sweep")
    ap.add_argument("--sleep", type=float, default=0.3, help="seconds every cell sleeps (widens the kill window)")
    ap.add_argument("--keep", action="store_true", help="keep the results folders")
    ap.add_argument("--modes", default=",".join(sorted(set(MODES))),
                    help="comma-separated kill modes to draw from: sigkill, sigkill-all, sigint, die-in-write")
    args = ap.parse_args(argv)
    # a shell starts background jobs with SIGINT ignored, and children inherit that: restore the default so the
    # sweeps started here turn SIGINT into KeyboardInterrupt as they do in a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(args.seed)
    modes = [m for m in MODES if m in args.modes.split(",")] + (["die-in-write"] if "die-in-write" in args.modes else [])
    if not modes:
        ap.error(f"--modes: none of {args.modes!r} is sigkill, sigkill-all, sigint or die-in-write")
    work = Path(tempfile.mkdtemp(prefix="compbench-faults-"))
    suite = work / "suite.yaml"
    suite.write_text(SUITE)
    env = _env(COMPBENCH_FAKE_SLEEP=str(args.sleep))

    t0 = time.monotonic()
    rc, summary = run_to_end(suite, work / "baseline", args.jobs, env)
    duration = time.monotonic() - t0
    expected = set(check_folder(work / "baseline")[0])
    print(f"baseline sweep: {summary['cells']} cells ({summary['ran']} run, {summary['skipped_known']} skipped) "
          f"in {duration:.1f} s, exit {rc}; {len(expected)} records")
    if rc != 0 or not expected:
        print("error: the baseline sweep did not complete", file=sys.stderr)
        return 1

    trials = []
    for n in range(1, args.trials + 1):
        mode = rng.choice(modes)
        kill_at = round(rng.uniform(0.5, duration * 0.95), 2)
        trial = one_trial(n, mode, kill_at, suite, work / f"trial-{n:02d}", expected, args.jobs, env)
        trials.append(trial)
        print(f"trial {n:2d} {mode:11s} at {kill_at:5.2f}s: exit {trial.exit_code}, {trial.after_kill:2d} records after "
              f"the kill ({trial.temp_files} temp), resume ran {trial.resumed:2d}, final {trial.final}/{len(expected)}, "
              f"lost {trial.lost}, corrupt {trial.corrupt + trial.corrupt_after_kill}, dup {trial.duplicates}, "
              f"missing {trial.missing}{'' if trial.ok else '  FAIL ' + '; '.join(trial.problems)}", flush=True)

    print()
    print("| mode | trials | records after kill (min-max) | temp files left | lost | corrupt | duplicates | missing "
          "| resume ran exactly the missing cells |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in sorted({t.mode for t in trials}) + ["all"]:
        ts = [t for t in trials if mode in ("all", t.mode)]
        print(f"| {mode} | {len(ts)} | {min(t.after_kill for t in ts)}-{max(t.after_kill for t in ts)} of {len(expected)} "
              f"| {sum(t.temp_files for t in ts)} | {sum(t.lost for t in ts)} "
              f"| {sum(t.corrupt + t.corrupt_after_kill for t in ts)} | {sum(t.duplicates for t in ts)} "
              f"| {sum(t.missing for t in ts)} | {sum(t.resume_exact for t in ts)}/{len(ts)} |")
    failed = [t for t in trials if not t.ok]
    print(f"\n{len(trials) - len(failed)}/{len(trials)} trials passed; {len(expected)} cells per sweep; "
          f"work folder {work}{'' if args.keep else ' (removed)'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
