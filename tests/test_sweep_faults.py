"""Sweep faults and concurrency: crashing cells, a cell killed mid-write, SIGINT / SIGKILL of a sweep, and
concurrent writers. Cells use the fake runner (``test_sweep_fakes``) in real worker processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compbench.bench.results.record_store import ResultStore
from compbench.errors import RecordError

TESTS = Path(__file__).resolve().parent
SUITE = """name: faults
threads: 1
seeds: [0]
tasks: [posthoc/fidelity]
methods: [svd, quant-int2, quant-binary]
budgets: [8x]
"""
KEYS = {f"posthoc/fidelity/{m}/{b}/cpu-1t-s0" for m, b in
        (("dense", "1x"), ("svd", "8x"), ("quant-int2", "8x"), ("quant-binary", "8x"))}


def _env(**fault: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPBENCH_FAKE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env.update(fault)
    return env


def _cmd(suite: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "compbench", "sweep", str(suite), "--results", str(results),
            "--import", "test_sweep_fakes:install", "--no-progress", *extra]


def _summary(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):stdout.rindex("}") + 1])


def _resume(suite: Path, results: Path) -> dict:
    """Re-run the same sweep (inline: fast) and return its JSON summary."""
    res = subprocess.run(_cmd(suite, results, "--executor", "inline", "--json"), env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return _summary(res.stdout)


def _all_valid(results: Path) -> dict:
    good, bad = ResultStore(results).load_all()
    assert bad == [], bad
    return {r.key: r for r in good}


def _workers_of(results: Path) -> list[int]:
    """PIDs of live worker processes writing into ``results`` (read from /proc; nothing is killed here)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().split()[2]
        except OSError:
            continue
        if b"compbench.bench.cell.worker" in cmd and str(results).encode() in b" ".join(cmd) and state != "Z":
            out.append(int(d.name))
    return out


@pytest.fixture()
def suite(tmp_path: Path) -> Path:
    p = tmp_path / "faults.yaml"
    p.write_text(SUITE)
    return p


