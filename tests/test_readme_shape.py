"""The README is a front door (issue 33, item 7): short, with the generated results block and the "Use the winner"
section that ``tests/test_export_snippet.py`` runs; the internals live in ``docs/``."""

from __future__ import annotations

import re
from pathlib import Path

from compbench.leaderboard.render import SUMMARY_BEGIN, SUMMARY_END

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
MAX_LINES = 250


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.splitlines()) <= MAX_LINES, f"README.md has {len(README.splitlines())} lines; move details to docs/"


def test_the_readme_has_one_results_block() -> None:
    assert README.count(SUMMARY_BEGIN) == 1 and README.count(SUMMARY_END) == 1
    assert README.index(SUMMARY_BEGIN) < README.index(SUMMARY_END)
    assert README.count("<!-- compbench:results:begin") == 1 and README.count("<!-- compbench:results:end") == 1


def test_the_readme_has_the_use_the_winner_section_with_its_snippet() -> None:
    assert re.search(r"^## Use the winner", README, flags=re.M)
    section = README.split("## Use the winner", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"```python\n(.*?)```", section, flags=re.S), "the snippet test_export_snippet.py runs"


def test_the_results_block_is_the_committed_reports_summary() -> None:
    """The block is ``compbench report --readme README.md``'s copy of reports/summary.md (whose own freshness
    against the records is checked by tests/test_reports_fresh.py): a hand edit or a forgotten refresh fails."""
    from compbench.leaderboard.render import readme_block

    summary = (REPO / "reports" / "summary.md").read_text(encoding="utf-8")
    assert readme_block(summary, "reports/") in README, "run: compbench report --readme README.md"
