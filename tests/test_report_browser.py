"""The generated HTML in a real browser: headless Chromium (the system package) driven by Playwright.

Opens index.html, follows its link to a task page, and checks that the tables and plots are there, that
the plots decode, that nothing is fetched from the network, that no request fails, that the console
stays clean and that an escaped ``<script>`` in a method option neither runs nor disappears. Saves a
screenshot under ``tmp_path``.

Skips (with the reason) only when Playwright or a Chromium binary is missing; ``.ci/install-browser.sh``
installs Chromium. Also a script, to screenshot any report page::

    python tests/test_report_browser.py reports/posthoc/stsb/cpu-1t.html /tmp/report_screenshot.png
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium",
              "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a system Chromium/Chrome binary ($CHROMIUM_PATH first), or None."""
    env = os.environ.get("CHROMIUM_PATH")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return next((c for c in CANDIDATES if Path(c).is_file()), None)


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; the system Chromium is used)"
    if find_chromium() is None:
        return "no Chromium binary found (run .ci/install-browser.sh: apt-get install -y chromium chromium-driver)"
    return None


class PageWatch:
    """Collects console messages, page errors, dialogs, failed and non-local requests of one page."""

    def __init__(self, page: Any):
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.remote: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else self.remote.append(r.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def assert_clean(self) -> None:
        bad = [m for m in self.console if m[0] in ("error", "warning")]
        assert not bad, f"console errors: {bad}"
        assert not self.errors, f"page errors: {self.errors}"
        assert not self.failed, f"failed requests: {self.failed}"
        assert not self.remote, f"network requests: {self.remote}"
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"


def launch(playwright: Any) -> Any:
    """The system Chromium, headless, with no background networking."""
    return playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS)


def screenshot(html: Path, png: Path, width: int = 1280, element: str | None = None) -> PageWatch:
    """Open one report page and save a screenshot of the whole page (or of the first ``element``, a CSS
    selector); returns what the page did."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            watch = PageWatch(page)
            page.goto(html.resolve().as_uri(), wait_until="load")
            if element:
                page.locator(element).first.screenshot(path=str(png))
            else:
                page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return watch


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from compbench.leaderboard.report import render_report, write_files
    from test_report import synthetic_records

    out = tmp_path_factory.mktemp("report")
    write_files(out, render_report(synthetic_records()))
    return out


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_report_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            watch = PageWatch(page)
            page.goto((report_dir / "index.html").resolve().as_uri(), wait_until="load")
            assert page.title() == "compbench leaderboard"
            assert page.locator("table.overview").count() == 1
            assert page.locator("table.overview tbody tr").count() >= 5
            assert page.locator("table.pages a").count() == 2
            # the answer first (issue 35): headline tables with intervals and markers, no sideways scrolling
            assert page.locator("table.headline").count() >= 1
            headlines = page.locator("table.headline").all_inner_texts()
            assert any("40x" in t for t in headlines) and all("★" in t for t in headlines), headlines
            assert all("interval" in t or "[" in t for t in headlines)  # every score shows its interval (or why not)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            page.screenshot(path=str(tmp_path / "index.png"), full_page=True)

            page.locator("table.pages a", has_text="posthoc/stsb/cpu-1t").click()  # the link works
            page.wait_for_load_state("load")
            assert page.url.endswith("/posthoc/stsb/cpu-1t.html")
            assert page.locator("table.pivot").count() == 1 and page.locator("table.details").count() == 1
            # the task page answers first too: its headline table, with intervals and marks, fits the viewport
            head = page.locator("table.headline")
            assert head.count() == 1 and "★" in head.inner_text() and "no interval" in head.inner_text()
            box = head.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1280 and box["y"] < 900, box
            assert page.locator("table.pivot tbody tr").count() == 7
            pivot = page.locator("table.pivot").inner_text()
            assert "over budget" in pivot and "failed" in pivot and "#1" in pivot
            svgs = page.locator("figure svg")
            assert svgs.count() == 2 and page.locator("figure img").count() == 0
            for i in range(2):  # rendered inline, non-trivial, and within the page's width
                box = svgs.nth(i).bounding_box()
                assert box is not None and 400 < box["width"] <= 1280, box
            # the interactive view: every drawn point carries its tooltip; hovering one is a plain SVG hover
            points = page.locator("figure svg g.pt")
            assert points.count() >= 6
            tip = points.first.locator("title").text_content() or ""
            assert " · " in tip and "x · spearman" in tip, tip
            points.first.hover(force=True)
            # the escaped option is visible as text, and no script ran
            assert "<script>alert(1)</script>" in page.locator("table.details").inner_text()
            assert page.evaluate("document.scripts.length") == 0
            shot = tmp_path / "task.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            page.locator("a", has_text="all tasks").click()  # and back
            page.wait_for_load_state("load")
            assert page.url.endswith("/index.html")
            watch.assert_clean()
        finally:
            browser.close()


if __name__ == "__main__":  # pragma: no cover - manual use: screenshot a page
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python tests/test_report_browser.py PAGE.html OUT.png [CSS-SELECTOR]")
    reason = _skip_reason()
    if reason:
        sys.exit(reason)
    w = screenshot(Path(sys.argv[1]), Path(sys.argv[2]), element=sys.argv[3] if len(sys.argv) == 4 else None)
    w.assert_clean()
    print(f"saved {sys.argv[2]}; console, requests and dialogs clean")
