"""Records and the result store: round trip, atomic writes, malformed records skipped, schema versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compbench.bench.cell.identity import cell_key
from compbench.bench.results.record import SCHEMA_VERSION, migrate, to_json
from compbench.bench.results.record_store import LoadProblem, ResultStore, load_record
from compbench.errors import RecordError
from tests_support import make_record  # noqa: E402,F401


def test_key_is_deterministic_and_option_sensitive() -> None:
    a = cell_key("posthoc", "stsb", "svd", "10x", "cpu", 2, 0)
    assert a == "posthoc/stsb/svd/10x/cpu-2t-s0"
    b = cell_key("posthoc", "stsb", "svd", "10x", "cpu", 2, 0, {"rank": "5"})
    assert b.startswith("posthoc/stsb/svd+") and b != a
    assert b == cell_key("posthoc", "stsb", "svd", "10x", "cpu", 2, 0, {"rank": "5"})


def test_round_trip(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    rec = make_record()
    path = store.write(rec)
    assert path == tmp_path / "posthoc/stsb/svd/10x/cpu-1t-s0.json"
    back = store.read(rec.key)
    assert to_json(back) == to_json(rec)
    assert back.budget.achieved_ratio == pytest.approx(11.1111, rel=1e-5)  # rounded at write time
    assert not list(path.parent.glob(".*.tmp"))  # no temp files left behind


def test_malformed_records_are_reported_and_skipped(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(make_record(seed=0))
    store.write(make_record(seed=1))
    bad_json = tmp_path / "posthoc/stsb/svd/10x/cpu-1t-s2.json"
    bad_json.write_text("{ not json")
    wrong_schema = tmp_path / "posthoc/stsb/svd/10x/cpu-1t-s3.json"
    wrong_schema.write_text(json.dumps({"schema_version": 1, "key": "k"}))
    good, bad = store.load_all()
    assert len(good) == 2
    assert {p.path for p in bad} == {bad_json, wrong_schema}
    assert all(isinstance(p, LoadProblem) and str(p.path) in p.reason for p in bad)
    with pytest.raises(RecordError, match="malformed JSON"):
        load_record(bad_json)


def test_newer_schema_refused(tmp_path: Path) -> None:
    doc = json.loads(to_json(make_record()))
    doc["schema_version"] = SCHEMA_VERSION + 1
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(RecordError, match="upgrade compbench"):
        load_record(p)
    assert migrate(json.loads(to_json(make_record())))["schema_version"] == SCHEMA_VERSION


def test_extra_fields_rejected(tmp_path: Path) -> None:
    doc = json.loads(to_json(make_record()))
    doc["surprise"] = 1
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(RecordError, match="surprise"):
        load_record(p)


def test_failed_write_leaves_previous_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(tmp_path)
    rec = make_record(main=0.5)
    store.write(rec)
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.write(make_record(main=0.9))
    monkeypatch.undo()
    assert store.read(rec.key).metrics.main == 0.5
    assert not list((tmp_path / "posthoc/stsb/svd/10x").glob(".*.tmp"))


def test_unwritable_results_folder_fails_before_any_work(tmp_path: Path) -> None:
    """A results path that cannot hold records is refused up front (prepare), so no finished cell is lost."""
    from compbench.bench.cell.context import prepare
    from compbench.config import RunConfig
    from compbench.errors import UsageError

    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    store = ResultStore(blocker / "results")
    with pytest.raises(UsageError, match="not writable"):
        store.check_writable()
    with pytest.raises(UsageError, match="not writable"):
        prepare(RunConfig(method="quant-int8", budget="2x", task="fidelity"), store)
    ResultStore(tmp_path / "ok" / "nested").check_writable()  # creates the folder, leaves no probe behind
    assert list((tmp_path / "ok" / "nested").iterdir()) == []


def test_only_track_folders_hold_records(tmp_path: Path) -> None:
    """A baseline kept under the results folder (results/baselines/...) is not part of that store."""
    store = ResultStore(tmp_path)
    rec = make_record()
    store.write(rec)
    nested = ResultStore(tmp_path / "baselines" / "smoke-cpu")
    nested.write(make_record(method="quant-int8"))
    good, bad = store.load_all()
    assert [r.key for r in good] == [rec.key] and bad == []
    assert len(nested.load_all()[0]) == 1


def test_records_and_sidecars_respect_the_umask(tmp_path) -> None:  # noqa: ANN001
    """A team's shared results folder: records are written 0644 under umask 022 (mkstemp alone makes 0600)."""
    import os
    import stat

    from compbench.bench.results.record_store import ResultStore, file_mode

    old = os.umask(0o022)
    try:
        assert file_mode() == 0o644
        store = ResultStore(tmp_path)
        store._atomic_write(tmp_path / "posthoc" / "x.json", b"{}")
        assert stat.S_IMODE((tmp_path / "posthoc" / "x.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)
