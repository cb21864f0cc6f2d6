"""Record store fuzz (issue 34, hypothesis): random corruptions of a results folder never crash ``report``,
``compare``, ``show`` or sweep planning, and a record written by a newer compbench is never modified.

The corruptions start from the committed smoke baseline (six real records) and apply one to three edits: a
field set to a random JSON value (a negative byte count, a string status, a NaN score...), truncation, random
bytes, a copy to another cell's path, a newer schema_version, or a deleted items sidecar. The folder must then
load with every bad file reported as a problem (never an exception), render a report, compare against the
pristine baseline, and plan the smoke sweep; every newer-schema file must be byte-identical afterwards.
The fast loop runs 25 examples; the slow step (``make test-slow``, run by CI) runs 500 (without the PNG plots).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compbench.bench.cell.plan import prepare_sweep
from compbench.bench.results.compare import compare_dirs
from compbench.bench.results.record import Record
from compbench.bench.results.record_store import ResultStore
from compbench.bench.sweeps.suite import load_suite
from compbench.cli import main
from compbench.errors import CompbenchError, NewerRecordError
from compbench.leaderboard.report import write_report

BASELINE = Path(__file__).resolve().parent.parent / "results" / "baselines" / "smoke-cpu"
FILES = sorted(p.relative_to(BASELINE) for p in BASELINE.rglob("*.json") if not p.name.startswith("."))
FIELDS = [("status",), ("seed",), ("key",), ("budget", "stored_bytes"), ("budget", "reference_bytes"),
          ("budget", "achieved_ratio"), ("metrics", "main"), ("metrics", "scores"), ("params", "total"),
          ("device", "threads"), ("task", "version"), ("method", "version"), ("identity",), ("measurements",),
          ("schema_version",)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)

edit = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(range(len(FILES))), st.sampled_from(FIELDS), json_values),
    st.tuples(st.just("truncate"), st.sampled_from(range(len(FILES))), st.floats(0, 1)),
    st.tuples(st.just("bytes"), st.sampled_from(range(len(FILES))), st.binary(max_size=64)),
    st.tuples(st.just("copy"), st.sampled_from(range(len(FILES))), st.sampled_from(range(len(FILES)))),
    st.tuples(st.just("newer"), st.sampled_from(range(len(FILES))), st.integers(3, 10**6)),
    st.tuples(st.just("items"), st.sampled_from(range(len(FILES)))),
)


def _apply(root: Path, e: tuple[Any, ...]) -> None:
    path = root / FILES[e[1]]
    kind = e[0]
    if kind == "field":
        try:
            doc = json.loads(path.read_text())
        except (ValueError, OSError):
            return
        if not isinstance(doc, dict):
            return
        node = doc
        for part in e[2][:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[e[2][-1]] = e[3]
        path.write_text(json.dumps(doc, allow_nan=True))
    elif kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * e[2])])
    elif kind == "bytes":
        path.write_bytes(e[2])
    elif kind == "copy":
        target = root / FILES[e[2]]
        other = target.with_name(target.stem + "-copy.json") if e[1] == e[2] else target
        shutil.copyfile(path, other)
    elif kind == "newer":
        try:
            doc = json.loads(path.read_text())
        except (ValueError, OSError):
            return
        if isinstance(doc, dict):
            doc["schema_version"] = e[2]
            doc["a_field_of_the_future"] = [1, 2, 3]
            path.write_text(json.dumps(doc))
    elif kind == "items":
        for sidecar in path.parent.glob("*.npz"):
            sidecar.unlink()


def _check(edits: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        shutil.copytree(BASELINE, root)
        for e in edits:
            _apply(root, e)
        newer = {}
        for p in root.rglob("*.json"):
            try:
                doc = json.loads(p.read_bytes())
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(doc, dict) and isinstance(doc.get("schema_version"), int) and doc["schema_version"] > 2:
                newer[p] = p.read_bytes()
        store = ResultStore(root)
        records, problems = store.load_all()  # never raises for one file
        assert len(records) + len(problems) >= 1
        try:
            write_report(root, Path(tmp) / "report")
        except CompbenchError:  # "no valid records" is a usage error, never a crash
            assert not records
        try:
            compare_dirs(BASELINE, root)
        except CompbenchError:
            assert not records
        for p in sorted(root.rglob("*.json"))[:2]:
            res = CliRunner().invoke(main, ["show", str(p)])
            assert isinstance(res.exception, SystemExit) or res.exception is None, res.exception
            assert res.exit_code in (0, 1, 2) and "Traceback" not in res.output
        prepare_sweep(load_suite("smoke"), store)  # planning a sweep over the folder never raises
        for p, data in newer.items():
            assert p.read_bytes() == data, f"{p} (a newer schema) was modified"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit, min_size=1, max_size=3))
def test_corrupted_folders_never_crash_the_readers(edits: list[tuple[Any, ...]]) -> None:
    _check(edits)


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 500-example run skips the PNG plots (0.7 s per report; the 25-example run above draws them)."""
    from compbench.leaderboard import plots

    monkeypatch.setattr(plots, "plot_bytes", lambda *a, **k: None)
    monkeypatch.setattr(plots, "plot_speed", lambda *a, **k: None)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edits=st.lists(edit, min_size=1, max_size=3))
def test_corrupted_folders_never_crash_the_readers_500(no_plots: None, edits: list[tuple[Any, ...]]) -> None:
    _check(edits)


def test_a_sweep_never_replaces_a_newer_record(tmp_path: Path) -> None:
    root = tmp_path / "results"
    shutil.copytree(BASELINE, root)
    path = root / FILES[0]
    doc = json.loads(path.read_text())
    doc["schema_version"] = 3
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    store = ResultStore(root)
    for policy in ("only-missing", "always"):
        cells = prepare_sweep(load_suite("smoke"), store, policy)
        (cell,) = [c for c in cells if c.key == doc["key"]]
        assert cell.action == "cached" and "kept" in cell.note
    fresh = Record.model_validate({**doc, "schema_version": 2})
    with pytest.raises(NewerRecordError, match="kept"):
        store.write(fresh)
    assert path.read_bytes() == before
