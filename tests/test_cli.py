"""The CLI end to end (a real cell in a fresh process) and its one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compbench.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "compbench", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_run_end_to_end_writes_record_and_json(tmp_path: Path) -> None:
    res = _cli("run", "--method", "quant-binary", "--budget", "10x", "--task", "fidelity", "--threads", "2",
               "--results", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["status"] == "ok" and rec["key"] == "posthoc/fidelity/quant-binary/10x/cpu-2t-s0"
    assert rec["budget"]["stored_bytes"] <= rec["budget"]["allowed_bytes"] == 4_688_179
    assert rec["measurements"]["memory"]["fresh_process"] is True
    assert rec["measurements"]["lookup"]["candidate"]["n"] == 30
    assert rec["provenance"]["packages"]["torch"].startswith("2.")
    path = tmp_path / "posthoc/fidelity/quant-binary/10x/cpu-2t-s0.json"
    assert path.is_file() and (tmp_path / "posthoc/fidelity/dense/1x/cpu-2t-s0.json").is_file()
    shown = CliRunner().invoke(main, ["show", str(path)])
    assert shown.exit_code == 0 and "quant-binary" in shown.output and "retention" in shown.output


def test_results_env_var_is_read_in_config(tmp_path: Path) -> None:
    env = dict(os.environ, COMPBENCH_RESULTS=str(tmp_path / "envres"))
    out = subprocess.run([sys.executable, "-c", "from compbench.config import default_results_dir; print(default_results_dir())"],
                         capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == str(tmp_path / "envres")


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", "--method", "svdd", "--budget", "10x"], 2, "did you mean 'svd'"),
        (["run", "--method", "svd", "--budget", "40"], 2, "invalid budget '40'"),
        (["run", "--method", "svd", "--budget", "0.5x"], 2, "must be >= 1"),
        (["run", "--method", "svd", "--budget", "10x", "--task", "stsbb"], 2, "did you mean 'stsb'"),
        (["run", "--method", "svd", "--budget", "10x", "--device", "cuda"], 2, "no CUDA device"),
        (["run", "--method", "svd", "--budget", "10x", "--threads", "0"], 2, "--threads must be >= 1"),
        (["run", "--method", "svd", "--budget", "10x", "--seed", "-1"], 2, "--seed must be >= 0"),
        (["run", "--method", "svd", "--budget", "10x", "--option", "nope=1"], 2, "has no option"),
        (["show", "/nonexistent/record.json"], 1, "no such record file"),
    ],
)
def test_bad_input_one_line_error(args: list[str], code: int, needle: str) -> None:
    if "--device" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    res = CliRunner().invoke(main, args)
    assert res.exit_code == code, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_unattainable_budget_names_smallest(tmp_path: Path) -> None:
    res = _cli("run", "--method", "quant-int8", "--budget", "40x", "--results", str(tmp_path))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "smallest budget it can meet is 3.91x" in lines[0]
    assert "Traceback" not in res.stderr


def test_malformed_record_show(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text("{")
    res = CliRunner().invoke(main, ["show", str(p)])
    assert res.exit_code == 1 and str(p) in res.output and "malformed JSON" in res.output


def test_list_commands() -> None:
    r = CliRunner()
    for what, needle in (("methods", "svd"), ("tasks", "stsb"), ("datasets", "sst2")):
        res = r.invoke(main, ["list", what])
        assert res.exit_code == 0 and needle in res.output
