"""Compare two results folders, asv-style: the regression gate of CI.

Cells are matched by key. For each pair:

1. a different method or task **version** -> ``not comparable`` (reported, never gating: a
   deliberate change bumps the version and updates the baseline in the same commit);
2. **status**, **stored bytes** and **params** must match exactly -> otherwise ``regression``;
3. the **main score** must not move in the bad direction (``task.higher_is_better``) by more
   than the task's tolerance (``task.tolerance`` of the base record) -> ``regression``; a move
   in the good direction beyond the tolerance is an ``improvement`` (not gating). When both
   records kept their per-item outcomes (the items sidecar), the move must also be
   statistically significant: a paired bootstrap of the difference on the same test items
   (:func:`compbench.stats.paired_difference`) whose 95% interval excludes 0; a move past
   the tolerance that is not significant is reported as ``noise`` (not gating). Records without
   per-item outcomes keep the tolerance rule alone, and the report says so;
4. **throughput** (lookup tokens/s, new / base, and the in-run ratio to the dense lookup) is
   reported but never gates: shared CPUs are too noisy.

A cell only in BASE is ``missing`` (gating unless ``allow_missing``): the new run lost a
result. A cell only in NEW is ``new``. Malformed records in either folder are reported
with their path and skipped. Exit code: 0 clean, 1 on any regression or missing cell,
2 on usage errors (a folder that does not exist or holds no record).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compbench.bench.results.record import Record
from compbench.bench.results.record_store import LoadProblem, ResultStore
from compbench.errors import UsageError
from compbench.stats import paired_difference, score_of

KINDS = ("regression", "missing", "improvement", "noise", "not_comparable", "unchanged", "new")
GATING = ("regression", "missing")
PARAM_FIELDS = ("total", "trainable", "embedding", "backbone")


@dataclass
class CellDiff:
    """The comparison of one cell."""

    key: str
    kind: str
    reasons: list[str] = field(default_factory=list)
    base: Record | None = None
    new: Record | None = None
    metric: str | None = None
    base_score: float | None = None
    new_score: float | None = None
    tolerance: float | None = None
    throughput_ratio: float | None = None  # new lookup tokens/s / base lookup tokens/s
    base_vs_dense: float | None = None  # in-run lookup ratio to dense, base
    new_vs_dense: float | None = None
    paired: dict[str, Any] | None = None  # paired bootstrap of new - base on the shared items (both have items)

    @property
    def delta(self) -> float | None:
        """new - base main score."""
        if self.base_score is None or self.new_score is None:
            return None
        return self.new_score - self.base_score


@dataclass
class Comparison:
    """All cell diffs of two folders plus the malformed records found."""

    base_dir: Path
    new_dir: Path
    diffs: list[CellDiff]
    base_problems: list[LoadProblem] = field(default_factory=list)
    new_problems: list[LoadProblem] = field(default_factory=list)
    allow_missing: bool = False
    base_count: int = 0
    new_count: int = 0
    base_git: str | None = None
    new_git: str | None = None

    def of_kind(self, kind: str) -> list[CellDiff]:
        """Diffs of one kind."""
        return [d for d in self.diffs if d.kind == kind]

    @property
    def counts(self) -> dict[str, int]:
        """Number of cells per kind (every kind present, zeros included)."""
        c = Counter(d.kind for d in self.diffs)
        return {k: c.get(k, 0) for k in KINDS}

    @property
    def gating(self) -> list[CellDiff]:
        """The diffs that fail the comparison."""
        kinds = ("regression",) if self.allow_missing else GATING
        return [d for d in self.diffs if d.kind in kinds]

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 on any regression (or missing cell unless allowed)."""
        return 1 if self.gating else 0


def _lookup(rec: Record) -> tuple[float | None, float | None]:
    lk = rec.measurements.get("lookup") if isinstance(rec.measurements, dict) else None
    if not isinstance(lk, dict):
        return None, None
    cand = lk.get("candidate") if isinstance(lk.get("candidate"), dict) else {}
    med = cand.get("median") if isinstance(cand, dict) else None
    ratio = lk.get("ratio")
    return (float(med) if isinstance(med, (int, float)) else None,
            float(ratio) if isinstance(ratio, (int, float)) else None)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _items_disagree(rec: Record, items: Any) -> str | None:
    """A line when ``rec``'s main score is not what its own per-item outcomes give (an edited or corrupted record
    or sidecar): more apart than the task's tolerance and 0.1% of the score (float32 items round a little)."""
    main = rec.metrics.main
    if items is None or rec.status != "ok" or main is None or not math.isfinite(main):
        return None

    try:
        own = float(score_of(items))
    except (ValueError, TypeError):
        return "its per-item outcomes cannot be scored"
    if not math.isfinite(own) or abs(own - main) > max(float(rec.task.tolerance), 1e-3 * abs(main)):
        return (f"{rec.task.metric} {main:.6g} disagrees with its own per-item outcomes ({own:.6g}): "
                "the record or its items sidecar was changed")
    return None


