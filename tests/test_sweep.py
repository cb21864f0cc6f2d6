"""Sweeps: suite parsing and overrides, planning and resume, skipped/failed cells (in-process, fake runner)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import test_sweep_fakes
from compbench.bench.cell.context import TRACK_RUNNERS
from compbench.bench.cell.outcomes import outcome_record
from compbench.bench.cell.plan import (
    plan,
    prepare_sweep,
    resolve_cell,
    resolve_cells,
    same_train_settings,
    seed_coverage,
    seed_records_covering,
)
from compbench.bench.results.record import to_json
from compbench.bench.results.record_store import ResultStore
from compbench.bench.sweeps.suite import apply_overrides, expand, list_suites, load_suite, parse_suite, validate_names
from compbench.bench.sweeps.sweep import make_executor, run_sweep
from compbench.cli import main
from compbench.errors import UnknownNameError, UsageError

SUITE = {
    "name": "tiny",
    "threads": 1,
    "seeds": [0],
    "grids": [
        {"tasks": ["posthoc/fidelity"], "methods": ["svd", "quant-int2", "quant-int8"], "budgets": ["8x"]},
        {"tasks": [{"track": "train", "name": "sst2"}], "methods": ["svd"], "budgets": ["8x"]},
    ],
}


@pytest.fixture()
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Posthoc cells run the real method on a tiny table (no encoder) in this process."""
    monkeypatch.setitem(TRACK_RUNNERS, "posthoc", test_sweep_fakes.FAKE_RUNNER)
    for var in ("COMPBENCH_FAKE_CRASH", "COMPBENCH_FAKE_SLEEP", "COMPBENCH_FAKE_SHIFT", "COMPBENCH_FAKE_DIE_IN_WRITE",
                "COMPBENCH_FAKE_OOM_ABOVE"):
        monkeypatch.delenv(var, raising=False)


def _sweep(tmp_path: Path, doc: dict = SUITE, overwrite: str = "only-missing", **overrides: object):
    suite = apply_overrides(parse_suite(doc), **overrides)  # type: ignore[arg-type]
    store = ResultStore(tmp_path)
    cells = prepare_sweep(suite, store, overwrite)
    return cells, run_sweep(cells, store, make_executor("inline"))


# -- suites ---------------------------------------------------------------------------------------
def test_shipped_suites_load_and_expand() -> None:
    assert {"smoke", "default", "full"} <= set(list_suites())
    sizes = {}
    for name in ("smoke", "default", "full"):
        suite = load_suite(name)
        assert suite.name == name and suite.description
        sizes[name] = len(expand(suite))
    assert 0 < sizes["smoke"] < sizes["default"] < sizes["full"]
    smoke = load_suite("smoke")
    assert all(g.threads == 1 and g.devices == ("cpu",) for g in smoke.grids)


def test_suite_parsing_and_overrides(tmp_path: Path) -> None:
    suite = parse_suite(SUITE)
    cells = expand(suite)
    assert [(c.track, c.task, c.method, c.budget, c.seed, c.threads) for c in cells] == [
        ("posthoc", "fidelity", "svd", "8x", 0, 1), ("posthoc", "fidelity", "quant-int2", "8x", 0, 1),
        ("posthoc", "fidelity", "quant-int8", "8x", 0, 1), ("train", "sst2", "svd", "8x", 0, 1)]
    o = apply_overrides(suite, methods="svd,quant-binary", budgets=["10x", "40x"], seeds="0,1", tasks="fidelity")
    cells = expand(o)
    # both grids now run the same task list -> duplicates dropped
    assert len(cells) == 2 * 2 * 2
    assert {c.method for c in cells} == {"svd", "quant-binary"} and {c.budget for c in cells} == {"10x", "40x"}
    assert {c.seed for c in cells} == {0, 1} and {c.task for c in cells} == {"fidelity"}
    assert {c.track for c in expand(apply_overrides(suite, tasks="train/sst2"))} == {"train"}
    # a single grid without `grids:` and a path on disk
    path = tmp_path / "one.yaml"
    path.write_text("name: one\nmethods: [svd]\nbudgets: [10x, 40x]\ntasks: [posthoc/stsb]\nseeds: [1]\nthreads: 2\n"
                    "options: {svd: {}}\nextra: {}\n")
    one = load_suite(str(path))
    assert [(c.budget, c.seed, c.threads) for c in one.cells()] == [("10x", 1, 2), ("40x", 1, 2)]


