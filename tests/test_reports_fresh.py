"""The committed reports are build outputs (issue 35): regenerating them from the committed ``results/`` gives
the committed ``reports/`` byte for byte, and every file of the last render is listed in its manifest, so a stale
or hand-edited page cannot land. Slow (it renders every page: minutes on a busy 2-core machine); CI runs it in
``make test-slow``. To fix a failure: ``compbench report --results results --out reports`` and commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from compbench.bench.results.record_store import ResultStore
from compbench.leaderboard.report import MANIFEST, render_report

REPO = Path(__file__).resolve().parents[1]


def stale_files(results: Path, reports: Path) -> list[str]:
    """The report files that differ from a fresh render of ``results`` (or are missing, or left over)."""
    store = ResultStore(results)
    records, _ = store.load_all()
    items = {r.key: it for r in records if (it := store.read_items(r)) is not None}
    files = render_report(records, items=items)
    stale = [rel for rel, data in files.items()
             if not (reports / rel).is_file() or (reports / rel).read_bytes() != data]
    manifest = (reports / MANIFEST).read_text(encoding="utf-8").split() if (reports / MANIFEST).is_file() else []
    stale += [f"{rel} (left over: not generated any more)" for rel in manifest if rel not in files]
    stale += [f"{rel} (generated, not in the manifest)" for rel in files if rel not in manifest]
    return sorted(stale)


@pytest.mark.slow
def test_committed_reports_match_the_committed_records() -> None:
    stale = stale_files(REPO / "results", REPO / "reports")
    assert not stale, ("stale report files (run `compbench report --results results --out reports`): "
                       + ", ".join(stale[:20]))


def test_a_hand_edited_page_is_found(tmp_path: Path) -> None:
    """The checker itself, on a small store: a fresh render passes, an edited page and a left-over file fail."""
    from compbench.bench.results.record_store import ResultStore as Store
    from compbench.leaderboard.report import write_report
    from test_report import synthetic_records

    results = tmp_path / "results"
    store = Store(results)
    for r in synthetic_records():
        store.write(r)
    reports = tmp_path / "reports"
    write_report(results, reports)
    assert stale_files(results, reports) == []
    page = reports / "index.md"
    page.write_text(page.read_text().replace("compbench leaderboard", "compbench leaderboard (edited)"))
    assert stale_files(results, reports) == ["index.md"]
    (reports / MANIFEST).write_text((reports / MANIFEST).read_text() + "posthoc/old/cpu-1t.md\n")
    assert "posthoc/old/cpu-1t.md (left over: not generated any more)" in stale_files(results, reports)
