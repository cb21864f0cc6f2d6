"""Suites: a YAML grid of methods x budgets x tasks x devices x seeds, validated and expanded into cells.

See :mod:`compbench.bench.sweeps.sweep` for the format. Every name, budget, option and numeric value is
checked here, before any work (exit 2 on a typo).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from compbench.bench.cell.budget import Budget
from compbench.bench.cell.plugins import import_plugins, resolve_plugin
from compbench.bench.sweeps.suite_schema import GRID_KEYS, GridSpec, TaskSpec, validate_suite_doc
from compbench.config import DEFAULT_MAX_FIT_SECONDS, MAX_FIT_SECONDS, RunConfig
from compbench.errors import UnknownNameError, UsageError, quoted
from compbench.methods import canonical_method_options, get_method_class
from compbench.tasks import TASKS, get_task, list_tasks

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"
REQUIRED_GRID_KEYS = ("methods", "budgets", "tasks")


# ---------------------------------------------------------------------------------------------
# suites
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskRef:
    """A task of a track, written ``track/name``."""

    track: str
    name: str

    def __str__(self) -> str:
        return f"{self.track}/{self.name}"


@dataclass(frozen=True)
class Grid:
    """One cartesian grid of a suite: tasks x methods x budgets x devices x seeds."""

    methods: tuple[str, ...]
    budgets: tuple[str, ...]
    tasks: tuple[TaskRef, ...]
    devices: tuple[str, ...] = ("cpu",)
    seeds: tuple[int, ...] = (0,)
    threads: int = 1
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    aggregate_seeds: bool = False
    batch_size: int = 64
    lookup_iters: int = 30
    lookup_workload: str = "zipf"
    tune: bool = False
    model: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    max_fit_seconds: float | None = DEFAULT_MAX_FIT_SECONDS


@dataclass(frozen=True)
class Suite:
    """A named list of grids (see the module docstring for the YAML format)."""

    name: str
    grids: tuple[Grid, ...]
    description: str = ""
    source: str = ""
    #: modules or ``.py`` files that register out-of-tree methods or tasks (``imports:``; relative paths are
    #: resolved against the suite file's folder), imported before the grids are validated and in every worker
    imports: tuple[str, ...] = ()

    def cells(self) -> list[RunConfig]:
        """Every cell of every grid, in order, duplicates removed."""
        return expand(self)


def list_suites() -> list[str]:
    """Names of the suites shipped with compbench."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_path(name_or_path: str | Path) -> Path:
    """Resolve a shipped suite name or a YAML path (unknown names get a did-you-mean)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(name_or_path):
        if not p.is_file():
            raise UsageError(f"suite file not found: {p}")
        return p
    shipped = SUITES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = list_suites()
    hint = difflib.get_close_matches(str(name_or_path), names, n=1, cutoff=0.5)
    msg = f"unknown suite '{name_or_path}'"
    msg += f"; did you mean '{hint[0]}'?" if hint else ""
    msg += f" (shipped suites: {', '.join(names)}; or give a path to a .yaml file)"
    raise UnknownNameError(msg)


#: nodes a suite file may expand to once its YAML aliases are followed (a real suite has a few hundred; an
#: alias "bomb", nine aliases of the line above per line, grows memory 9x per line)
MAX_YAML_NODES = 100_000


def _loader() -> type:
    """A ``yaml.SafeLoader`` that refuses a document expanding (aliases followed) to more than
    :data:`MAX_YAML_NODES` nodes, before anything is constructed from it."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def compose_document(self) -> Any:
            node = super().compose_document()
            sizes: dict[int, int] = {}

            def size(n: Any) -> int:
                if id(n) in sizes:
                    return sizes[id(n)]
                sizes[id(n)] = 1  # a recursive alias counts once (PyYAML refuses it when constructing anyway)
                total = 1
                if isinstance(n, yaml.SequenceNode):
                    total += sum(size(c) for c in n.value)
                elif isinstance(n, yaml.MappingNode):
                    total += sum(size(k) + size(v) for k, v in n.value)
                sizes[id(n)] = min(total, MAX_YAML_NODES + 1)
                return sizes[id(n)]

            if node is not None and size(node) > MAX_YAML_NODES:
                raise UsageError(f"the suite expands to more than {MAX_YAML_NODES:,} YAML nodes once its aliases "
                                 "(*name) are followed; write the values out")
            return node

    return BoundedLoader


