"""Render a whole report folder from stored records.

:func:`render_report` is a pure function (records -> ``{relative path: bytes}``);
:func:`write_report` loads a results folder, renders, and writes the files:

```
<out>/index.md, index.html                      overview
<out>/<track>/<task>/<device>.md, .html         one page per track, task and device (device = cpu-1t, ...)
<out>/<track>/<task>/<device>.bytes.png         quality vs stored bytes (referenced by the .md page)
<out>/<track>/<task>/<device>.speed.png         quality vs lookup throughput
<out>/.compbench-report                         manifest of the generated files
```

The HTML pages embed the same PNGs as base64, so each ``.html`` file stands alone. The manifest lets
the next run remove pages that are no longer generated (a task whose records were deleted, or a
narrower ``--task`` filter), and nothing else: files that compbench did not write are never touched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from compbench.bench.results.record import Record
from compbench.bench.results.record_store import LoadProblem, ResultStore
from compbench.errors import UsageError
from compbench.leaderboard import plots, render
from compbench.leaderboard.frame import aggregate, to_frame
from compbench.leaderboard.lm_report import render_markdown as lm_markdown
from compbench.leaderboard.model_compare import comparison_rows
from compbench.leaderboard.model_compare import render_markdown as models_markdown
from compbench.leaderboard.ranking import build_leaderboards, build_overview
from compbench.leaderboard.tuning_compare import render_markdown as tuning_markdown
from compbench.leaderboard.tuning_compare import tuning_rows

log = logging.getLogger(__name__)

MANIFEST = ".compbench-report"


def _match(values: Sequence[str], cells: pd.DataFrame, columns: Sequence[str], what: str) -> pd.Series:
    """Rows whose value in any of ``columns`` is one of ``values``; unknown values raise UsageError."""
    keep = pd.Series(False, index=cells.index)
    known: set[str] = set()
    for col in columns:
        known |= {str(x) for x in cells[col]}
    for v in values:
        hits = pd.Series(False, index=cells.index)
        for col in columns:
            hits |= cells[col].astype(str) == v
        if not hits.any():
            raise UsageError(f"no records for {what} '{v}' (available: {', '.join(sorted(known)) or 'none'})")
        keep |= hits
    return keep


def select_cells(cells: pd.DataFrame, *, tasks: Sequence[str] = (), devices: Sequence[str] = (),
                 tracks: Sequence[str] = ()) -> pd.DataFrame:
    """Filter cells: ``tasks`` match the task (``stsb``, ``trec+bag+d64``, or the plain name ``trec``, each also as
    ``track/task``), ``devices`` match the label (``cpu-1t``) or
    the kind (``cpu``), ``tracks`` match the track. Empty filters keep everything."""
    if cells.empty:
        return cells
    cells = cells.assign(track_task=cells["track"].astype(str) + "/" + cells["task"].astype(str),
                         track_task_name=cells["track"].astype(str) + "/" + cells["task_name"].astype(str))
    keep = pd.Series(True, index=cells.index)
    if tracks:
        keep &= _match(tracks, cells, ["track"], "track")
    if tasks:
        keep &= _match(tasks, cells, ["task", "task_name", "track_task", "track_task_name"], "task")
    if devices:
        keep &= _match(devices, cells, ["device", "device_kind"], "device")
    out = cells[keep].drop(columns=["track_task", "track_task_name"]).reset_index(drop=True)
    if out.empty:
        raise UsageError("no records match the given --track/--task/--device filters together")
    return out


def render_report(records: Iterable[Record], *, tasks: Sequence[str] = (), devices: Sequence[str] = (),
                  tracks: Sequence[str] = (), items: dict[str, Any] | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> dict[str, bytes]:
    """All report files as ``{relative posix path: content}`` (deterministic for the same records and items).

    ``items`` maps record keys to their per-item outcomes (the sidecars), for pooled intervals and ties;
    ``progress(done, total, page)`` is called before each page is drawn (a display; never affects the files)."""
    records = list(records)
    frame = to_frame(records)
    cells = select_cells(aggregate(frame), tasks=tasks, devices=devices, tracks=tracks)
    boards = build_leaderboards(cells, items=items)
    files: dict[str, bytes] = {}
    n_records = 0
    for i, board in enumerate(boards):
        if progress is not None:
            progress(i, len(boards), board.page)
        n_records += board.versions()["records"]
        name = board.page.rsplit("/", 1)[1]
        figs = {k: v for k, v in (("bytes", plots.plot_bytes(board)), ("speed", plots.plot_speed(board))) if v}
        png_names = {k: f"{name}.{k}.png" for k in figs}
        for k, v in figs.items():
            files[f"{board.page}.{k}.png"] = v.png
        depth = board.page.count("/")
        index = "../" * depth
        files[f"{board.page}.md"] = render.page_markdown(board, png_names, index + "index.md").encode()
        files[f"{board.page}.html"] = render.page_html(board, {k: v.svg for k, v in figs.items()}, index + "index.html").encode()

    comparison = comparison_rows(records)
    if comparison and (not tracks or "posthoc" in tracks):  # the same methods on two encoders
        files["posthoc/models.md"] = models_markdown(comparison).encode()

    tuned = tuning_rows(records)
    if tuned:  # each method's default next to its tuned variant, rankings before and after
        files["tuning.md"] = tuning_markdown(tuned).encode()

    lm_page = lm_markdown(records) if (not tracks or "lm" in tracks) else None
    if lm_page:  # perplexity, KL and top-1 per model and mode; the LM ranking beside the STS-B ranking
        files["lm/summary.md"] = lm_page.encode()
    overviews = build_overview(boards)
    index_md = render.index_markdown(overviews, ".md", n_records)
    if "posthoc/models.md" in files:  # link the two-encoder ranking page from the overview
        index_md = index_md.replace("---\n", "Posthoc rankings on two encoders, side by side: "
                                    "[posthoc/models.md](posthoc/models.md)\n\n---\n", 1)
    if "tuning.md" in files:  # link the before/after-tuning page from the overview
        index_md = index_md.replace("---\n", "What tuning bought, method by method, with the rankings before and "
                                    "after: [tuning.md](tuning.md)\n\n---\n", 1)
    if "lm/summary.md" in files:  # link the language-model summary from the overview
        index_md = index_md.replace("---\n", "Language models (perplexity, KL, top-1; the LM ranking beside the "
                                    "STS-B ranking): [lm/summary.md](lm/summary.md)\n\n---\n", 1)
    files["index.md"] = index_md.encode()
    files["summary.md"] = render.summary_markdown(overviews, n_records).encode()
    files["index.html"] = render.index_html(overviews, n_records).encode()
    return dict(sorted(files.items()))


@dataclass
class ReportResult:
    """What :func:`write_report` did."""

    out: Path
    files: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    pages: int = 0
    records: int = 0
    problems: list[LoadProblem] = field(default_factory=list)


def _previous_manifest(out: Path) -> list[str]:
    p = out / MANIFEST
    if not p.is_file():
        return []
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_files(out: Path, files: dict[str, bytes]) -> tuple[list[Path], list[Path]]:
    """Write ``files`` under ``out`` (only when the content changed), remove files of the previous manifest that
    are no longer generated, and write the new manifest. Returns (written paths, removed paths)."""
    root = out.resolve()
    old = _previous_manifest(out)
    written: list[Path] = []
    for rel, data in files.items():
        p = out / rel
        if root not in p.resolve().parents:  # defensive: render.safe_component already prevents this
            raise UsageError(f"refusing to write outside {out}: {rel}")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if not (p.is_file() and p.read_bytes() == data):
                tmp = p.with_name(f".{p.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, p)
        except OSError as exc:
            raise UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
        written.append(p)
    removed: list[Path] = []
    for rel in old:
        if rel in files or rel.startswith("/") or ".." in Path(rel).parts:
            continue
        p = out / rel
        if p.is_file() and root in p.resolve().parents:
            p.unlink()
            removed.append(p)
            parent = p.parent
            while parent.resolve() != root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    (out / MANIFEST).write_text("".join(f"{rel}\n" for rel in files), encoding="utf-8")
    return written, removed


def readme_text(readme: Path) -> str:
    """The text of a README that has exactly one results block (else a one-line usage error)."""
    if not readme.is_file():
        raise UsageError(f"--readme {readme} is not a file")
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --readme {readme}: {getattr(exc, 'strerror', None) or exc}") from exc
    if render.replace_readme_block(text, "") is None:
        raise UsageError(f"--readme {readme} has no results block: add the line {render.SUMMARY_BEGIN} and the "
                         f"line {render.SUMMARY_END} where it goes")
    return text


def update_readme(readme: Path, summary: str, out: Path) -> bool:
    """Replace the marked results block of ``readme`` with ``summary`` (links made relative to the README's
    folder); True when the file changed. A README without exactly one block is a usage error."""
    text = readme_text(readme)
    prefix = os.path.relpath(out.resolve(), readme.resolve().parent).replace(os.sep, "/") + "/"
    new = render.replace_readme_block(text, render.readme_block(summary, "" if prefix == "./" else prefix))
    if new is None or new == text:
        return False
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, readme)
    return True


def write_report(results: Path | str, out: Path | str, *, tasks: Sequence[str] = (), devices: Sequence[str] = (),
                 tracks: Sequence[str] = (), progress: Callable[[int, int, str], None] | None = None,
                 readme: Path | None = None) -> ReportResult:
    """Load every record under ``results`` (malformed ones are returned as problems and skipped), render the
    report and write it under ``out``; with ``readme``, also refresh that file's results block (the report's
    ``summary.md``)."""
    results, out = Path(results), Path(out)
    if not results.is_dir():
        if results.exists():
            raise UsageError(f"--results {results} is a file, not a folder of records")
        raise UsageError(f"results folder {results} does not exist (run `compbench run` first or pass --results)")
    store = ResultStore(results)
    records, problems = store.load_all()
    items = {r.key: it for r in records if (it := store.read_items(r)) is not None}
    if not records:
        raise UsageError(f"no valid records under {results}" + (f" ({len(problems)} malformed)" if problems else ""))
    files = render_report(records, tasks=tasks, devices=devices, tracks=tracks, items=items, progress=progress)
    if readme is not None:  # checked before anything is written
        readme_text(readme)
    written, removed = write_files(out, files)
    if readme is not None and update_readme(readme, files["summary.md"].decode(), out):
        written.append(readme)
    pages = sum(1 for f in files if f.endswith(".html") and f != "index.html")
    n = sum(1 for _ in records)
    return ReportResult(out=out, files=written, removed=removed, pages=pages, records=n, problems=problems)