@pytest.mark.slow
def test_crashing_cells_and_a_cell_killed_mid_write(tmp_path: Path, suite: Path) -> None:
    """A segfault, an exit and a SIGKILL during the record write each become a failed record; the sweep goes on;
    no half-written record is ever loaded; re-running completes exactly the failed cells."""
    results = tmp_path / "r"
    res = subprocess.run(_cmd(suite, results, "--jobs", "3", "--json"), capture_output=True, text=True, timeout=300,
                         env=_env(COMPBENCH_FAKE_CRASH="svd:segv,quant-binary:exit",
                                  COMPBENCH_FAKE_DIE_IN_WRITE="quant-int2"))
    assert res.returncode == 1, res.stderr
    assert "3 cell(s) failed" in res.stderr
    recs = _all_valid(results)
    assert set(recs) == KEYS
    assert recs["posthoc/fidelity/dense/1x/cpu-1t-s0"].status == "ok"
    assert recs["posthoc/fidelity/svd/8x/cpu-1t-s0"].error == "worker killed by SIGSEGV"
    assert recs["posthoc/fidelity/quant-binary/8x/cpu-1t-s0"].error.startswith("worker exited with code 3")
    assert recs["posthoc/fidelity/quant-int2/8x/cpu-1t-s0"].error == "worker killed by SIGKILL (out of memory?)"
    # the killed writer left its half-written temp file, which is never read as a record
    leftovers = list(results.rglob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".cpu-1t-s0.json.")
    with pytest.raises(json.JSONDecodeError):
        json.loads(leftovers[0].read_text())
    summary = _resume(suite, results)
    assert summary["ran"] == 3 and summary["cached"] == 1 and summary["statuses"] == {"ok": 3}
    recs = _all_valid(results)
    assert set(recs) == KEYS and {r.status for r in recs.values()} == {"ok"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_sweep_resumes_exactly_the_missing_cells(tmp_path: Path, suite: Path, sig: signal.Signals) -> None:
    results = tmp_path / "r"
    # the sweep gets SIGINT's default disposition, as in a terminal, however pytest itself was started (a run
    # started in the background by a non-interactive shell, `nohup make test &`, inherits SIGINT *ignored*, and
    # a sweep that inherits that rightly ignores `kill -INT`)
    proc = subprocess.Popen(_cmd(suite, results, "--jobs", "1"), env=_env(COMPBENCH_FAKE_SLEEP="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(results.rglob("*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)  # the next cell is running now
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "re-run the same command" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    for _ in range(100):  # workers die with the sweep (SIGTERM through PR_SET_PDEATHSIG)
        if not _workers_of(results):
            break
        time.sleep(0.1)
    assert _workers_of(results) == []
    before = _all_valid(results)
    assert 1 <= len(before) < len(KEYS) and all(r.status == "ok" for r in before.values())
    assert not list(results.rglob(".*.tmp"))  # a terminated worker removes its temp file
    summary = _resume(suite, results)
    assert summary["ran"] == len(KEYS) - len(before) and summary["cached"] == len(before)
    after = _all_valid(results)
    assert set(after) == KEYS and all(after[k].provenance["created_at"] == before[k].provenance["created_at"]
                                      for k in before)


# -- concurrency ------------------------------------------------------------------------------------
def _writer(root: str, worker: int, rounds: int) -> None:
    from test_compare import make

    store = ResultStore(root)
    for i in range(rounds):
        for m in ("svd", "quant-int2", "quant-binary", "dense", "pq"):
            rec = make(m, main_score=round(worker + i / 1000, 6))
            rec.provenance["writer"] = worker
            store.write(rec)


def test_concurrent_writers_never_interleave_or_lose_records(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    store = ResultStore(tmp_path)
    reads = 0
    while any(p.is_alive() for p in procs):
        for path in store.paths():
            try:
                rec = store.read(path.relative_to(tmp_path).with_suffix("").as_posix())
            except RecordError as exc:  # pragma: no cover - the failure this test looks for
                pytest.fail(f"read a partial record: {exc}")
            assert rec.metrics.main == pytest.approx(rec.provenance["writer"] + 0.039, abs=0.04)
            reads += 1
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    recs = _all_valid(tmp_path)
    assert len(recs) == 5 and not list(tmp_path.rglob(".*.tmp"))
    assert all(r.metrics.main == pytest.approx(r.provenance["writer"] + 0.039) for r in recs.values())  # last round
    assert reads > 0


def test_two_sweeps_into_the_same_folder(tmp_path: Path, suite: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(SUITE.replace("methods: [svd, quant-int2, quant-binary]", "methods: [svd, quant-fp16]")
                     .replace("budgets: [8x]", "budgets: [8x, 2x]"))
    results = tmp_path / "r"
    procs = [subprocess.Popen(_cmd(s, results, "--executor", "inline", "--json"), env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (suite, other)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    recs = _all_valid(results)
    expected = KEYS | {"posthoc/fidelity/svd/2x/cpu-1t-s0", "posthoc/fidelity/quant-fp16/8x/cpu-1t-s0",
                       "posthoc/fidelity/quant-fp16/2x/cpu-1t-s0"}
    assert set(recs) == expected
    assert recs["posthoc/fidelity/quant-fp16/8x/cpu-1t-s0"].status == "skipped"
    assert not list(results.rglob(".*.tmp"))


def test_a_record_the_sweep_cannot_read_is_kept_not_replaced_by_a_failure(tmp_path: Path, suite: Path) -> None:
    """A worker running other code than its sweep writes a record the sweep cannot validate: the sweep reports the
    cell as failed but keeps the worker's file (a result is never replaced by a failure)."""
    results = tmp_path / "r"
    res = subprocess.run(_cmd(suite, results, "--json"), capture_output=True, text=True, timeout=300,
                         env=_env(COMPBENCH_FAKE_FUTURE_RECORD="svd"))
    assert res.returncode == 1 and "cannot read" in res.stderr and "was kept" in res.stderr
    doc = json.loads((results / "posthoc/fidelity/svd/8x/cpu-1t-s0.json").read_text())
    assert doc["status"] == "ok" and doc["field_from_a_newer_compbench"] == 1
