"""Per-page leaderboards (one per track, task and device) and the overview across tasks.

- Ranks are computed **within each budget** and only among *rankable* cells: status ``ok``,
  stored bytes within the allowed bytes, and a main score. Ties share the best rank
  (``1, 1, 3``). Over-budget, failed and skipped cells carry no rank.
- Pareto flags (faiss ``ParetoMetric.SPACE`` / ``TIME``) are computed over all rankable cells of a
  page, across budgets: ``pareto_bytes`` in (stored bytes lower, score better) and
  ``pareto_speed`` in (lookup throughput ratio vs dense higher, score better). A cell is on a front
  when no other cell is at least as good in both and strictly better in one (equal points are
  all kept).
- **Systems** are not ranked: a cell whose identity differs from the dense reference of its page only in
  its initialisation or its classifier head (ADE's own SAT classifier, initialised from the pretrained
  table) is shown next to the dense model of the same width in a table of its own, with its head's size
  and cost, never in the ranking, the Pareto fronts or the overview (:mod:`compbench.bench.cell.identity`).
- **Uncertainty**: every score carries its 95% bootstrap interval when its records kept per-item outcomes
  (:mod:`compbench.stats`). At each budget, every rankable cell is compared with the best cell on the
  same test items (paired bootstrap of the difference); cells not significantly different from the best at
  5% are *tied* with it and share the rank range ``1–k`` (``k`` = the tie's size). A cell without per-item
  outcomes (older records) shows "no interval" and can be neither tied nor separated: it keeps its plain rank.
- Retention vs dense: the record's own value; when a record has none (e.g. a track that does not
  run the dense reference itself) and the metric is higher-is-better, ``main / dense main`` using the
  page's ``dense`` cell at its loosest budget.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from compbench import stats
from compbench.leaderboard.frame import current_versions
from compbench.leaderboard.slugs import safe_component
from compbench.stats import Items

#: record key -> its per-item outcomes (compbench.stats.Items), loaded by the report from the sidecars
ItemsByKey = dict[str, Any]

DENSE = "dense"


def better(a: float, b: float, higher_is_better: bool) -> bool:
    """Whether score ``a`` is strictly better than ``b``."""
    return a > b if higher_is_better else a < b


def pareto_flags(xs: Sequence[float], ys: Sequence[float], *, maximize_x: bool, maximize_y: bool) -> list[bool]:
    """For each point, whether it is Pareto-optimal (no other point is >= in both and > in one)."""
    sx = 1.0 if maximize_x else -1.0
    sy = 1.0 if maximize_y else -1.0
    pts = [(sx * x, sy * y) for x, y in zip(xs, ys, strict=True)]
    flags = []
    for i, (xi, yi) in enumerate(pts):
        dominated = any(xj >= xi and yj >= yi and (xj > xi or yj > yi) for j, (xj, yj) in enumerate(pts) if j != i)
        flags.append(not dominated)
    return flags


def rankable(cell: dict[str, Any]) -> bool:
    """ok, within budget, with a main score, and not a system: the only cells that get a rank or a Pareto flag."""
    return (cell["status"] == "ok" and bool(cell["in_budget"]) and cell["main"] is not None
            and not cell.get("system"))


#: the budgets the index answers first (issue 35); every other budget is on the task pages and in "all budgets"
HEADLINE_BUDGETS = ("10x", "40x", "100x")
#: the headline budget whose rank orders the index's rows and picks the methods a plot draws in colour
HEADLINE_ORDER = "40x"


def headline_key(variant: str, cell: dict[str, Any] | None, higher_is_better: bool) -> tuple[Any, ...]:
    """Sort key of a variant by its cell at the ordering budget: ranked cells first by rank then score, then the
    variants without a ranked cell there (by name)."""
    if cell is None or cell.get("rank") is None:
        return (1, math.inf, 0.0, variant)
    return (0, cell["rank"], (-1.0 if higher_is_better else 1.0) * cell["main"], variant)


def headline_order(board: Leaderboard) -> tuple[str, ...]:
    """The page's non-dense variants ordered by their rank at 40x (else the first headline budget the page has,
    else its loosest budget), then the rest in the page's row order (mean rank over budgets)."""
    budgets = [b for b in HEADLINE_BUDGETS if b in board.budgets] or list(board.budgets[:1])
    order = HEADLINE_ORDER if HEADLINE_ORDER in budgets else (budgets[0] if budgets else "")
    cells = {c["variant"]: c for c in board.rows() if c["budget"] == order and rankable(c)}
    pos = {v: i for i, v in enumerate(board.methods)}
    variants = [v for v in board.methods if v != DENSE]
    return tuple(sorted(variants, key=lambda v: (headline_key(v, cells.get(v), board.higher_is_better)[:3], pos[v])))


