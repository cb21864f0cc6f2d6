"""Outside methods are first-class (issue 33): the example package of docs/extending.md is pip-installed (into a
temporary folder on PYTHONPATH, so the test never changes the environment) and then found through its
``compbench.methods`` entry point by ``list``, ``run`` and ``compbench.testing.check_method``; ``--import`` and
a suite's ``imports:`` load a method from a module or a ``.py`` file that is not installed at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compbench.testing import MethodCheckError, check_method

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "toy_method"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install docs/examples/toy_method`` into a folder of its own (no build isolation: offline)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    assert (target / "toy_method" / "__init__.py").is_file()
    return target


def _env(path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from compbench.cli import main; main()", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=900, check=False)


def test_an_installed_entry_point_is_a_method_everywhere(installed: Path, tmp_path: Path) -> None:
    env = _env(installed)
    listed = _cli(["list", "methods", "toy"], env, tmp_path)
    assert listed.returncode == 0 and "seeded Gaussian random projection" in listed.stdout, listed.stderr
    plan = _cli(["run", "--method", "toy", "--budget", "10x", "--dry-run", "--json"], env, tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["key"] == "posthoc/stsb/toy/10x/cpu-2t-s0".replace("2t", f"{_threads()}t")
    check = subprocess.run([sys.executable, "-c", "from compbench.testing import check_method; "
                            "r = check_method('toy'); print(r.stored_bytes['posthoc'])"],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert check.returncode == 0 and int(check.stdout) == 300 * 9 * 2, check.stderr  # k = 9 at 10x of 300 x 48
    without = _cli(["run", "--method", "toy", "--budget", "10x", "--dry-run"], {**os.environ}, tmp_path)
    assert without.returncode == 2 and "unknown method 'toy'" in without.stderr


def _threads() -> int:
    from compbench.bench.measure.core import available_cpus

    return available_cpus()


@pytest.mark.slow  # a real cell (encoder + fidelity task): about a minute on a busy 2-core machine
def test_an_installed_method_runs_a_real_cell(installed: Path, tmp_path: Path) -> None:
    res = _cli(["run", "--method", "toy", "--budget", "10x", "--task", "fidelity", "--results", str(tmp_path / "r"),
                "--threads", "1", "--json"], _env(installed), tmp_path)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["status"] == "ok" and rec["method"]["name"] == "toy" and rec["budget"]["stored_bytes"] > 0
    assert rec["budget"]["stored_bytes"] <= rec["budget"]["allowed_bytes"]


@pytest.mark.slow  # the README's command as the issue states it: STS-B end to end (about a minute)
def test_the_documented_command_passes(installed: Path, tmp_path: Path) -> None:
    res = _cli(["run", "--method", "toy", "--budget", "10x", "--results", str(tmp_path / "r")], _env(installed),
               tmp_path)
    assert res.returncode == 0, res.stderr
    assert list((tmp_path / "r" / "posthoc" / "stsb" / "toy").rglob("*.json"))


def test_import_a_module_or_a_file_without_installing(tmp_path: Path) -> None:
    by_module = _cli(["run", "--import", "toy_method", "--method", "toy", "--budget", "10x", "--dry-run"],
                     _env(EXAMPLE), tmp_path)
    assert by_module.returncode == 0, by_module.stderr
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text("import sys\nsys.path.insert(0, %r)\nimport toy_method  # noqa: F401\n"
                      "from compbench.methods import METHODS\n"
                      "METHODS.register('toy2')(type('Toy2', (toy_method.ToyProjection,), {'card': "
                      "__import__('dataclasses').replace(toy_method.ToyProjection.card, name='toy2')}))\n"
                      % str(EXAMPLE))
    by_file = _cli(["run", "--import", str(plugin), "--method", "toy2", "--budget", "10x", "--dry-run"],
                   {**os.environ}, tmp_path)
    assert by_file.returncode == 0, by_file.stderr
    missing = _cli(["run", "--import", "no_such_module_x", "--method", "svd", "--budget", "10x", "--dry-run"],
                   {**os.environ}, tmp_path)
    assert missing.returncode == 2 and "cannot import no_such_module_x" in missing.stderr
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: outside\nimports: [my_plugin.py]\ngrids:\n  - tasks: [posthoc/fidelity]\n"
                     "    methods: [toy2, svd]\n    budgets: [10x]\n")
    planned = _cli(["sweep", str(suite), "--dry-run", "--results", str(tmp_path / "r")], {**os.environ}, tmp_path)
    assert planned.returncode == 0 and "toy2" in planned.stdout, planned.stderr


def test_check_method_reports_every_problem() -> None:
    """The checker itself, on a method that stores more than it is allowed and keeps data outside its state."""
    from compbench.methods import METHODS, CompressedEmbedding, Method, MethodCard

    class Leaky(CompressedEmbedding):
        def __init__(self, table: torch.Tensor):
            super().__init__(*table.shape)
            self.register_buffer("t", table.clone())
            self.cache = table.clone()  # uncounted bytes

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.t[ids]

    class Bad(Method):
        card = MethodCard(name="bad-test-method", version=1, family="x", reference="-", modes=("posthoc",))

        def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict:
            if budget_bytes < 2:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, 2)
            return {}

        def compress(self, table: torch.Tensor, config: dict, *, seed: int) -> CompressedEmbedding:
            return Leaky(table)

    METHODS.register("bad-test-method")(Bad)
    try:
        with pytest.raises(MethodCheckError) as exc:
            check_method("bad-test-method")
        text = str(exc.value)
        assert "more than the" in text and "keeps state outside its state_dict" in text and "cache" in text
        report = check_method("bad-test-method", raise_on_failure=False)
        assert len(report.problems) >= 2
    finally:
        METHODS._objects.pop("bad-test-method", None)


@pytest.mark.parametrize("name", ["svd", "pq", "hashing"])
def test_check_method_passes_on_built_ins(name: str) -> None:
    report = check_method(name)
    assert not report.problems and report.checks
