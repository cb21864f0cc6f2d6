"""Property-based tests (hypothesis): budget parsing, byte accounting, record round trip."""

from __future__ import annotations

import json
import math

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.budget import Budget
from compbench.bench.results.record import to_json
from compbench.bench.results.record_store import ResultStore
from compbench.errors import BudgetError, UnattainableBudgetError
from compbench.methods import get_method
from test_report import make_record as report_record

REF = 30522 * 384 * 4


@given(st.text(max_size=12))
def test_parse_never_crashes_unexpectedly(text: str) -> None:
    try:
        b = Budget.parse(text)
    except BudgetError as exc:
        assert "\n" not in str(exc) and "valid forms" in str(exc)
        return
    assert Budget.parse(str(b)) == b
    assert 1 <= b.resolve(REF) or b.max_bytes is not None


@given(st.floats(min_value=1, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_ratio_round_trip_and_resolve(r: float) -> None:
    text = f"{r:.3f}".rstrip("0").rstrip(".") + "x"
    b = Budget.parse(text)
    assert Budget.parse(str(b)) == b
    assert b.resolve(REF) == math.floor(REF / b.ratio)


@given(st.integers(min_value=1, max_value=10**12), st.sampled_from(["B", "KB", "MB", "KiB", "MiB"]))
def test_size_forms(n: int, unit: str) -> None:
    b = Budget.parse(f"{n}{unit}")
    assert b.max_bytes >= n
    assert str(b) == f"{b.max_bytes}B"


_TABLE = torch.randn(120, 32, generator=torch.Generator().manual_seed(0))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["svd", "quant-int2", "quant-int4", "quant-binary", "quant-fp8"]),
       st.integers(min_value=1, max_value=120 * 32 * 4))
def test_bytes_never_exceed_budget_and_monotone(name: str, budget: int) -> None:
    m = get_method(name)
    try:
        cfg = m.configure(120, 32, budget)
    except UnattainableBudgetError as exc:
        assert exc.min_bytes > budget
        return
    nbytes = stored_bytes(m.compress(_TABLE, cfg, seed=0))
    assert nbytes <= budget
    # a larger budget never yields a smaller (worse-fitting) configuration
    cfg2 = m.configure(120, 32, budget * 2)
    assert stored_bytes(m.compress(_TABLE, cfg2, seed=0)) >= nbytes


@settings(max_examples=30, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=20),
       st.dictionaries(st.text(min_size=1, max_size=8), st.integers(-1000, 1000), max_size=3))
def test_record_round_trip(score: float, text: str, config: dict) -> None:
    import tempfile

    from tests_support import make_record  # noqa: PLC0415

    rec = make_record(main=score)
    rec.method.config = config
    rec.error = text or None
    with tempfile.TemporaryDirectory() as d:
        store = ResultStore(d)
        store.write(rec)
        back = store.read(rec.key)
    assert to_json(back) == to_json(rec)
    assert json.loads(to_json(back))["method"]["config"] == config


# ------------------------------------------------------------------------------------------------------------------
# record loading and migration (issue 7, part 5)
# ------------------------------------------------------------------------------------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
_RECORD_KEYS = ["schema_version", "key", "status", "error", "track", "seed", "method", "task", "budget", "device",
                "params", "metrics", "measurements", "model", "provenance"]


def _good_doc() -> dict:
    from tests_support import make_record  # noqa: PLC0415

    return json.loads(to_json(make_record()))


@settings(max_examples=60, deadline=None)
@given(st.one_of(_JSON, st.fixed_dictionaries({}, optional={k: _JSON for k in _RECORD_KEYS})),
       st.sampled_from(["replace", "merge"]))
@example(doc={"\n": None}, how="merge")  # a field name holding a newline
def test_any_json_document_loads_or_is_a_record_error(doc, how: str) -> None:
    """Fuzz: whatever JSON a record file holds, loading yields a Record or a one-line RecordError naming the file."""
    import tempfile
    from pathlib import Path

    from compbench.bench.results.record_store import load_record  # noqa: PLC0415
    from compbench.errors import RecordError  # noqa: PLC0415

    if how == "merge" and isinstance(doc, dict):
        doc = {**_good_doc(), **doc}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.json"
        p.write_text(json.dumps(doc), encoding="utf-8")
        try:
            rec = load_record(p)
        except RecordError as exc:
            assert str(p) in str(exc) and "\n" not in str(exc)
            return
    assert rec.schema_version >= 1


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_load_or_are_a_record_error(blob: bytes) -> None:
    import tempfile
    from pathlib import Path

    from compbench.bench.results.record_store import load_record  # noqa: PLC0415
    from compbench.errors import RecordError  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.json"
        p.write_bytes(blob)
        try:
            load_record(p)
        except RecordError as exc:
            assert str(p) in str(exc) and "\n" not in str(exc)