def _competition_ranks(scores: list[float], higher_is_better: bool) -> list[int]:
    return [1 + sum(better(o, s, higher_is_better) for o in scores) for s in scores]


@dataclass(frozen=True)
class Leaderboard:
    """One page: the cells of a (track, task, device), their ranks and Pareto flags.

    ``cells`` holds the aggregated cells (see :func:`compbench.leaderboard.frame.aggregate`) plus the
    columns named by ``rank_column`` and ``pareto_columns``; ``methods`` and ``budgets`` give the row and
    column order of the method x budget table (rows by mean rank over budgets, columns loosest budget first).
    """

    track: str
    task: str
    device: str
    metric: str
    higher_is_better: bool
    cells: pd.DataFrame
    methods: tuple[str, ...]
    budgets: tuple[str, ...]
    stale: pd.DataFrame = field(default_factory=pd.DataFrame)
    systems: tuple[str, ...] = ()
    identity: str = ""
    #: keys of records left off the page because their identity differs from the page's (see build_leaderboard)
    excluded: tuple[str, ...] = ()
    rank_column: str = "rank"
    pareto_columns: tuple[str, str] = ("pareto_bytes", "pareto_speed")

    @property
    def page(self) -> str:
        """Relative path of the page without extension: ``<track>/<task>/<device>``."""
        return "/".join(safe_component(x) for x in (self.track, self.task, self.device))

    @cached_property
    def _records(self) -> list[dict[str, Any]]:
        m_order = {m: i for i, m in enumerate((*self.methods, *self.systems))}
        b_order = {b: i for i, b in enumerate(self.budgets)}
        rows = self.cells.to_dict("records")
        return sorted(rows, key=lambda c: (m_order[c["variant"]], b_order[c["budget"]]))

    @cached_property
    def _by_cell(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(c["variant"], c["budget"]): c for c in self._records}

    @cached_property
    def _all_variants(self) -> tuple[str, ...]:
        return (*self.methods, *self.systems)

    def rows(self) -> list[dict[str, Any]]:
        """Ranked-table cells (systems excluded) as dicts, in table order (method rows, then budget columns)."""
        return [dict(c) for c in self._records if c["variant"] in self.methods]

    def system_rows(self) -> list[dict[str, Any]]:
        """The systems' cells (own head or initialisation; not ranked), by system then budget."""
        s_order = {m: i for i, m in enumerate(self.systems)}
        b_order = {b: i for i, b in enumerate(self.budgets)}
        return sorted((dict(c) for c in self._records if c["variant"] in self.systems),
                      key=lambda c: (s_order[c["variant"]], b_order[c["budget"]]))

    def dense_score(self) -> float | None:
        """Main score of the page's dense reference (its loosest budget), or None."""
        dense = [c for c in self._records if c["variant"] == DENSE and rankable(c)]
        return min(dense, key=lambda c: c["budget_ratio"])["main"] if dense else None

    def dense_cell(self) -> dict[str, Any] | None:
        """The page's dense reference cell (its loosest budget), or None."""
        dense = [c for c in self._records if c["variant"] == DENSE and rankable(c)]
        return dict(min(dense, key=lambda c: c["budget_ratio"])) if dense else None

    def cell(self, variant: str, budget: str) -> dict[str, Any] | None:
        """The cell of a method variant at a budget, or None when it was not run."""
        c = self._by_cell.get((variant, budget))
        return dict(c) if c is not None else None

    def label(self, variant: str) -> str:
        """Display label of a method variant."""
        return str(next(c["label"] for c in self._records if c["variant"] == variant))

    def pivot(self, value: str = "main") -> pd.DataFrame:
        """Method x budget frame of one column (``main``, ``rank``, ``status``, ...); None where not run."""
        data = {b: [None] * len(self.methods) for b in self.budgets}
        idx = {m: i for i, m in enumerate(self.methods)}
        for c in self.cells.to_dict("records"):
            if c["variant"] in idx:
                data[c["budget"]][idx[c["variant"]]] = c[value]
        return pd.DataFrame(data, index=[self.label(m) for m in self.methods], columns=list(self.budgets), dtype=object)

    def versions(self) -> dict[str, Any]:
        """Footer facts: task version, method versions, git shas (oldest record first), devices, record count."""
        cells = self._records
        return {**cells_versions(cells),
            "task_version": sorted({c["task_version"] for c in cells}),
            "methods": {self.label(m): sorted({c["method_version"] for c in cells if c["variant"] == m})
                        for m in (*self.methods, *self.systems)},
            "device_names": sorted({c["device_name"] for c in cells}),
            "threads": sorted({c["threads"] for c in cells}),
            "records": sum(c["records"] for c in cells),
            "stale_records": int(self.stale["records"].sum()) if len(self.stale) else 0,
        }