def test_train_grid_aggregates_seeds() -> None:
    doc = {"tasks": ["train/sst2"], "methods": ["hashing"], "budgets": ["10x"], "seeds": [0, 1, 2],
           "aggregate_seeds": True, "extra": {"backbone": "bag", "max_steps": 5}}
    (cell,) = expand(parse_suite(doc))
    assert cell.seeds == (0, 1, 2) and cell.seed == 0 and cell.extra == {"backbone": "bag", "max_steps": 5}


def _single_seed_record(agg_config, seed: int, *, seeds_flag: bool = True, main: float = 0.8):
    """An ok single-seed record of ``agg_config`` as ``compbench run --seeds s`` (or ``--seed s``) writes it."""
    cfg = dataclasses.replace(agg_config, seed=seed, seeds=(seed,) if seeds_flag else None)
    rec = outcome_record(cfg, "skipped", "placeholder", key=resolve_cell(cfg).key)
    rec.status, rec.error = "ok", None
    rec.metrics.main, rec.metrics.seeds = main, [seed]
    return rec


def test_aggregated_train_cell_is_covered_by_single_seed_records(tmp_path: Path) -> None:
    """Seeds run one by one (``--seeds 0``, ``--seed 1``) make the aggregated cell up to date; a missing,
    failed or differently configured seed does not."""
    doc = {"name": "agg", "threads": 1, "seeds": [0, 1], "aggregate_seeds": True,
           "grids": [{"tasks": ["train/sst2"], "methods": ["hashing"], "budgets": ["10x"],
                      "extra": {"backbone": "bag", "max_steps": 5}}]}
    store = ResultStore(tmp_path)
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store)
    assert cell.key.endswith("-s0-1") and cell.action == "run"
    s0 = _single_seed_record(cell.config, 0)
    store.write(s0)
    (agg,) = resolve_cells(expand(parse_suite(doc)), references=False)
    assert seed_records_covering(agg, store) is None and seed_coverage(agg, store) == {0: s0.key}  # seed 1 missing
    (cell,) = plan([agg], store)  # only the missing seed runs, as its own single-seed cell
    assert cell.action == "run" and cell.key == s0.key.replace("-s0", "-s1") and cell.config.seeds == (1,)
    assert "seed 1 alone; seed 0 held" in cell.note and s0.key in cell.note
    cell = agg
    s1 = _single_seed_record(cell.config, 1, seeds_flag=False)
    store.write(s1)
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store)
    assert cell.action == "cached" and s0.key in cell.note and s1.key in cell.note
    assert seed_records_covering(cell, store) == [s0.key, s1.key]
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store, "always")
    assert cell.action == "run"
    # a failed seed, or one run with other settings, does not count
    s1.status = "failed"
    store.write(s1)
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store)
    assert cell.action == "run" and cell.key == s1.key  # the failed seed re-runs alone
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store, "never")
    assert cell.action == "cached" and cell.key == s1.key  # ... but "never" replaces no file
    other = _single_seed_record(dataclasses.replace(cell.config, extra={"backbone": "bag", "max_steps": 6}), 1)
    other.key = s1.key
    store.write(other)
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store)
    assert cell.action == "run"