def compare_records(base: Record, new: Record, base_items: Any = None, new_items: Any = None) -> CellDiff:
    """Compare two records of the same cell (see the module docstring for the rules); ``base_items`` and
    ``new_items`` are their per-item outcomes when both kept them."""
    d = CellDiff(key=base.key, kind="unchanged", base=base, new=new, metric=base.task.metric,
                 base_score=base.metrics.main, new_score=new.metrics.main, tolerance=base.task.tolerance)
    bt, bv = _lookup(base)
    nt, nv = _lookup(new)
    d.throughput_ratio = (nt / bt) if (bt and nt) else None
    d.base_vs_dense, d.new_vs_dense = bv, nv
    if base.method.version != new.method.version:
        d.reasons.append(f"method {base.method.name} v{base.method.version} -> v{new.method.version}")
    if base.task.version != new.task.version:
        d.reasons.append(f"task {base.task.name} v{base.task.version} -> v{new.task.version}")
    if d.reasons:
        d.kind = "not_comparable"
        return d
    regress: list[str] = []
    if base.status != new.status:
        err = f" ({new.error})" if new.error else ""
        regress.append(f"status {base.status} -> {new.status}{err}")
    if base.budget.stored_bytes != new.budget.stored_bytes:
        regress.append(f"stored bytes {_fmt(base.budget.stored_bytes)} -> {_fmt(new.budget.stored_bytes)}")
    for f in PARAM_FIELDS:
        a, b = getattr(base.params, f), getattr(new.params, f)
        if a != b:
            regress.append(f"params.{f} {_fmt(a)} -> {_fmt(b)}")
    improve: list[str] = []
    mismatch = _items_disagree(new, new_items)
    if mismatch:
        regress.append(mismatch)
    if base.metrics.main is not None or new.metrics.main is not None:
        if base.metrics.main is None or new.metrics.main is None:
            if base.status == new.status:
                regress.append(f"{d.metric} {_fmt(base.metrics.main)} -> {_fmt(new.metrics.main)}")
        elif not math.isfinite(new.metrics.main) or not math.isfinite(base.metrics.main):
            regress.append(f"{d.metric} {_fmt(base.metrics.main)} -> {_fmt(new.metrics.main)}: not a finite score")
        else:
            delta = new.metrics.main - base.metrics.main
            bad = -delta if base.task.higher_is_better else delta
            tol = float(base.task.tolerance)
            direction = "higher" if base.task.higher_is_better else "lower"
            text = f"{d.metric} {base.metrics.main:.6g} -> {new.metrics.main:.6g} ({delta:+.6g}; tolerance {tol:g}, {direction} is better)"
            beyond = bad > tol + 1e-12 or -bad > tol + 1e-12
            if beyond and base_items is not None and new_items is not None:
                try:
                    d.paired = paired_difference(new_items, base_items)
                except ValueError:  # different items: the tolerance rule alone
                    d.paired = None
            if beyond and d.paired is not None and not d.paired["significant"]:
                d.kind = "noise"
                d.reasons = [f"{text}; not significant: paired 95% interval of the difference "
                             f"[{d.paired['low']:+.4g}, {d.paired['high']:+.4g}] contains 0"]
                if not regress:
                    return d
            elif bad > tol + 1e-12:
                regress.append(text + ("" if d.paired is not None else "; no per-item data: tolerance rule only"))
            elif -bad > tol + 1e-12:
                improve.append(text)
    if regress:
        d.kind, d.reasons = "regression", regress
    elif improve:
        d.kind, d.reasons = "improvement", improve
    return d


def _git(records: list[Record]) -> str | None:
    shas = Counter(str(r.provenance.get("git_sha"))[:10] + ("+dirty" if r.provenance.get("git_dirty") else "")
                   for r in records if r.provenance.get("git_sha"))
    return shas.most_common(1)[0][0] if shas else None