@given(st.integers())
def test_migrate_accepts_exactly_the_known_versions(version: int) -> None:
    from compbench.bench.results.record import SCHEMA_VERSION, SchemaError, migrate  # noqa: PLC0415

    doc = {**_good_doc(), "schema_version": version}
    if 1 <= version <= SCHEMA_VERSION:
        assert migrate(doc)["schema_version"] == SCHEMA_VERSION
    else:
        try:
            migrate(doc)
        except SchemaError as exc:
            assert ("upgrade compbench" in str(exc)) == (version > SCHEMA_VERSION)
        else:  # pragma: no cover - the failure this test looks for
            raise AssertionError(f"schema_version {version} was accepted")


def _v0_layout(doc: dict) -> dict:
    """A hypothetical older layout of the same record: the main score at the top level as ``score``."""
    old = json.loads(json.dumps(doc))
    old["score"] = old["metrics"].pop("main")
    old["schema_version"] = doc["schema_version"] - 1
    return old


def _to_current(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["metrics"]["main"] = doc.pop("score")
    return doc


@settings(max_examples=30, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=12),
       st.integers(min_value=0, max_value=10**6))
def test_older_records_migrate_to_the_current_schema_and_round_trip(score: float, text: str, seed: int) -> None:
    """The migration chain, with one extra (synthetic) schema step: an older document is upgraded step by step,
    validates, and write -> read gives the identical current document."""
    import tempfile

    from compbench.bench.results import record as record_mod  # noqa: PLC0415
    from compbench.bench.results.record_store import ResultStore, load_record  # noqa: PLC0415
    from tests_support import make_record  # noqa: PLC0415

    rec = make_record(main=score, seed=seed)
    rec.error = text or None
    current = json.loads(to_json(rec))
    real_version, real_migrations = record_mod.SCHEMA_VERSION, dict(record_mod.MIGRATIONS)
    next_version = real_version + 1
    try:
        record_mod.SCHEMA_VERSION = next_version
        record_mod.MIGRATIONS[next_version] = _to_current
        newest = {**current, "schema_version": next_version}
        old = _v0_layout(newest)
        assert record_mod.migrate(json.loads(json.dumps(old))) == newest
        with tempfile.TemporaryDirectory() as d:
            from pathlib import Path

            p = Path(d) / "old.json"
            p.write_text(json.dumps(old), encoding="utf-8")
            upgraded = load_record(p)
            assert upgraded.schema_version == next_version
            store = ResultStore(d)
            back = store.read(store.write(upgraded).relative_to(d).with_suffix("").as_posix())
            assert to_json(back) == to_json(upgraded)
            assert json.loads(to_json(back)) == newest
    finally:
        record_mod.SCHEMA_VERSION = real_version
        record_mod.MIGRATIONS.clear()
        record_mod.MIGRATIONS.update(real_migrations)


# ------------------------------------------------------------------------------------------------------------------
# user data loaders on random malformed files
# ------------------------------------------------------------------------------------------------------------------
_CELL = st.one_of(st.text(max_size=12), st.integers(-5, 5).map(str), st.floats().map(str), st.just(""),
                  st.sampled_from(["nan", "inf", "-inf", "1e999", "true", "NULL", '"', "a,b", "\n", "\x00"]))
_COLUMNS = ["sentence1", "sentence2", "score", "text", "label", "split", "junk"]


def _check_loaders(path) -> None:
    """Both loaders return well-formed data or raise a CompbenchError subclass with a one-line message."""
    import numpy as np

    from compbench.errors import CompbenchError  # noqa: PLC0415
    from compbench.tasks.adhoc import load_classification, load_sts  # noqa: PLC0415

    for loader in (load_sts, load_classification):
        try:
            out = loader(path)
        except CompbenchError as exc:
            assert str(exc) and "\n" not in str(exc).strip()
            continue
        if loader is load_sts:
            s1, s2, scores = out
            assert len(s1) == len(s2) == len(scores) >= 3 and np.isfinite(scores).all()
        else:
            texts, y, is_test, _ = out
            assert len(texts) == len(y) == len(is_test) and is_test.any() and (~is_test).any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_COLUMNS), min_size=0, max_size=5, unique=True), st.lists(st.lists(_CELL, min_size=5,
       max_size=5), max_size=8), st.sampled_from([".csv", ".tsv"]))