def test_train_record_with_a_default_spelled_out_is_up_to_date(tmp_path: Path) -> None:
    """``extra`` that resolves to the same recipe and backbone (a default given explicitly) is not a change;
    a real change of a setting is."""
    doc = {"name": "d", "threads": 1, "seeds": [0],
           "grids": [{"tasks": ["train/sst2"], "methods": ["hashing"], "budgets": ["10x"], "extra": {"max_steps": 5}}]}
    store = ResultStore(tmp_path)
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store)
    explicit = dataclasses.replace(cell.config, extra={"max_steps": 5, "backbone": "transformer", "d_model": 128})
    assert same_train_settings(cell.config, explicit.extra)
    rec = outcome_record(explicit, "skipped", "placeholder", key=resolve_cell(explicit).key)
    assert rec.key == cell.key
    rec.status, rec.error, rec.metrics.main = "ok", None, 0.8
    store.write(rec)
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store)
    assert cell.action == "cached", cell.note
    changed = dataclasses.replace(cell.config, extra={"max_steps": 5, "recipe": {"lr": 0.01}})
    assert not same_train_settings(cell.config, changed.extra)
    rec2 = outcome_record(changed, "skipped", "placeholder", key=cell.key)
    rec2.status, rec2.error, rec2.metrics.main = "ok", None, 0.8
    store.write(rec2)
    (cell,) = plan(resolve_cells(expand(parse_suite(doc)), references=False), store)
    assert cell.action == "run" and "configuration changed: extra" in cell.note


