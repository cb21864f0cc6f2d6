"""User runs leave the committed leaderboard alone (issue 18, part 4).

``compbench run`` / ``sweep`` / ``mteb`` write to ``--results``, else ``$COMPBENCH_RESULTS``, else
``results/local/`` (gitignored; a ResultStore reads only its track folders, so the committed leaderboard
``results/<track>/...`` never sees it). ``compbench report`` reads the committed ``results/`` by default.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import compbench.config as config
from compbench.cli import main

REPO = Path(__file__).resolve().parents[1]
# the cheapest real cell: train track, bag-of-embeddings, d = 16, 32 examples, 2 optimiser steps
TINY_TRAIN = ["run", "--track", "train", "--method", "hashing", "--budget", "10x", "--task", "trec", "--threads", "1",
              "--backbone", "bag", "--d-model", "16", "--max-train-samples", "32", "--max-eval-samples", "32",
              "--max-steps", "2"]


@pytest.fixture()
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if COMPBENCH_RESULTS was not set when compbench was imported."""
    monkeypatch.setattr(config, "ENV_RESULTS", None)


def test_defaults(no_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.default_results_dir() == Path("results/local")
    assert config.leaderboard_results_dir() == Path("results")
    monkeypatch.setattr(config, "ENV_RESULTS", "/tmp/mine")
    assert config.default_results_dir() == config.leaderboard_results_dir() == Path("/tmp/mine")


def test_results_local_is_gitignored() -> None:
    """``results/local/`` is ignored by the repository's .gitignore (so ``make demo`` leaves git status clean)."""
    res = subprocess.run(["git", "check-ignore", "-q", "results/local/posthoc/stsb/svd/10x/cpu-2t-s0.json"],
                         cwd=REPO, capture_output=True)
    if res.returncode == 128:  # not a git checkout (an sdist): nothing to check
        pytest.skip("not a git checkout")
    assert res.returncode == 0, "results/local/ must be gitignored"
    committed = subprocess.run(["git", "check-ignore", "-q", "results/posthoc/stsb/svd/10x/cpu-1t-s0.json"], cwd=REPO)
    assert committed.returncode == 1, "the committed leaderboard must not be ignored"


def test_run_writes_under_results_local_by_default(no_env: None, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A real (tiny) cell run from a checkout-like folder lands in results/local/, never in results/<track>/."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()  # like a checkout: the committed leaderboard folder exists
    res = CliRunner().invoke(main, TINY_TRAIN)
    assert res.exit_code == 0, res.output
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json") if ".cache" not in p.parts)
    assert written and all(w.startswith("results/local/train/trec") for w in written), written  # (+ its dense ref)
    assert any(w.endswith("/hashing/10x/cpu-1t-s0.json") for w in written), written
    assert not (tmp_path / "results" / "train").exists()
    assert str(Path("results/local")) in res.output.replace("\n", "")  # the summary names the record's path


def test_dry_run_names_results_local_and_writes_nothing(no_env: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", "--method", "svd", "--budget", "10x", "--threads", "1", "--dry-run",
                                    "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["record"] == str(Path("results/local/posthoc/stsb/svd/10x/cpu-1t-s0.json"))
    assert plan["allowed_bytes"] == 4_688_179 and plan["method_config"] == {"rank": 37}
    assert not any(tmp_path.iterdir())  # no folder, no probe file, no record
    explicit = CliRunner().invoke(main, ["run", "--method", "svd", "--budget", "10x", "--threads", "1", "--dry-run",
                                         "--json", "--results", "results"])
    assert json.loads(explicit.stdout)["record"] == str(Path("results/posthoc/stsb/svd/10x/cpu-1t-s0.json"))