def cells_versions(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Git facts of some cells: ``git_shas`` (distinct, in order of their first record), ``git_latest`` (the sha
    of the newest record, by ``created_at``), ``git_dirty`` (any record from a dirty tree)."""
    pairs = sorted({p for c in cells for p in c["git_shas"]})
    return {"git_shas": list(dict.fromkeys(s for _, s in pairs)), "git_latest": pairs[-1][1] if pairs else None,
            "git_dirty": any(c["git_dirty"] for c in cells)}


def _annotate(cells: list[dict[str, Any]], higher_is_better: bool) -> None:
    dense = [c for c in cells if c["variant"] == DENSE and rankable(c)]
    dense_main = min(dense, key=lambda c: c["budget_ratio"])["main"] if dense else None
    for c in cells:
        c["rank"] = None
        c["pareto_bytes"] = False
        c["pareto_speed"] = False
        if (c["retention"] is None and c["main"] is not None and dense_main and higher_is_better
                and c["status"] == "ok" and not c.get("system")):
            c["retention"] = c["main"] / dense_main
    for budget in sorted({c["budget"] for c in cells}):
        group = [c for c in cells if c["budget"] == budget and rankable(c)]
        for c, r in zip(group, _competition_ranks([c["main"] for c in group], higher_is_better), strict=True):
            c["rank"] = r
    ok = [c for c in cells if rankable(c)]
    with_bytes = [c for c in ok if c["stored_bytes"] is not None]
    flags = pareto_flags([c["stored_bytes"] for c in with_bytes], [c["main"] for c in with_bytes],
                         maximize_x=False, maximize_y=higher_is_better)
    for c, f in zip(with_bytes, flags, strict=True):
        c["pareto_bytes"] = f
    with_speed = [c for c in ok if c["throughput_ratio"] is not None]
    flags = pareto_flags([c["throughput_ratio"] for c in with_speed], [c["main"] for c in with_speed],
                         maximize_x=True, maximize_y=higher_is_better)
    for c, f in zip(with_speed, flags, strict=True):
        c["pareto_speed"] = f


def _method_order(cells: list[dict[str, Any]], higher_is_better: bool, systems: bool = False) -> tuple[str, ...]:
    def key(variant: str) -> tuple[Any, ...]:
        mine = [c for c in cells if c["variant"] == variant]
        ranks = [c["rank"] for c in mine if c["rank"] is not None]
        mean_rank = math.fsum(ranks) / len(ranks) if ranks else math.inf
        return (mean_rank, -len(ranks), variant)

    return tuple(sorted({c["variant"] for c in cells if bool(c.get("system")) == systems}, key=key))


def _budget_order(cells: list[dict[str, Any]]) -> tuple[str, ...]:
    seen: dict[str, tuple[Any, ...]] = {}
    for c in cells:
        seen.setdefault(c["budget"], (c["budget_ratio"], -c["allowed_bytes"], c["budget"]))
    return tuple(sorted(seen, key=lambda b: seen[b]))


def cell_items(cell: dict[str, Any], items: ItemsByKey) -> Any:
    """The per-item outcomes of an aggregated cell: its ok records' items stacked (seeds in order), or None."""
    keys = cell.get("ok_keys") or ()
    parts = [items.get(k) for k in keys]
    if not parts or any(p is None for p in parts):
        return None
    try:
        return Items.stack(parts) if len(parts) > 1 else parts[0]
    except ValueError:  # pragma: no cover - records of one cell on different items
        return None


def _ties(cells: list[dict[str, Any]], items: ItemsByKey, higher_is_better: bool) -> None:
    """Rank ranges from paired comparisons with the best cell of each budget (see the module docstring)."""
    for c in cells:
        c["rank_high"] = c["rank"]
        c["tied"] = False
        c["vs_best"] = None
    for budget in sorted({c["budget"] for c in cells}):
        group = [c for c in cells if c["budget"] == budget and c["rank"] is not None]
        if len(group) < 2:
            continue
        best = min(group, key=lambda c: (c["rank"], c["variant"]))
        best_items = cell_items(best, items)
        if best_items is None:
            continue
        tied = [best]
        for c in group:
            if c is best:
                continue
            other = cell_items(c, items)
            if other is None or other.n_items != best_items.n_items or other.kind != best_items.kind:
                continue
            cmp = stats.paired_difference(best_items, other, higher_is_better=higher_is_better)
            c["vs_best"] = cmp
            if not cmp["significant"]:
                tied.append(c)
        if len(tied) > 1:
            for c in tied:
                c["rank"], c["rank_high"], c["tied"] = 1, len(tied), True


def _pooled_intervals(cells: list[dict[str, Any]], items: ItemsByKey) -> None:
    """Intervals of cells pooled from several records, from their stacked per-item outcomes."""
    for c in cells:
        if c["ci_low"] is None and c["status"] == "ok" and len(c.get("ok_keys") or ()) > 1:
            it = cell_items(c, items)
            if it is not None:
                ci = stats.interval(it)
                c["ci_low"], c["ci_high"] = ci["low"], ci["high"]


def build_leaderboard(cells: pd.DataFrame, track: str, task: str, device: str,
                      items: ItemsByKey | None = None) -> Leaderboard:
    """The leaderboard of one (track, task, device) from aggregated cells (newest versions only); ``items`` (record
    key -> per-item outcomes) gives pooled intervals and ties."""
    page = cells[(cells["track"] == track) & (cells["task"] == task) & (cells["device"] == device)]
    current, stale = current_versions(page)
    rows = current.to_dict("records")
    if not rows:
        raise ValueError(f"no cells for {track}/{task}/{device}")
    # Keys encode the identity, so one page holds one; records that disagree with it (hand-edited, or damaged in
    # a way the schema cannot see) never share the ranking: the page keeps the identity most of its ranked cells
    # have, and the others are listed on the page as excluded (never fatal to the report, issue 34)
    counts = Counter(str(c["identity"]) for c in rows if c.get("identity") and not c.get("system"))
    excluded: tuple[str, ...] = ()
    if len(counts) > 1:
        keep = min(counts, key=lambda ident: (-counts[ident], ident))
        excluded = tuple(sorted(k for c in rows if c.get("identity") and not c.get("system")
                                and str(c["identity"]) != keep for k in (c.get("ok_keys") or [c.get("variant")])))
        rows = [c for c in rows if not c.get("identity") or c.get("system") or str(c["identity"]) == keep]
    higher = bool(rows[0]["higher_is_better"])
    _annotate(rows, higher)
    _pooled_intervals(rows, items or {})
    _ties(rows, items or {}, higher)
    frame = pd.DataFrame(rows, columns=[*current.columns, "rank", "pareto_bytes", "pareto_speed", "rank_high",
                                        "tied", "vs_best"], dtype=object)
    ranked = [c for c in rows if not c.get("system")]
    identities = sorted({str(c["identity"]) for c in ranked if c.get("identity")})
    return Leaderboard(track=track, task=task, device=device, metric=str(rows[0]["metric"]), higher_is_better=higher,
                       cells=frame, methods=_method_order(rows, higher), budgets=_budget_order(rows), stale=stale,
                       systems=_method_order(rows, higher, systems=True),
                       identity=identities[0] if identities else "", excluded=excluded)


def build_leaderboards(cells: pd.DataFrame, items: ItemsByKey | None = None) -> list[Leaderboard]:
    """Every page, sorted by (track, task, device)."""
    if cells.empty:
        return []
    keys = sorted({(t, k, d) for t, k, d in zip(cells["track"], cells["task"], cells["device"], strict=True)})
    return [build_leaderboard(cells, *k, items=items) for k in keys]


@dataclass(frozen=True)
class TrackOverview:
    """Overview of one track: per method, its best in-budget main score per (task, budget).

    ``best`` maps ``(method, task, budget)`` to the best mean score over the method's option variants and the
    devices (from the given leaderboards); ``columns`` is the (task, budget) order and ``pages`` the
    leaderboards of each task (one per device).
    """

    track: str
    methods: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    best: dict[tuple[str, str, str], float]
    winners: dict[tuple[str, str], float]
    higher_is_better: dict[str, bool]
    metrics: dict[str, str]
    pages: dict[str, tuple[Leaderboard, ...]]


def _overview_order(m: str, columns: Sequence[tuple[str, str]], best: dict[tuple[str, str, str], float],
                    hib: dict[str, bool]) -> tuple[Any, ...]:
    """Sort key of a method in the overview: mean rank over the columns it has a score in, then coverage, name."""
    ranks = []
    for t, bud in columns:
        if (m, t, bud) in best:
            ranks.append(1 + sum(better(best[(o, t2, b2)], best[(m, t, bud)], hib[t])
                                 for (o, t2, b2) in best if (t2, b2) == (t, bud)))
    return (math.fsum(ranks) / len(ranks) if ranks else math.inf, -len(ranks), m)


def build_overview(boards: Sequence[Leaderboard]) -> list[TrackOverview]:
    """One :class:`TrackOverview` per track (sorted), built from the pages' rankable cells."""
    out = []
    for track in sorted({b.track for b in boards}):
        tb = [b for b in boards if b.track == track]
        best: dict[tuple[str, str, str], float] = {}
        budget_key: dict[tuple[str, str], tuple[Any, ...]] = {}
        hib = {b.task: b.higher_is_better for b in tb}
        metrics = {b.task: b.metric for b in tb}
        methods: set[str] = set()
        for b in tb:
            for c in b.rows():  # systems are not ranked, so not in the overview
                methods.add(c["method"])
                budget_key.setdefault((b.task, c["budget"]),
                                      (b.task, c["budget_ratio"], -c["allowed_bytes"], c["budget"]))
                if not rankable(c):
                    continue
                k = (c["method"], b.task, c["budget"])
                if k not in best or better(c["main"], best[k], hib[b.task]):
                    best[k] = c["main"]
        columns = tuple(sorted(budget_key, key=lambda k: budget_key[k]))
        winners: dict[tuple[str, str], float] = {}
        for (_, t, bud), v in best.items():
            if (t, bud) not in winners or better(v, winners[(t, bud)], hib[t]):
                winners[(t, bud)] = v
        pages = {t: tuple(b for b in tb if b.task == t) for t in sorted(hib)}
        order = {m: _overview_order(m, columns, best, hib) for m in methods}
        out.append(TrackOverview(track=track, methods=tuple(sorted(methods, key=order.__getitem__)), columns=columns,
                                 best=best,
                                 winners=winners, higher_is_better=hib, metrics=metrics, pages=pages))
    return out
