"""The one cell lifecycle: dense references run first in their own process, identity and key come from one
function, records carry identity, memory phases and concurrency; the leaderboard never mixes identities."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import test_sweep_fakes
from compbench.bench.cell.context import TRACK_RUNNERS, prepare
from compbench.bench.cell.runner import run_cell
from compbench.bench.results.record_store import ResultStore
from compbench.config import RunConfig

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture()
def fake_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Posthoc cells run the real lifecycle on a tiny table; workers import the same hooks."""
    monkeypatch.setitem(TRACK_RUNNERS, "posthoc", test_sweep_fakes.FAKE_HOOKS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("COMPBENCH_FAKE_ALLOC_MB", raising=False)
    monkeypatch.delenv("COMPBENCH_EXECUTOR", raising=False)
    monkeypatch.delenv("COMPBENCH_CONCURRENT_CELLS", raising=False)


def _cfg(method: str, budget: str, **kw: object) -> RunConfig:
    return RunConfig(method=method, budget=budget, task="fidelity", threads=1, lookup_iters=3, **kw)  # type: ignore[arg-type]


def test_the_dense_reference_runs_first_in_its_own_process(tmp_path: Path, fake_hooks: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference is a planned dependency: a fresh process runs it before the candidate, and the candidate's
    peak memory does not include the reference's work (here a 300 MB allocation in the dense evaluation)."""
    monkeypatch.setenv("COMPBENCH_FAKE_ALLOC_MB", "dense:300")
    store = ResultStore(tmp_path)
    rec = run_cell(_cfg("svd", "4x"), store, imports=("test_sweep_fakes:install_hooks",))
    dense = store.read("posthoc/fidelity/dense/1x/cpu-1t-s0")
    assert dense.status == "ok" and dense.measurements["memory"]["fresh_process"] is True
    assert dense.measurements["memory"]["phases"]["evaluate"]["peak_rss_delta_bytes"] >= 280 * 2**20
    assert rec.status == "ok" and rec.measurements["memory"]["fresh_process"] is False
    # the 300 MB stayed in the other process: the candidate's evaluation peaked far below it
    assert rec.measurements["memory"]["phases"]["evaluate"]["peak_rss_delta_bytes"] < 100 * 2**20
    assert rec.metrics.dense_score == dense.metrics.main
    assert rec.metrics.retention == pytest.approx(rec.metrics.main / dense.metrics.main)
    assert rec.measurements["reference"] == {"key": dense.key, "system": False}
    # a second candidate reuses the stored reference (no new process; the dense record is unchanged)
    before = store.path_for(dense.key).stat().st_mtime_ns
    run_cell(_cfg("svd", "8x"), store, imports=("test_sweep_fakes:install_hooks",))
    assert store.path_for(dense.key).stat().st_mtime_ns == before


def test_without_planned_references_the_candidate_never_runs_the_dense_cell(tmp_path: Path, fake_hooks: None) -> None:
    store = ResultStore(tmp_path)
    rec = run_cell(_cfg("svd", "4x"), store, references=False)
    assert rec.metrics.retention is None and rec.measurements["reference"]["missing"] is True
    assert not store.path_for("posthoc/fidelity/dense/1x/cpu-1t-s0").exists()


def test_record_carries_identity_memory_phases_and_concurrency(tmp_path: Path, fake_hooks: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPBENCH_EXECUTOR", "local")
    monkeypatch.setenv("COMPBENCH_CONCURRENT_CELLS", "2")
    rec = run_cell(_cfg("quant-int2", "8x"), ResultStore(tmp_path), references=False)
    assert rec.identity == {"track": "posthoc", "model": "all-MiniLM-L6-v2", "width": 384,
                            "backbone": "frozen-encoder", "init": "pretrained", "head": "shared", "recipe": "-"}
    mem = rec.measurements["memory"]
    assert set(mem["phases"]) == {"load", "fit", "evaluate", "lookup"}
    assert mem["peak_rss_delta_bytes"] == max(0, mem["peak_rss_bytes"] - mem["baseline_rss_bytes"])
    assert rec.measurements["executor"] == "local" and rec.measurements["concurrent_cells"] == 2
    assert rec.measurements["fit_time_s"] == pytest.approx(mem["phases"]["fit"]["seconds"])


@pytest.mark.parametrize(("config", "key", "width", "head"), [
    (RunConfig(method="tt", budget="10x", track="train", task="trec", threads=1),
     "train/trec/tt/10x/cpu-1t-s0", 128, "shared"),
    (RunConfig(method="ade", budget="40x", track="train", task="trec", threads=1, seeds=(0, 1, 2)),
     "train/trec+d384/ade/40x/cpu-1t-s0-1-2", 384, "own:SAT"),
    (RunConfig(method="dense", budget="1x", track="train", task="trec", threads=1, extra={"d_model": 384}),
     "train/trec+d384/dense/1x/cpu-1t-s0", 384, "shared"),
    (RunConfig(method="hashing", budget="10x", track="train", task="sst2", threads=1,
               extra={"backbone": "bag", "d_model": 64, "recipe": {"lr": 0.01}}),
     "train/sst2+bag+d64+lr=0.01/hashing/10x/cpu-1t-s0", 64, "shared"),
    (RunConfig(method="svd", budget="10x", task="stsb", threads=2), "posthoc/stsb/svd/10x/cpu-2t-s0", 384, "shared"),
    (RunConfig(method="svd", budget="10x", task="stsb", threads=1, model="/models/all-mpnet-base-v2"),
     "posthoc/stsb+model=all-mpnet-base-v2/svd/10x/cpu-1t-s0", None, "shared"),
])
def test_identity_and_key_from_one_function(config: RunConfig, key: str, width: int | None, head: str) -> None:
    """A cell's key names every identity field that differs from the track's defaults, so two cells of different
    identity never share a key (ADE's width 384, fixed by the pretrained table, is in its key)."""
    ctx = prepare(config)
    assert ctx.key == key and ctx.identity.width == width and ctx.identity.head == head


def test_ade_is_a_system_next_to_the_dense_model_of_its_width() -> None:
    from compbench.bench.cell.references import reference_config

    ctx = prepare(RunConfig(method="ade", budget="40x", track="train", task="trec", threads=1, seeds=(0, 1, 2)))
    ref = prepare(reference_config(ctx.config, ctx))
    assert ref.key == "train/trec+d384/dense/1x/cpu-1t-s0-1-2"
    assert ref.identity.frame == ctx.identity.frame and ctx.identity.is_system(ref.identity)


def test_committed_reports_never_mix_identities() -> None:
    """Every page of the committed leaderboard ranks cells of one identity; systems stay out of the ranking."""
    from compbench.leaderboard.frame import aggregate, to_frame
    from compbench.leaderboard.ranking import build_leaderboards, rankable

    root = Path(__file__).resolve().parent.parent / "results"
    records, _ = ResultStore(root).load_all()
    boards = build_leaderboards(aggregate(to_frame(records)))
    assert boards
    for b in boards:
        ranked = [c for c in b.rows() if rankable(c)]
        assert len({c["identity"] for c in ranked}) <= 1, b.page
        assert not any(c["system"] for c in ranked), b.page
    trec = next(b for b in boards if b.page == "train/trec+d384/cpu-1t")
    assert "ade" in trec.systems and "ade" not in trec.methods and "dense" in trec.methods
    assert not any(b.page == "train/trec/cpu-1t" and "ade" in (*b.methods, *b.systems) for b in boards)


def test_bench_has_no_import_cycle() -> None:
    """Layering of bench/: no module imports (at module level or inside a function) one that imports it back."""
    import ast

    root = Path(__file__).resolve().parent.parent / "src" / "compbench" / "bench"
    mods = {p.stem: p for p in root.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compbench.bench."):
                target = node.module.split(".")[2]
                if target in mods and target != name:
                    graph[name].add(target)
            elif isinstance(node, ast.ImportFrom) and node.module == "compbench.bench":
                graph[name] |= {a.name for a in node.names if a.name in mods}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    cycles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, f"import cycles in bench/: {cycles}"


def test_a_composition_runs_through_the_harness(tmp_path: Path, fake_hooks: None) -> None:
    """``--method A+B`` resolves to the composed method (a reducer's factor quantized by B); bytes are counted on
    the final tensors and the card comes from its parts."""
    from compbench.methods import get_method_class

    rec = run_cell(_cfg("pca+quant", "8x"), ResultStore(tmp_path), references=False)
    assert rec.status == "ok" and rec.key == "posthoc/fidelity/pca+quant/8x/cpu-1t-s0"
    assert rec.budget.stored_bytes <= rec.budget.allowed_bytes and rec.method.name == "pca+quant"
    assert get_method_class("pca+quant").card.name == "pca+quant"
    assert get_method_class("pca+quant")(split=0.5).card.name == "pca+quant"
