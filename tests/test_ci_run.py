"""``.ci/run`` runs and reports every step even when one fails (issue 35): a failing test step still lets the
regression gate run and print its result, and the script then exits 1 naming the failed step."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ci(**cmds: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI_SLOW_CMD": "true", **cmds}
    return subprocess.run(["bash", str(REPO / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_a_failing_test_step_does_not_hide_the_gate() -> None:
    proc = _ci(CI_BROWSER_CMD="true", CI_TEST_CMD="echo '1 failed, 9 passed'; exit 1",
               CI_GATE_CMD="echo 'gate: no regression'")
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout
    assert "== ci: lint and tests (make test): FAILED with exit 1" in out
    assert "gate: no regression" in out and "== ci: regression gate (scripts/ci-bench.sh): ok" in out
    assert out.strip().splitlines()[-1] == "== ci: FAILED: lint and tests (make test)"


def test_all_steps_passing_exits_0() -> None:
    proc = _ci(CI_BROWSER_CMD="true", CI_TEST_CMD="true", CI_GATE_CMD="true")
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "== ci: every step passed"


def test_a_failing_gate_fails_ci_after_passing_tests() -> None:
    proc = _ci(CI_BROWSER_CMD="true", CI_TEST_CMD="true", CI_GATE_CMD="echo regression; exit 1")
    assert proc.returncode == 1 and "FAILED: regression gate" in proc.stdout.strip().splitlines()[-1]


def test_the_slow_step_runs_and_fails_ci_on_its_own() -> None:
    """The end-to-end tests marked slow are their own step (make test-slow), run after the fast suite."""
    proc = _ci(CI_BROWSER_CMD="true", CI_TEST_CMD="true", CI_SLOW_CMD="echo '1 failed'; exit 1", CI_GATE_CMD="true")
    assert proc.returncode == 1, proc.stdout
    assert "== ci: slow end-to-end tests (make test-slow): FAILED with exit 1" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "== ci: FAILED: slow end-to-end tests (make test-slow)"