@pytest.mark.parametrize("doc, match", [
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "seed": [0]}, "unknown key 'seed'; did you mean 'seeds'"),
    ({"methods": ["svdd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"]}, "did you mean 'svd'"),
    ({"methods": ["svd"], "budgets": ["ten"], "tasks": ["posthoc/stsb"]}, "invalid budget 'ten'"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stbs"]}, "did you mean 'stsb'"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["stsb"]}, "must be 'track/name'"),
    ({"methods": ["svd"], "budgets": ["10x"]}, "missing tasks"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "seeds": [-1]}, "integer >= 0"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "threads": 0}, "integer >= 1"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "options": {"svd": {"nope": 1}}}, "has no option"),
    (["not", "a", "mapping"], "must be a YAML mapping"),
])
def test_bad_suites_are_usage_errors(doc: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_suite(doc)


def test_unknown_suite_name_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown suite 'smok'; did you mean 'smoke'"):
        load_suite("smok")
    with pytest.raises(UsageError, match="suite file not found"):
        load_suite(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [svd\nbudgets: 10x\n")
    with pytest.raises(UsageError, match="invalid YAML at line"):
        load_suite(str(bad))
    res = CliRunner().invoke(main, ["sweep", "--suite", "smok", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "did you mean 'smoke'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["sweep", "--suite", "smoke", "--methods", "svdd", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "did you mean 'svd'" in res.output
    res = CliRunner().invoke(main, ["sweep", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "no suite" in res.output


def test_dry_run_lists_planned_cells(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["sweep", "--suite", "smoke", "--results", str(tmp_path), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    planned = json.loads(res.output)
    assert planned and all(p["action"] in ("run", "skip") for p in planned)
    assert any(p["reference"] and "/dense/1x/" in p["key"] for p in planned)
    assert not list(tmp_path.rglob("*.json"))  # nothing written


# -- running, skipping, resume ---------------------------------------------------------------------
def test_sweep_records_ok_and_skipped_then_resumes(tmp_path: Path, fake_runner: None) -> None:
    cells, result = _sweep(tmp_path)
    by_key = {c.key: c for c in cells}
    # the dense reference of the posthoc task is added and planned first
    assert cells[0].key == "posthoc/fidelity/dense/1x/cpu-1t-s0" and cells[0].reference
    store = ResultStore(tmp_path)
    good, bad = store.load_all()
    assert not bad and {r.key for r in good} == set(by_key)
    status = {r.key: r.status for r in good}
    assert status["posthoc/fidelity/svd/8x/cpu-1t-s0"] == "ok"
    assert status["posthoc/fidelity/quant-int2/8x/cpu-1t-s0"] == "ok"
    int8 = store.read("posthoc/fidelity/quant-int8/8x/cpu-1t-s0")
    assert int8.status == "skipped" and "smallest budget it can meet" in (int8.error or "")
    # known before running: the bundled encoder's table shape is read from its config.json
    assert int8.budget.reference_bytes == 30522 * 384 * 4 and int8.provenance["sweep"]["skip"] == "budget"
    train = store.read("train/sst2/svd/8x/cpu-1t-s0")
    assert train.status == "skipped" and "does not support the 'train' track" in (train.error or "")
    assert result.summary()["statuses"] == {"ok": 3, "skipped": 2} and not result.interrupted
    svd = store.read("posthoc/fidelity/svd/8x/cpu-1t-s0")
    assert svd.provenance["sweep"]["fingerprint"]["batch_size"] == 64
    # every record says how to reproduce its cell with one command
    assert svd.provenance["command"] == ("compbench run --method svd --budget 8x --track posthoc --task fidelity "
                                         "--device cpu --threads 1 --seed 0")
    assert int8.provenance["command"].startswith("compbench run --method quant-int8 --budget 8x")

    # re-run: everything is up to date, nothing is written
    mtimes = {p: p.stat().st_mtime_ns for p in store.paths()}
    cells2, result2 = _sweep(tmp_path)
    assert {c.action for c in cells2} == {"cached"} and not result2.records
    assert mtimes == {p: p.stat().st_mtime_ns for p in store.paths()}

    # --overwrite always re-runs every cell; --overwrite never re-runs none
    cells3, result3 = _sweep(tmp_path, overwrite="always")
    assert len(result3.records) == len(cells3)
    cells4, result4 = _sweep(tmp_path, overwrite="never")
    assert not result4.records


def test_stale_failed_malformed_and_changed_records_rerun(tmp_path: Path, fake_runner: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _sweep(tmp_path)
    store = ResultStore(tmp_path)
    svd_key, int2_key, ref_key = ("posthoc/fidelity/svd/8x/cpu-1t-s0", "posthoc/fidelity/quant-int2/8x/cpu-1t-s0",
                                  "posthoc/fidelity/dense/1x/cpu-1t-s0")
    # an older method version
    old = store.read(svd_key)
    old.method.version = 0
    store.write(old)
    # a failed cell
    failed = store.read(int2_key)
    failed.status, failed.error = "failed", "boom"
    store.write(failed)
    # a half-written (truncated) record, as a non-atomic writer would leave it
    ref_path = store.path_for(ref_key)
    ref_path.write_text(ref_path.read_text()[:100])
    cells, result = _sweep(tmp_path)
    notes = {c.key: (c.action, c.note) for c in cells}
    assert notes[svd_key][0] == "run" and "method svd v0 -> v" in notes[svd_key][1]
    assert notes[int2_key][0] == "run" and "previous run failed" in notes[int2_key][1]
    assert notes[ref_key][0] == "run" and "malformed" in notes[ref_key][1]
    assert set(result.records) == {svd_key, int2_key, ref_key}
    good, bad = store.load_all()
    assert not bad and all(r.status in ("ok", "skipped") for r in good)
    # a changed cell configuration (not part of the key) re-runs too
    doc = {**SUITE, "batch_size": 32}
    cells, result = _sweep(tmp_path, doc)
    assert {c.key for c in cells if c.action == "run"} == {ref_key, svd_key, int2_key}
    assert {c.key for c in cells if c.action == "skip"} == {"posthoc/fidelity/quant-int8/8x/cpu-1t-s0",
                                                             "train/sst2/svd/8x/cpu-1t-s0"}  # rewritten
    assert all("batch_size 64 -> 32" in c.note for c in cells if c.action in ("run", "skip"))
    # --overwrite never keeps even a malformed file
    ref_path.write_text("{")
    cells, result = _sweep(tmp_path, doc, overwrite="never")
    assert not result.records and ref_path.read_text() == "{"


def test_failing_cell_does_not_stop_the_sweep(tmp_path: Path, fake_runner: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPBENCH_FAKE_CRASH", "svd:raise")
    cells, result = _sweep(tmp_path)
    store = ResultStore(tmp_path)
    rec = store.read("posthoc/fidelity/svd/8x/cpu-1t-s0")
    assert rec.status == "failed" and rec.error == "RuntimeError: injected failure in svd"
    assert any("injected failure" in ln for ln in rec.measurements["traceback"])
    assert store.read("posthoc/fidelity/quant-int2/8x/cpu-1t-s0").status == "ok"
    assert [r.key for r in result.failed] == [rec.key]


def test_out_of_memory_retries_at_a_smaller_batch_then_fails(tmp_path: Path, fake_runner: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"tasks": ["posthoc/fidelity"], "methods": ["svd"], "budgets": ["8x"], "threads": 1, "batch_size": 64}
    monkeypatch.setenv("COMPBENCH_FAKE_OOM_ABOVE", "16")
    cells, result = _sweep(tmp_path, doc)
    rec = result.records["posthoc/fidelity/svd/8x/cpu-1t-s0"]
    assert rec.status == "ok"
    assert rec.provenance["sweep"]["oom_retries"] == 2 and rec.provenance["sweep"]["eval_batch_size"] == 16
    assert rec.provenance["run_config"]["batch_size"] == 16
    assert rec.provenance["sweep"]["fingerprint"]["batch_size"] == 64  # the requested cell: resume still matches
    assert all(c.action == "cached" for c in _sweep(tmp_path, doc)[0])
    monkeypatch.setenv("COMPBENCH_FAKE_OOM_ABOVE", "1")
    cells, result = _sweep(tmp_path, doc, overwrite="always")
    rec = result.records["posthoc/fidelity/svd/8x/cpu-1t-s0"]
    assert rec.status == "failed" and rec.provenance["sweep"]["oom_retries"] == 3
    assert rec.error.startswith("OutOfMemoryError: CUDA out of memory (fake) at batch 8")
    assert rec.error.endswith("(after 3 retries down to batch 8)")


def test_unavailable_device_is_skipped_and_kept_results_survive(tmp_path: Path, fake_runner: None) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    doc = {"tasks": ["posthoc/fidelity"], "methods": ["svd"], "budgets": ["8x"], "devices": ["cuda"], "threads": 1}
    cells, result = _sweep(tmp_path, doc)
    store = ResultStore(tmp_path)
    rec = store.read("posthoc/fidelity/svd/8x/cuda-1t-s0")
    assert rec.status == "skipped" and "no CUDA device" in (rec.error or "")
    assert rec.provenance["sweep"]["skip"] == "device"
    # a GPU result copied from elsewhere is never replaced by "skipped" on a CPU-only machine
    rec.status, rec.error = "ok", None
    rec.metrics.main = 0.5
    store.write(rec)
    cells, result = _sweep(tmp_path, doc)
    assert all(c.action == "cached" for c in cells) and store.read(rec.key).status == "ok"


def test_cli_sweep_json_summary_and_exit_codes(tmp_path: Path, fake_runner: None, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nthreads: 1\nmethods: [svd]\nbudgets: [8x]\ntasks: [posthoc/fidelity]\n")
    args = ["sweep", str(suite), "--results", str(tmp_path / "r"), "--executor", "inline", "--json", "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):res.output.rindex("}") + 1])
    assert summary["ran"] == 2 and summary["statuses"] == {"ok": 2} and summary["missing"] == []
    monkeypatch.setenv("COMPBENCH_FAKE_CRASH", "svd:raise")
    res = CliRunner().invoke(main, [*args, "--overwrite", "always"])
    assert res.exit_code == 1 and "1 cell(s) failed" in res.output
    res = CliRunner().invoke(main, [*args, "--jobs", "0"])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, ["sweep", str(suite), "--suite", "smoke"])
    assert res.exit_code == 2 and "not both" in res.output


def test_real_train_cell_through_a_sweep(tmp_path: Path) -> None:
    """One real cell (train track: tokenizer, real method, real training; tiny recipe) through the inline executor."""
    doc = {"tasks": ["train/trec"], "methods": ["hashing"], "budgets": ["10x"], "threads": 1, "lookup_iters": 3,
           "extra": {"backbone": "bag", "d_model": 32, "max_steps": 20, "max_train_samples": 200, "max_eval_samples": 100}}
    store = ResultStore(tmp_path)
    ref, cell = prepare_sweep(parse_suite(doc), store)  # the dense reference of the same frame is planned first
    assert cell.key == "train/trec+bag+d32+steps20+n200+neval100/hashing/10x/cpu-1t-s0"  # the runner's own key
    assert ref.reference and ref.key == "train/trec+bag+d32+steps20+n200+neval100/dense/1x/cpu-1t-s0"
    result = run_sweep([ref, cell], store, make_executor("inline"))
    rec = result.records[cell.key]
    assert rec.status == "ok" and rec.key == cell.key and 0.0 <= rec.metrics.main <= 1.0
    dense = result.records[ref.key]
    assert rec.metrics.dense_score == dense.metrics.main and rec.measurements["reference"]["key"] == ref.key
    assert rec.metrics.retention == pytest.approx(rec.metrics.main / dense.metrics.main)
    assert rec.budget.stored_bytes <= rec.budget.allowed_bytes
    assert to_json(store.read(rec.key)) == to_json(rec)
    assert all(c.action == "cached" for c in prepare_sweep(parse_suite(doc), store))


def test_sweep_runs_only_the_seeds_not_yet_recorded(tmp_path: Path) -> None:
    """A 2-seed aggregated train cell whose seed 0 was already run on its own: the sweep runs seed 1 alone
    (real training, tiny recipe), and the next plan finds the cell complete."""
    grid = {"tasks": ["train/trec"], "methods": ["hashing"], "budgets": ["10x"],
            "extra": {"backbone": "bag", "d_model": 16, "max_steps": 3, "max_train_samples": 64, "max_eval_samples": 32}}
    store = ResultStore(tmp_path)
    first = run_sweep(prepare_sweep(parse_suite({"threads": 1, "seeds": [0], "grids": [grid]}), store,
                                    references=False), store, make_executor("inline"))
    (s0,) = first.records
    agg_doc = {"threads": 1, "seeds": [0, 1], "aggregate_seeds": True, "grids": [grid]}
    (cell,) = prepare_sweep(parse_suite(agg_doc), store, references=False)
    assert cell.key == s0.replace("-s0", "-s1") and cell.action == "run" and s0 in cell.note
    second = run_sweep([cell], store, make_executor("inline"))
    rec = second.records[cell.key]
    assert rec.status == "ok" and rec.metrics.seeds == [1]
    (again,) = prepare_sweep(parse_suite(agg_doc), store, references=False)
    assert again.action == "cached" and again.key.endswith("-s0-1") and not store.path_for(again.key).is_file()


def test_train_sweep_plans_the_dense_reference_of_the_same_frame(tmp_path: Path) -> None:
    """A train cell's dense reference (same width, backbone, recipe and seeds) is planned first; a dense record
    whose seeds include the cell's seeds covers it. ADE's reference is the dense model at its width, 384."""
    doc = {"name": "ref", "threads": 1, "seeds": [1],
           "grids": [{"tasks": ["train/trec"], "methods": ["hashing", "ade"], "budgets": ["10x"],
                      "extra": {"max_steps": 5}}]}
    store = ResultStore(tmp_path)
    cells = plan(resolve_cells(expand(parse_suite(doc))), store)
    refs = [c for c in cells if c.reference]
    assert sorted(c.key for c in refs) == ["train/trec+d384+steps5/dense/1x/cpu-1t-s1",
                                           "train/trec+steps5/dense/1x/cpu-1t-s1"]
    assert cells.index(refs[0]) < 2 and cells.index(refs[1]) < 2 and all(c.action == "run" for c in refs)
    ade = next(c for c in cells if c.config.method == "ade")
    assert ade.key == "train/trec+d384+steps5/ade/10x/cpu-1t-s1" and ade.identity.head == "own:SAT"
    # a dense record over seeds 0, 1, 2 of the same frame holds seed 1
    agg = resolve_cell(dataclasses.replace(refs[1].config, seeds=(0, 1, 2)))
    rec = outcome_record(agg.config, "skipped", "placeholder", key=agg.key)
    rec.status, rec.error, rec.metrics.main, rec.metrics.seeds = "ok", None, 0.8, [0, 1, 2]
    store.write(rec)
    cells = plan(resolve_cells(expand(parse_suite(doc))), store)
    ref = next(c for c in cells if c.key == refs[1].key)
    assert ref.action == "cached" and agg.key in ref.note


@pytest.mark.parametrize("doc, message", [
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "threads": True},
     "suite <dict>: 'threads' must be an integer >= 1, got True"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "seeds": "0"},
     "suite <dict>: 'seeds' must be a non-empty list, each an integer >= 0, got 0"),
    ({"budgets": ["10x"], "tasks": ["posthoc/stsb"], "grids": [{"methods": ["svd"]}, {"methods": ["pq"], "tune": "yes"}]},
     "suite <dict>: grids[1]: 'tune' must be true or false, got yes"),
    ({"budgets": ["10x"], "tasks": ["posthoc/stsb"], "grids": [{"methods": ["svd"], "budget": ["40x"]}]},
     "suite <dict>: grids[0]: unknown key 'budget'; did you mean 'budgets'?"),
    ({"methods": ["svd"], "budgets": [], "tasks": ["posthoc/stsb"]}, "suite <dict>: 'budgets' must be a non-empty list"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "lookup_workload": "gauss"},
     "suite <dict>: 'lookup_workload' must be zipf or uniform, got gauss"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": [{"track": "posthoc"}]},
     "suite <dict>: 'tasks' must be a list of 'track/name'"),
    ({"methods": ["svd"], "budgets": ["10x"], "tasks": ["posthoc/stsb"], "grids": []},
     "suite <dict>: 'grids' must be a non-empty list of mappings"),
])
def test_the_suite_schema_is_strict_and_speaks_in_one_line(doc: dict[str, object], message: str) -> None:
    """The pydantic schema (bench/sweeps/suite_schema.py) checks shape and types before any name is resolved."""
    with pytest.raises(UsageError) as exc:
        parse_suite(doc)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_the_suite_schema_keeps_scalars_and_defaults() -> None:
    suite = parse_suite({"methods": "svd", "budgets": "10x", "tasks": "posthoc/stsb", "seeds": 1, "threads": 1,
                         "max_fit_seconds": 0, "grids": [{"budgets": ["40x", "40x"]}, {}]})
    g0, g1 = suite.grids
    assert g0.methods == ("svd",) and g0.budgets == ("40x",) and g1.budgets == ("10x",)
    assert g0.seeds == (1,) and g0.max_fit_seconds is None and g1.tasks[0].name == "stsb"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_committed_benchmark_suite_is_valid(path: Path) -> None:
    """The committed grids (benchmarks/*.yaml) load, name known methods with valid options and budgets, and plan
    distinct cells: a typo in one would otherwise surface hours into a sweep."""
    suite = load_suite(path)
    validate_names(suite)
    cells = expand(suite)
    assert cells, f"{path.name} plans no cell"
    keys = [(c.track, c.task, c.method, c.budget, c.device, c.threads, c.seed, json.dumps(c.extra, sort_keys=True),
             json.dumps(dict(c.options), sort_keys=True), c.model) for c in cells]
    assert len(set(keys)) == len(keys), f"{path.name} plans a cell twice"
