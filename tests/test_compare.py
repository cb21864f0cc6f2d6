"""compbench compare: asv rules, exit codes, Markdown summary, malformed records."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from compbench.bench.cell.identity import cell_key
from compbench.bench.results.compare import compare_dirs, compare_records, to_markdown
from compbench.bench.results.record import BudgetInfo, DeviceInfo, MethodInfo, Params, Record, TaskInfo
from compbench.bench.results.record_store import ResultStore
from compbench.cli import main
from compbench.errors import UsageError


def make(method: str = "svd", budget: str = "10x", main_score: float | None = 0.8, *, status: str = "ok",
         version: int = 1, task_version: int = 1, stored: int = 90, params: int = 100, tput: float = 1e6,
         higher_is_better: bool = True, tolerance: float = 0.005, task: str = "stsb") -> Record:
    return Record(
        key=cell_key("posthoc", task, method, budget, "cpu", 1, 0), status=status, track="posthoc", seed=0,
        error=None if status == "ok" else "boom",
        method=MethodInfo(name=method, version=version, family="f", reference="r"),
        task=TaskInfo(name=task, version=task_version, track="posthoc", metric="score", higher_is_better=higher_is_better,
                      tolerance=tolerance),
        budget=BudgetInfo(spec=budget, reference_bytes=1000, allowed_bytes=100, stored_bytes=stored),
        device=DeviceInfo(kind="cpu", name="cpu", threads=1),
        params=Params(total=params, trainable=0, embedding=params),
        metrics={"main": main_score},
        measurements={"lookup": {"candidate": {"median": tput}, "dense": {"median": 2e6}, "ratio": tput / 2e6}},
        provenance={"git_sha": "abcdef1234567", "git_dirty": False},
    )


def write_dir(path: Path, records: list[Record]) -> Path:
    store = ResultStore(path)
    for r in records:
        store.write(r)
    return path


BASE = [make("svd"), make("quant-int2", main_score=0.7), make("dense", "1x", 0.82)]


@pytest.fixture()
def base_dir(tmp_path: Path) -> Path:
    return write_dir(tmp_path / "base", BASE)


def run_compare(base: Path, new: Path, *extra: str):
    return CliRunner().invoke(main, ["compare", str(base), str(new), *extra])


def test_identical_is_clean_and_throughput_is_not_gating(base_dir: Path, tmp_path: Path) -> None:
    new = write_dir(tmp_path / "new", [make("svd", tput=3e5), make("quant-int2", main_score=0.7), make("dense", "1x", 0.82)])
    comp = compare_dirs(base_dir, new)
    assert comp.exit_code == 0 and comp.counts["unchanged"] == 3
    svd = next(d for d in comp.diffs if d.key.startswith("posthoc/stsb/svd"))
    assert svd.throughput_ratio == pytest.approx(0.3)
    res = run_compare(base_dir, new)
    assert res.exit_code == 0 and "OK" in res.output


def test_injected_regression_fails(base_dir: Path, tmp_path: Path) -> None:
    new = write_dir(tmp_path / "new", [make("svd", main_score=0.79), make("quant-int2", main_score=0.7 - 0.004),
                                       make("dense", "1x", 0.82)])
    comp = compare_dirs(base_dir, new)
    assert [d.key for d in comp.of_kind("regression")] == ["posthoc/stsb/svd/10x/cpu-1t-s0"]  # -0.004 is within 0.005
    assert "score 0.8 -> 0.79" in comp.of_kind("regression")[0].reasons[0]
    md_path = tmp_path / "out" / "cmp.md"
    res = run_compare(base_dir, new, "--markdown", str(md_path))
    assert res.exit_code == 1
    md = md_path.read_text()
    assert md.startswith("## compbench compare: :x: 1 cell(s) regressed")
    assert "### Regressions" in md and "`posthoc/stsb/svd/10x/cpu-1t-s0`" in md and "| regression | 1 |" in md


def test_injected_improvement_passes(base_dir: Path, tmp_path: Path) -> None:
    new = write_dir(tmp_path / "new", [make("svd", main_score=0.85), make("quant-int2", main_score=0.7),
                                       make("dense", "1x", 0.82)])
    comp = compare_dirs(base_dir, new)
    assert comp.exit_code == 0 and [d.key for d in comp.of_kind("improvement")] == ["posthoc/stsb/svd/10x/cpu-1t-s0"]
    res = run_compare(base_dir, new, "--markdown", "-")
    assert res.exit_code == 0 and ":white_check_mark: no regression" in res.output and "### Improvements" in res.output


def test_lower_is_better_direction() -> None:
    base = make(main_score=0.10, higher_is_better=False, tolerance=0.01)
    assert compare_records(base, make(main_score=0.12, higher_is_better=False, tolerance=0.01)).kind == "regression"
    assert compare_records(base, make(main_score=0.08, higher_is_better=False, tolerance=0.01)).kind == "improvement"
    assert compare_records(base, make(main_score=0.105, higher_is_better=False, tolerance=0.01)).kind == "unchanged"


def test_version_change_is_not_comparable(base_dir: Path, tmp_path: Path) -> None:
    # a new method version may change everything: reported, never gating
    new = write_dir(tmp_path / "new", [make("svd", main_score=0.5, version=2, stored=50), make("quant-int2", main_score=0.7,
                                       task_version=3), make("dense", "1x", 0.82)])
    comp = compare_dirs(base_dir, new)
    assert comp.exit_code == 0 and comp.counts["not_comparable"] == 2
    reasons = {d.key: d.reasons for d in comp.of_kind("not_comparable")}
    assert reasons["posthoc/stsb/svd/10x/cpu-1t-s0"] == ["method svd v1 -> v2"]
    assert reasons["posthoc/stsb/quant-int2/10x/cpu-1t-s0"] == ["task stsb v1 -> v3"]
    assert run_compare(base_dir, new).exit_code == 0


@pytest.mark.parametrize("changed, reason", [
    (make("svd", stored=91), "stored bytes 90 -> 91"),
    (make("svd", stored=89), "stored bytes 90 -> 89"),  # smaller is still a change: bump the version
    (make("svd", params=101), "params.total 100 -> 101"),
    (make("svd", status="failed", main_score=None, stored=None), "status ok -> failed (boom)"),
])
def test_bytes_params_status_must_match_exactly(base_dir: Path, tmp_path: Path, changed: Record, reason: str) -> None:
    new = write_dir(tmp_path / "new", [changed, make("quant-int2", main_score=0.7), make("dense", "1x", 0.82)])
    comp = compare_dirs(base_dir, new)
    (d,) = comp.of_kind("regression")
    assert reason in d.reasons and comp.exit_code == 1
    assert run_compare(base_dir, new).exit_code == 1


def test_missing_and_new_cells(base_dir: Path, tmp_path: Path) -> None:
    new = write_dir(tmp_path / "new", [make("svd"), make("dense", "1x", 0.82), make("quant-binary", main_score=0.6)])
    comp = compare_dirs(base_dir, new)
    assert [d.key for d in comp.of_kind("missing")] == ["posthoc/stsb/quant-int2/10x/cpu-1t-s0"]
    assert [d.key for d in comp.of_kind("new")] == ["posthoc/stsb/quant-binary/10x/cpu-1t-s0"]
    assert comp.exit_code == 1
    assert run_compare(base_dir, new, "--allow-missing").exit_code == 0


def test_malformed_records_are_reported_and_skipped(base_dir: Path, tmp_path: Path) -> None:
    new = write_dir(tmp_path / "new", BASE)
    bad = new / "posthoc/stsb/svd/40x/cpu-1t-s0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1, "key": ')
    (base_dir / "posthoc" / "junk.json").write_text("[]")
    comp = compare_dirs(base_dir, new)
    assert comp.exit_code == 0 and [p.path for p in comp.new_problems] == [bad]
    assert [p.path for p in comp.base_problems] == [base_dir / "posthoc" / "junk.json"]
    res = run_compare(base_dir, new)
    assert res.exit_code == 0 and "skipped malformed record" in res.output and "svd/40x" in res.output
    md = to_markdown(comp)
    assert "### Malformed records (skipped)" in md and "junk.json" in md


def test_usage_errors_exit_2(base_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert run_compare(tmp_path / "nope", base_dir).exit_code == 2
    res = run_compare(base_dir, tmp_path / "empty")
    assert res.exit_code == 2 and "holds no valid record" in res.output and "Traceback" not in res.output
    with pytest.raises(UsageError, match="not found"):
        compare_dirs(base_dir, tmp_path / "nope")


def test_markdown_escapes_table_cells(base_dir: Path, tmp_path: Path) -> None:
    changed = make("svd", status="failed", main_score=None, stored=None)
    changed.error = "bad | pipe\nnewline"
    new = write_dir(tmp_path / "new", [changed, make("quant-int2", main_score=0.7), make("dense", "1x", 0.82)])
    md = to_markdown(compare_dirs(base_dir, new))
    row = next(ln for ln in md.splitlines() if ln.startswith("| `posthoc/stsb/svd"))
    assert "bad \\| pipe newline" in row and row.count(" | ") == 6


def _with_items(path: Path, rec: Record, items) -> None:  # noqa: ANN001
    store = ResultStore(path)
    rec.measurements["items"] = store.write_items(rec.key, items)
    store.write(rec)


def test_a_move_past_the_tolerance_is_a_regression_only_when_it_is_significant(tmp_path: Path) -> None:
    """With per-item outcomes on both sides, a drop larger than the tolerance that the paired bootstrap cannot
    separate from 0 is noise (not gating); a real, consistent drop of the same size is a regression."""
    import numpy as np

    from compbench.stats import Items, score_of

    rng = np.random.default_rng(0)
    base_vals = (rng.random(200) < 0.8).astype(float)
    noisy = base_vals.copy()
    noisy[np.flatnonzero(base_vals == 1)[:7]] = 0  # 7 items go wrong and 4 go right: the mean drops by 0.015,
    noisy[np.flatnonzero(base_vals == 0)[:4]] = 1  # past the tolerance, but 7 vs 4 discordant items is noise
    worse = base_vals.copy()
    worse[np.flatnonzero(base_vals == 1)[:20]] = 0  # 20 items go wrong, none right: a real drop
    for name, vals in (("noisy", noisy), ("worse", worse)):
        b, n = tmp_path / f"b-{name}", tmp_path / f"n-{name}"
        _with_items(b, make(main_score=score_of(Items("mean", base_vals))), Items("mean", base_vals))
        _with_items(n, make(main_score=score_of(Items("mean", vals))), Items("mean", vals))
        (d,) = compare_dirs(b, n).diffs
        assert abs(d.delta) > 0.005
        if name == "noisy":
            assert d.kind == "noise" and "not significant" in d.reasons[0] and not d.paired["significant"]
        else:
            assert d.kind == "regression" and d.paired["significant"]
    # without per-item data the tolerance rule alone applies, and the reason says so
    comp = compare_records(make(main_score=0.8), make(main_score=0.78))
    assert comp.kind == "regression" and "no per-item data" in comp.reasons[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_new_score_is_a_regression(bad: float) -> None:
    d = compare_records(make(main_score=0.8), make(main_score=bad))
    assert d.kind == "regression" and "not a finite score" in " ".join(d.reasons)


def test_a_record_whose_score_disagrees_with_its_own_items_is_a_regression(tmp_path: Path) -> None:
    """Issue 34: a main score edited by hand (or a swapped items sidecar) is caught by its own per-item outcomes."""
    import numpy as np

    from compbench.stats import Items, score_of

    vals = (np.random.default_rng(1).random(200) < 0.8).astype(float)
    good = score_of(Items("mean", vals))
    _with_items(tmp_path / "b", make(main_score=good), Items("mean", vals))
    _with_items(tmp_path / "n", make(main_score=good + 0.02), Items("mean", vals))  # "better", by an edit
    (d,) = compare_dirs(tmp_path / "b", tmp_path / "n").diffs
    assert d.kind == "regression" and "disagrees with its own per-item outcomes" in " ".join(d.reasons)
    _with_items(tmp_path / "n2", make(main_score=good), Items("mean", vals))
    (d2,) = compare_dirs(tmp_path / "b", tmp_path / "n2").diffs
    assert d2.kind == "unchanged"