def load_suite(name_or_path: str | Path) -> Suite:
    """Load and validate a suite by shipped name (``smoke``) or path (``my/suite.yaml``)."""
    import yaml

    path = suite_path(name_or_path)
    try:
        loader = _loader()(path.read_text(encoding="utf-8"))  # a SafeLoader with a bound on aliases
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except OSError as exc:
        raise UsageError(f"cannot read suite {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"suite {path}: invalid YAML at{where}: {problem}") from exc
    return parse_suite(doc, source=str(path), default_name=path.stem)


def _where(source: str, ctx: str) -> str:
    return f"suite {source or '<dict>'}{(': ' + ctx) if ctx else ''}"


def parse_task_ref(spec: Any, source: str = "", ctx: str = "") -> TaskRef:
    """``"posthoc/stsb"`` or ``{"track": "posthoc", "name": "stsb"}`` -> TaskRef (validated)."""
    if isinstance(spec, TaskSpec):
        spec = spec.model_dump()
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"track", "name"})
        if unknown:
            raise UsageError(f"{_where(source, ctx)}: unknown key '{quoted(unknown[0])}' in a task (keys: track, name)")
        track, name = spec.get("track"), spec.get("name")
    elif isinstance(spec, str) and "/" in spec:
        track, name = spec.strip().split("/", 1)
    else:
        raise UsageError(f"{_where(source, ctx)}: task {spec!r} must be 'track/name' (e.g. posthoc/stsb) "
                         "or a mapping with track and name")
    if not isinstance(track, str) or not isinstance(name, str):
        raise UsageError(f"{_where(source, ctx)}: task {spec!r} needs a track and a name")
    get_task(track, name)  # unknown track/task -> UnknownNameError with a suggestion
    return TaskRef(track, name)


def _parse_grid(spec: GridSpec, defaults: GridSpec, source: str, ctx: str) -> Grid:
    """One grid: the suite's top-level keys, overridden by the grid's own (both already validated by the schema)."""
    merged = {**defaults.model_dump(exclude_unset=True), **spec.model_dump(exclude_unset=True)}
    missing = [k for k in REQUIRED_GRID_KEYS if merged.get(k) is None]
    if missing:
        raise UsageError(f"{_where(source, ctx)}: missing {', '.join(missing)}")
    kw: dict[str, Any] = {
        "methods": tuple(merged["methods"]),
        "budgets": tuple(merged["budgets"]),
        "tasks": tuple(dict.fromkeys(parse_task_ref(t, source, ctx) for t in merged["tasks"])),
    }
    for key in ("devices", "seeds"):
        if merged.get(key) is not None:
            kw[key] = tuple(dict.fromkeys(merged[key]))
    for key in ("threads", "batch_size", "lookup_iters", "tune", "aggregate_seeds", "lookup_workload"):
        if merged.get(key) is not None:
            kw[key] = merged[key]
    if "max_fit_seconds" in merged:
        kw["max_fit_seconds"] = float(merged["max_fit_seconds"] or 0) or None  # 0 or null: no limit
    if merged.get("model") is not None:
        kw["model"] = merged["model"]
    if merged.get("extra"):
        kw["extra"] = dict(merged["extra"])
    if merged.get("options"):
        kw["options"] = {str(m): {str(k): v for k, v in o.items()} for m, o in merged["options"].items()}
    return Grid(**kw)


def parse_suite(doc: Any, *, source: str = "", default_name: str = "suite") -> Suite:
    """Validate a suite document (a mapping, as loaded from YAML): its shape and values by the schema
    (:mod:`compbench.bench.sweeps.suite_schema`), then its names (methods, tasks, budgets, options)."""
    spec = validate_suite_doc(doc, source)
    imports = _imports(spec.imports, source)
    defaults = GridSpec.model_validate(spec.model_dump(include=set(GRID_KEYS), exclude_unset=True))
    grids: tuple[Grid, ...]
    if spec.grids is None:
        grids = (_parse_grid(GridSpec(), defaults, source, ""),)
    else:
        grids = tuple(_parse_grid(g, defaults, source, f"grids[{i}]") for i, g in enumerate(spec.grids))
    suite = Suite(name=str(spec.name or default_name), grids=grids, description=str(spec.description or ""),
                  source=source, imports=imports)
    validate_names(suite)
    return suite


def _imports(value: list[str] | None, source: str) -> tuple[str, ...]:
    """The suite's ``imports:`` list, relative ``.py`` paths made absolute, imported now (so its methods and tasks
    validate)."""
    if not value:
        return ()
    base = Path(source).resolve().parent if source and Path(source).is_file() else None
    out = tuple(resolve_plugin(v.strip(), base) for v in value)
    import_plugins(out)
    return out


def validate_names(suite: Suite) -> None:
    """Unknown method names, malformed budgets and bad method options raise UsageError (nothing has run yet)."""
    for g in suite.grids:
        for m in g.methods:
            cls = get_method_class(m)
            cls(**dict(g.options.get(m, {})))  # unknown option -> UsageError naming the known ones
        for b in g.budgets:
            Budget.parse(b)
        unused = sorted(set(g.options) - set(g.methods))
        if unused:
            raise UsageError(f"suite {suite.name}: options given for method(s) not in the grid: {', '.join(unused)}")