@example(columns=[], rows=[["\n", "", "", "", ""], ["", "", "", "", ""]], suffix=".csv")  # a header cell holding a newline
def test_random_delimited_files_load_or_raise_a_compbench_error(columns, rows, suffix: str) -> None:
    import csv
    import io
    import tempfile
    from pathlib import Path

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t" if suffix == ".tsv" else ",")
    if columns:
        writer.writerow(columns)
    for r in rows:
        writer.writerow(r[: max(len(columns), 1)])
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"data{suffix}"
        p.write_text(buf.getvalue(), encoding="utf-8")
        _check_loaders(p)


_PARQUET_VALUES = st.one_of(
    st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=1, max_size=6),
    st.lists(st.floats(), min_size=1, max_size=6),
    st.lists(st.integers(-3, 3), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), st.integers(0, 2)), min_size=1, max_size=6),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_COLUMNS), _PARQUET_VALUES, max_size=5), st.integers(0, 3))
def test_random_parquet_files_load_or_raise_a_compbench_error(columns, cut: int) -> None:
    import tempfile
    from pathlib import Path

    import pandas as pd

    n = min((len(v) for v in columns.values()), default=0)
    df = pd.DataFrame({k: v[:n] for k, v in columns.items()})
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "data.parquet"
        df.to_parquet(p)
        if cut:  # truncate: a partial download or a full disk
            blob = p.read_bytes()
            p.write_bytes(blob[: len(blob) * cut // 4])
        _check_loaders(p)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([".csv", ".tsv", ".parquet"]))
def test_random_bytes_load_or_raise_a_compbench_error(blob: bytes, suffix: str) -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"data{suffix}"
        p.write_bytes(blob)
        _check_loaders(p)


# ------------------------------------------------------------------------------------------------------------------
# the HTML renderer escapes arbitrary strings
# ------------------------------------------------------------------------------------------------------------------
def _tags(html_text: str) -> set[str]:
    from html.parser import HTMLParser

    found: set[str] = set()

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):  # noqa: ANN001
            found.add(tag)

    Collector().feed(html_text)
    return found


def _pages(payload: str) -> list[str]:
    """Every HTML page of a small leaderboard whose records carry ``payload`` in every free-text field."""
    from compbench.leaderboard import render  # noqa: PLC0415
    from compbench.leaderboard.frame import aggregate, to_frame  # noqa: PLC0415
    from compbench.leaderboard.ranking import build_leaderboards, build_overview  # noqa: PLC0415
    from compbench.leaderboard.report import select_cells  # noqa: PLC0415

    recs = [report_record("dense", 1, 0.8, stored=1000 * 64 * 4),
            report_record("svd", 10, 0.7, options={"note": payload}, config={"rank": 4, "tag": payload}),
            report_record("hashing", 40, None, status="failed", error=payload)]
    recs[1].device.name = payload
    recs[1].task.dataset = payload
    boards = build_leaderboards(select_cells(aggregate(to_frame(recs))))
    pages = [render.page_html(b, {}, "../../index.html") for b in boards]
    return [*pages, render.index_html(build_overview(boards), len(recs))]


_PLAIN_TAGS: set[str] = set()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=30), st.sampled_from(["<script>alert(1)</script>", "<img src=x onerror=1>",
                                                           "\"><iframe>", "<link rel=stylesheet href=//x>", "<!--",
                                                           "]]>"]))
def test_html_pages_escape_arbitrary_record_strings(text: str, attack: str) -> None:
    """Whatever text a record carries (error, options, config, device name, dataset), the HTML pages contain
    only the elements the renderer itself writes for plain text, and show the text escaped."""
    from compbench.leaderboard.render import h  # noqa: PLC0415

    if not _PLAIN_TAGS:
        _PLAIN_TAGS.update(t for page in _pages("plain text") for t in _tags(page))
    payload = f"{attack}{text}"
    pages = _pages(payload)
    for page in pages:
        assert attack not in page
        assert _tags(page) <= _PLAIN_TAGS, _tags(page) - _PLAIN_TAGS
    assert h(payload) in "".join(pages)  # shown, as text
