"""``run``'s progress (issue 35): phases with their elapsed time, a bar with done/total and an ETA for work with a
size (sentences encoded, perplexity windows), nesting, and nothing on a non-terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from compbench.cli.run_cmd import PhaseDisplay
from compbench.tasks import get_task


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100, color_system=None), buf


def test_phases_print_their_end_with_elapsed_and_duration() -> None:
    console, buf = _console()
    with PhaseDisplay(console) as d:
        d.report("start", "load", 0.0)
        d.report("end", "load", 1.25)
        d.report("start", "fit", 0.0)
        d.report("end", "fit", 3.5)
    lines = [ln for ln in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue()).splitlines() if "done in" in ln]
    assert [ln.split("  ", 1)[1].strip() for ln in (x.strip() for x in lines)] == ["load: done in 1.2 s",
                                                                                   "fit: done in 3.5 s"]
    assert all(re.match(r"\s*\d+\.\d s  ", ln) for ln in lines)  # each line starts with the time since `run` began


def test_ticks_give_the_innermost_phase_a_bar_with_done_and_total() -> None:
    console, _ = _console()
    with PhaseDisplay(console) as d:
        d.report("start", "dense reference k", 0.0)
        d.report("start", "evaluate", 0.0)  # nested: the ticks go to the innermost phase
        d.report("tick", "evaluate: encoding sentences", 0.0, done=640, total=2758)
        tasks = d.live.tasks
        assert [t.description for t in tasks] == ["dense reference k", "evaluate: encoding sentences"]
        assert tasks[1].total == 2758 and tasks[1].completed == 640 and tasks[0].total is None
        d.report("end", "evaluate", 2.0)
        assert [t.description for t in d.live.tasks] == ["dense reference k"]
        d.report("end", "dense reference k", 5.0)
        assert d.live.tasks == []


def test_unsized_ticks_show_no_bar() -> None:
    from compbench.cli.run_cmd import _DoneOfTotal, _Eta, _SizedBar

    console, _ = _console()
    with PhaseDisplay(console) as d:
        d.report("tick", "encoding", 0.0, done=10, total=None)
        task = d.live.tasks[0]
        assert str(_DoneOfTotal().render(task)) == "" and str(_Eta().render(task)) == ""
        assert str(_SizedBar().render(task)) == ""
        d.report("tick", "encoding", 0.0, done=10, total=40)
        task = d.live.tasks[0]
        assert str(_DoneOfTotal().render(task)) == "10/40" and str(_Eta().render(task)).startswith("eta ")


def test_disabled_display_is_silent() -> None:
    console, buf = _console()
    with PhaseDisplay(console, enabled=False) as d:
        d.report("start", "fit", 0.0)
        d.report("tick", "fit", 0.0, done=1, total=2)
        d.report("end", "fit", 1.0)
    assert buf.getvalue() == ""


def test_stsb_announces_its_sentence_count() -> None:
    assert get_task("posthoc", "stsb").sentences() == 2 * 1379


def test_encoder_counts_sentences_per_batch(encoder) -> None:
    seen: list[int] = []
    with encoder.counting(seen.append):
        encoder.encode([f"sentence number {i}" for i in range(10)], batch_size=4)
    assert seen == [4, 8, 10]
    encoder.encode(["after the block"], batch_size=4)  # the hook is gone
    assert seen == [4, 8, 10]


def test_training_reports_steps_done_of_planned() -> None:
    import torch
    from torch import nn

    from compbench.bench.tracks.train_track import SplitTensors, train_seed
    from compbench.models.classifier import BackboneConfig, build_classifier
    from compbench.tasks.train import TrainRecipe

    g = torch.Generator().manual_seed(0)

    def split(n: int) -> SplitTensors:
        return SplitTensors(ids=torch.randint(1, 50, (n, 6), generator=g), lengths=torch.full((n,), 6),
                            labels=torch.randint(0, 2, (n,), generator=g))

    data = {"train": split(40), "val": split(10), "test": split(10)}
    torch.manual_seed(0)
    model = build_classifier(nn.Embedding(50, 8), 2, BackboneConfig(kind="bag", d_model=8))
    recipe = TrainRecipe(max_len=6, batch_size=8, epochs=2, max_steps=0, eval_every=5, patience=100)
    ticks: list[tuple[int, int]] = []
    train_seed(model, data, recipe, seed=0, device=torch.device("cpu"), eval_batch_size=16,
               progress=lambda event, what, seconds, done=None, total=None: ticks.append((done, total)))
    assert ticks == [(5, 10), (10, 10)]  # 2 epochs x 5 steps, a tick at each validation point