def load_dir(path: Path | str, role: str) -> tuple[list[Record], list[LoadProblem]]:
    """Every valid record of a results folder and the problems of the malformed ones (UsageError if none)."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{role} results folder {p} is a file, not a folder of records" if p.exists()
                         else f"{role} results folder not found: {p}")
    good, bad = ResultStore(p).load_all()
    if not good:
        extra = f" ({len(bad)} malformed)" if bad else ""
        raise UsageError(f"{role} results folder {p} holds no valid record{extra}")
    return good, bad


def compare_dirs(base_dir: Path | str, new_dir: Path | str, *, allow_missing: bool = False) -> Comparison:
    """Compare every cell of two results folders (see the module docstring)."""
    base, base_bad = load_dir(base_dir, "base")
    new, new_bad = load_dir(new_dir, "new")
    b = {r.key: r for r in base}
    n = {r.key: r for r in new}
    bs, ns = ResultStore(base_dir), ResultStore(new_dir)
    diffs: list[CellDiff] = []
    for key in sorted(set(b) | set(n)):
        if key in b and key in n:
            diffs.append(compare_records(b[key], n[key], bs.read_items(b[key]), ns.read_items(n[key])))
        elif key in b:
            diffs.append(CellDiff(key=key, kind="missing", base=b[key], metric=b[key].task.metric,
                                  base_score=b[key].metrics.main, reasons=["no record in the new results"]))
        else:
            diffs.append(CellDiff(key=key, kind="new", new=n[key], metric=n[key].task.metric,
                                  new_score=n[key].metrics.main, reasons=["no record in the base results"]))
    return Comparison(base_dir=Path(base_dir), new_dir=Path(new_dir), diffs=diffs, base_problems=base_bad,
                      new_problems=new_bad, allow_missing=allow_missing, base_count=len(base), new_count=len(new),
                      base_git=_git(base), new_git=_git(new))


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def _md(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    s = _fmt(text) if not isinstance(text, str) else text
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def to_markdown(comp: Comparison, *, max_rows: int = 200) -> str:
    """A summary ready to paste into a PR comment."""
    c = comp.counts
    gating = comp.gating
    if gating:
        head = f"## compbench compare: :x: {len(gating)} cell(s) regressed"
    else:
        head = "## compbench compare: :white_check_mark: no regression"
    lines = [head, ""]
    lines.append(f"Base `{_md(str(comp.base_dir))}` ({comp.base_count} records"
                 + (f", git `{comp.base_git}`" if comp.base_git else "") + f") vs new `{_md(str(comp.new_dir))}` "
                 f"({comp.new_count} records" + (f", git `{comp.new_git}`" if comp.new_git else "") + ").")
    lines.append("")
    lines.append("Rules: status, stored bytes and params must match exactly; the main score must stay within the "
                 "task's tolerance, and a move past it counts only when the paired difference on the same test items "
                 "is significant (95% bootstrap; records without per-item data: the tolerance alone); throughput is "
                 "reported, never gating; a changed method/task version is not comparable.")
    lines.append("")
    lines.append("| outcome | cells |")
    lines.append("|---|---:|")
    labels = {"regression": "regression", "missing": "missing in new" + (" (allowed)" if comp.allow_missing else ""),
              "improvement": "improvement", "noise": "past the tolerance but not significant (noise)",
              "not_comparable": "not comparable (version changed)",
              "unchanged": "unchanged", "new": "new cells"}
    for k in KINDS:
        lines.append(f"| {labels[k]} | {c[k]} |")
    if comp.base_problems or comp.new_problems:
        lines.append(f"| malformed records (skipped) | {len(comp.base_problems) + len(comp.new_problems)} |")
    lines.append("")

    def section(title: str, kind: str, scored: bool) -> None:
        rows = comp.of_kind(kind)
        if not rows:
            return
        lines.append(f"### {title}")
        lines.append("")
        if scored:
            lines.append("| cell | metric | base | new | delta | tolerance | what changed |")
            lines.append("|---|---|---:|---:|---:|---:|---|")
            for d in rows[:max_rows]:
                lines.append(f"| `{_md(d.key)}` | {_md(d.metric or '-')} | {_md(d.base_score)} | {_md(d.new_score)} | "
                             f"{'-' if d.delta is None else f'{d.delta:+.4g}'} | {_md(d.tolerance)} | {_md('; '.join(d.reasons))} |")
        else:
            lines.append("| cell | detail |")
            lines.append("|---|---|")
            for d in rows[:max_rows]:
                lines.append(f"| `{_md(d.key)}` | {_md('; '.join(d.reasons))} |")
        if len(rows) > max_rows:
            lines.append(f"| ... | {len(rows) - max_rows} more |")
        lines.append("")

    section("Regressions", "regression", True)
    section("Missing in new" + (" (allowed)" if comp.allow_missing else ""), "missing", False)
    section("Improvements", "improvement", True)
    section("Noise (past the tolerance, not significant)", "noise", True)
    section("Not comparable (version changed)", "not_comparable", False)
    section("New cells", "new", False)

    timed = [d for d in comp.diffs if d.throughput_ratio is not None]
    if timed:
        lines.append("<details><summary>Lookup throughput (reported, not gating)</summary>")
        lines.append("")
        lines.append("| cell | new / base tokens/s | vs dense (base) | vs dense (new) |")
        lines.append("|---|---:|---:|---:|")
        for d in timed[:max_rows]:
            lines.append(f"| `{_md(d.key)}` | {_ratio(d.throughput_ratio)} | {_ratio(d.base_vs_dense)} | {_ratio(d.new_vs_dense)} |")
        lines.append("")
        lines.append("</details>")
        lines.append("")
    problems = [("base", p) for p in comp.base_problems] + [("new", p) for p in comp.new_problems]
    if problems:
        lines.append("### Malformed records (skipped)")
        lines.append("")
        for role, p in problems:
            lines.append(f"- {role}: `{_md(str(p.path))}`: {_md(p.reason)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["CellDiff", "Comparison", "compare_dirs", "compare_records", "load_dir", "to_markdown"]
