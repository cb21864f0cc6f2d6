"""Tuning on validation data (compbench.bench.cell.tuning): never reads test items, fits the budget, deterministic."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

import test_sweep_fakes
from compbench.bench.cell.context import TRACK_RUNNERS
from compbench.bench.cell.lifecycle import Outcome
from compbench.bench.cell.runner import run_cell
from compbench.config import RunConfig
from compbench.tasks import TASKS
from compbench.tasks.task_base import Task, TaskCard

EVALUATED: list[str] = []  # splits the hooks evaluated, in order


class _FakeSTS(Task):
    """A task with a validation split; its test split can be 'poisoned' to reward the opposite choice."""

    card = TaskCard("tunetest", 1, "posthoc", "score", True, 0.005, "fake", "fake")
    split = "test"

    def validation(self) -> Task:
        return _FakeSTSValidation()


class _FakeSTSValidation(_FakeSTS):
    card = TaskCard("tunetest-validation", 1, "posthoc", "score", True, 0.005, "fake", "fake")
    split = "validation"


class TuneHooks(test_sweep_fakes.FakeHooks):
    """Score = mean row cosine of the tiny table; on a poisoned test split the score is reversed, so reading the
    test split while tuning would flip the choice."""

    def evaluate(self, ctx: Any, subject: Any, module: torch.nn.Module, config: dict[str, Any], seed: int) -> Outcome:
        out = super().evaluate(ctx, subject, module, config, seed)
        split = ctx.task.split
        EVALUATED.append(split)
        score = out.scores["mean_row_cosine"]
        if split == "test" and os.environ.get("COMPBENCH_TEST_POISON"):
            score = -score
        return Outcome(scores={**out.scores, "score": score})


@pytest.fixture()
def tunable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRACK_RUNNERS, "posthoc", "test_tuning:TuneHooks")
    TASKS.register("posthoc/tunetest")(_FakeSTS)
    EVALUATED.clear()
    yield
    TASKS._objects.pop("posthoc/tunetest")


def _run(method: str = "svd", budget: str = "8x", **kw: Any) -> Any:
    return run_cell(RunConfig(method=method, budget=budget, task="tunetest", threads=1, lookup_iters=2, tune=True,
                              **kw), None)


def test_tuning_reads_validation_only_and_a_poisoned_test_split_changes_nothing(tunable: None,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _run()
    assert EVALUATED == ["validation", "validation", "test"]  # two candidates on validation, then test once
    EVALUATED.clear()
    monkeypatch.setenv("COMPBENCH_TEST_POISON", "1")
    poisoned = _run()
    assert EVALUATED == ["validation", "validation", "test"]
    t = clean.measurements["tuning"]
    assert t["chosen_options"] == poisoned.measurements["tuning"]["chosen_options"] == {"dtype": "float16"}
    assert [c["validation_score"] for c in t["candidates"]] == \
        [c["validation_score"] for c in poisoned.measurements["tuning"]["candidates"]]
    assert t["validation"]["task"] == "tunetest-validation" and poisoned.metrics.main == -clean.metrics.main
    assert clean.key.endswith("svd+tuned/8x/cpu-1t-s0") and clean.method.tuned
    assert clean.method.config == {"rank": t["candidates"][1]["config"]["rank"], "dtype": "float16"}


def test_the_chosen_configuration_fits_the_budget_and_tuning_is_deterministic(tunable: None,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from compbench.bench.cell import tuning

    # the cost cap is wall-clock (10x the default candidate's time), so on a loaded machine two runs may stop
    # after different candidates; with the cap off, the same inputs must give the same search and choice
    monkeypatch.setattr(tuning, "COST_CAP", float("inf"))
    a, b = _run("pq", "6x"), _run("pq", "6x")
    ta, tb = a.measurements["tuning"], b.measurements["tuning"]
    assert a.status == "ok" and a.budget.stored_bytes <= a.budget.allowed_bytes
    assert len(ta["space"]) <= 12 and ta["space"][0] == {}
    for c in ta["candidates"]:
        assert c["status"] in ("ok", "over_budget", "unattainable")
        if c["status"] == "ok":
            assert c["stored_bytes"] <= a.budget.allowed_bytes
    strip = lambda t: [{k: v for k, v in c.items() if not k.endswith("_s")} for c in t["candidates"]]  # noqa: E731
    assert strip(ta) == strip(tb) and ta["chosen_options"] == tb["chosen_options"]
    assert a.metrics.main == b.metrics.main


def test_a_user_option_is_kept_and_tuning_needs_a_validation_split(tunable: None) -> None:
    rec = _run(options={"dtype": "float32"})
    assert all(c["options"]["dtype"] == "float32" for c in rec.measurements["tuning"]["candidates"])
    from compbench.errors import UsageError

    with pytest.raises(UsageError, match="no validation split"):
        run_cell(RunConfig(method="svd", budget="8x", task="fidelity", threads=1, lookup_iters=2, tune=True), None)


@pytest.mark.parametrize("name", ["kmeans", "direction-ae", "ade", "quant-int8", "quant-int4", "quant-int2"])
def test_declared_spaces_are_small_default_first_and_configure(name: str) -> None:
    """Each space has at most 12 candidates, the default first, and every candidate either configures within the
    budget or is unattainable (the harness records and skips those); none raises another error."""
    from compbench.errors import UnattainableBudgetError
    from compbench.methods import get_method

    v, d = 30_522, 384
    for ratio in (4, 10, 40, 100):
        budget = v * d * 4 // ratio
        space = get_method(name).tuning_space(v, d, budget)
        assert 1 <= len(space) <= 12 and space[0] == {}
        assert len({tuple(sorted(c.items())) for c in space}) == len(space)
        for cand in space:
            try:
                get_method(name, **cand).configure(v, d, budget)
            except UnattainableBudgetError:
                pass