def _split_csv(values: Iterable[str] | str | None, flag: str = "") -> tuple[str, ...] | None:
    """Comma-separated override values; None when the override is not given. An override that is given but
    names nothing (``--budgets ,``, ``--methods " "``) is a usage error: it must never mean "the whole suite"."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    values = list(values)
    out = tuple(v.strip() for s in values for v in s.split(",") if v.strip())
    if not out:
        raise UsageError(f"{flag or 'an override'} {quoted(','.join(values))!r} names nothing; give comma-separated "
                         "values or leave the flag out")
    return out


def _max_fit(value: Any, where: str) -> float | None:
    """A fit limit in seconds: a number >= 0 (0 or null: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_FIT_SECONDS:
        raise UsageError(f"{where} must be a number of seconds in 0..{int(MAX_FIT_SECONDS)} (30 days; 0 or null: "
                         f"no limit), got {quoted(value)}")
    return float(value) or None


def apply_overrides(suite: Suite, *, methods: Iterable[str] | str | None = None, budgets: Iterable[str] | str | None = None,
                    tasks: Iterable[str] | str | None = None, seeds: Iterable[str] | str | None = None,
                    devices: Iterable[str] | str | None = None, threads: int | None = None,
                    max_fit_seconds: float | None = None) -> Suite:
    """Replace fields in every grid (CLI > YAML). ``tasks`` entries are ``track/name``, or a bare name for
    that task in every track the suite uses that has it. Comma-separated strings are accepted."""
    m, b, t, s, dv = (_split_csv(x, f) for x, f in ((methods, "--methods"), (budgets, "--budgets"), (tasks, "--tasks"),
                                                    (seeds, "--seeds"), (devices, "--devices")))
    seed_vals: tuple[int, ...] | None = None
    if s is not None:
        try:
            seed_vals = tuple(int(x) for x in s)
        except ValueError as exc:
            raise UsageError(f"--seeds expects comma-separated integers, got '{','.join(s)}'") from exc
        if any(x < 0 for x in seed_vals):
            raise UsageError(f"--seeds must be >= 0, got {','.join(s)}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    task_refs: tuple[TaskRef, ...] | None = None
    if t is not None:
        suite_tracks = list(dict.fromkeys(r.track for g in suite.grids for r in g.tasks))
        refs: list[TaskRef] = []
        for spec in t:
            if "/" in spec:
                refs.append(parse_task_ref(spec, ctx="--tasks"))
                continue
            found = [TaskRef(tr, spec) for tr in suite_tracks if f"{tr}/{spec}" in TASKS]
            if not found:
                names = sorted({n for tr in suite_tracks for n in list_tasks(tr)})
                hint = difflib.get_close_matches(spec, names, n=1, cutoff=0.5)
                raise UnknownNameError(f"unknown task '{spec}' for the suite's tracks ({', '.join(suite_tracks)})"
                                       + (f"; did you mean '{hint[0]}'?" if hint else "")
                                       + f" (tasks: {', '.join(names)}; or write track/name)")
            refs.extend(found)
        task_refs = tuple(dict.fromkeys(refs))
    grids = []
    for g in suite.grids:
        kw: dict[str, Any] = {}
        if m is not None:
            kw["methods"] = m
            kw["options"] = {k: v for k, v in g.options.items() if k in m}
        if b is not None:
            kw["budgets"] = b
        if task_refs is not None:
            kw["tasks"] = task_refs
        if seed_vals is not None:
            kw["seeds"] = seed_vals
        if dv is not None:
            kw["devices"] = dv
        if threads is not None:
            kw["threads"] = threads
        if max_fit_seconds is not None:
            kw["max_fit_seconds"] = _max_fit(max_fit_seconds, "--max-fit-seconds")
        grids.append(replace(g, **kw))
    out = replace(suite, grids=tuple(grids))
    validate_names(out)
    return out


def expand(suite: Suite) -> list[RunConfig]:
    """The suite's cells, grid by grid (task, method, budget, device, seed order), duplicates removed."""
    out: list[RunConfig] = []
    seen: set[str] = set()

    for g in suite.grids:
        for task in g.tasks:
            for method in g.methods:
                for budget in g.budgets:
                    for device in g.devices:
                        seed_sets: list[tuple[int, tuple[int, ...] | None]]
                        if g.aggregate_seeds:
                            seed_sets = [(g.seeds[0], tuple(g.seeds))]
                        else:
                            seed_sets = [(s, None) for s in g.seeds]
                        for seed, seeds in seed_sets:
                            cfg = RunConfig(method=method, budget=budget, track=task.track, task=task.name,
                                            device=device, threads=g.threads, seed=seed,
                                            options=canonical_method_options(method, g.options.get(method, {})),
                                            model=g.model,
                                            fresh_process=False, batch_size=g.batch_size,
                                            lookup_iters=g.lookup_iters, lookup_workload=g.lookup_workload,
                                            tune=g.tune, max_fit_seconds=g.max_fit_seconds,
                                            seeds=seeds, extra=dict(g.extra))
                            ident = repr(sorted(cfg.to_dict().items(), key=lambda kv: kv[0]))
                            if ident not in seen:
                                seen.add(ident)
                                out.append(cfg)
    return out


__all__ = ["GRID_KEYS", "SUITES_DIR", "Grid", "Suite", "TaskRef", "apply_overrides", "expand", "list_suites",
           "load_suite", "parse_suite", "parse_task_ref", "suite_path", "validate_names"]
