"""The CLI end to end (a real cell in a fresh process); bad input is in tests/test_bad_input.py."""

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


@pytest.mark.slow  # a real STS-B cell through the CLI (about 2 minutes on a busy machine)
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


# Bad input (one line on stderr, exit 2 / 1, no traceback) is tested in tests/test_bad_input.py.


def test_list_commands() -> None:
    r = CliRunner()
    for what, needle in (("methods", "svd"), ("tasks", "stsb"), ("datasets", "sst2")):
        res = r.invoke(main, ["list", what])
        assert res.exit_code == 0 and needle in res.output


def test_list_methods_is_compact_and_a_name_shows_the_whole_card() -> None:
    from click.testing import CliRunner

    from compbench.cli import main

    res = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["list", "methods"])
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    assert "compbench list methods NAME" in res.output
    res = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["list", "methods", "pq"])
    assert res.exit_code == 0 and "-o codebook_dtype" in res.output and "Jegou" in res.output
    res = CliRunner().invoke(main, ["list", "methods", "pqq"])
    assert res.exit_code == 2 and "did you mean" in res.output
    res = CliRunner().invoke(main, ["list", "tasks", "stsb"])
    assert res.exit_code == 2 and "for methods only" in res.output


def test_the_record_panel_shows_the_config_in_one_line() -> None:
    from compbench.cli.run_cmd import one_line_config

    cfg = {"anchors": 512, "slots": 4, "fit_history": [1, 2, 3], "nested": {"a": 1}, "name": "x" * 200}
    line = one_line_config(cfg)
    assert "\n" not in line and len(line) <= 100 and "fit_history" not in line and line.startswith('{"anchors": 512')
