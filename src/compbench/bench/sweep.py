"""Sweeps: a suite (a YAML grid) -> cells (RunConfig) -> an executor -> one record per cell in the store.

A **suite** is a YAML file, shipped (``src/compbench/suites/<name>.yaml``: ``smoke``,
``default``, ``full``) or given by path. Top-level keys are defaults for its
``grids`` (or, without ``grids``, the suite is one grid)::

    name: smoke
    threads: 1
    devices: [cpu]
    seeds: [0]
    grids:
      - tasks: [posthoc/fidelity]
        methods: [dense, svd, quant-int2]
        budgets: [10x]

Grid keys: ``methods``, ``budgets``, ``tasks`` (``track/name`` or ``{track:, name:}``),
``devices``, ``seeds``, ``threads``, ``options`` (``{method: {key: value}}``),
``aggregate_seeds`` (train track: one cell aggregating all seeds, mean +- std),
``batch_size``, ``lookup_iters``, ``model``, ``extra`` (track settings, e.g. for train:
``{backbone: bag, max_steps: 30, max_train_samples: 512, recipe: {lr: 0.003}}``). CLI overrides (``--methods`` ...) replace
the field in every grid; duplicate cells are dropped.

**Planning** resolves each cell (names are validated first: a typo stops the sweep
before any work, exit 2) and decides, against the records already in the store and
the ``--overwrite`` policy, whether it runs, is reused, or is known to be skipped
(unsupported track, unavailable device) -- skipped cells get a ``skipped`` record
with the reason. Unattainable budgets are found by the method's ``configure``: up front
when the table shape is known without loading a model (posthoc cells on the bundled
encoder), else inside the cell; they are recorded as ``skipped`` too. Posthoc cells need the dense reference of
their task (retention); the sweep adds those ``dense`` / ``1x`` cells and runs them
first, so no two cells compute the same reference.

**Resume**: a record is *up to date* when it exists, is valid, has the current
method and task versions, was run with the same cell configuration (recorded in
``provenance.sweep.fingerprint``) and did not fail. ``only-missing`` (default)
re-runs everything else; ``never`` never replaces an existing file; ``always``
re-runs every cell. A cell aggregating several seeds (``aggregate_seeds``) without its own record is
also up to date when up-to-date single-seed records of the same configuration hold all its seeds
(:func:`seed_records_covering`; the leaderboard pools them); when they hold only some of them, the plan
replaces the cell by single-seed cells for the missing seeds (:func:`seed_coverage`), so no recorded seed
runs twice. Records are written atomically
(temp file + rename), so a killed sweep leaves whole records or none, and re-running the same
command completes exactly the missing cells.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from compbench.bench.record import Record, cell_key
from compbench.bench.store import ResultStore
from compbench.config import RunConfig
from compbench.errors import CompbenchError, RecordError, UnknownNameError, UsageError

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
OVERWRITE_POLICIES = ("never", "only-missing", "always")
GRID_KEYS = ("methods", "budgets", "tasks", "devices", "seeds", "threads", "options", "aggregate_seeds",
             "batch_size", "lookup_iters", "model", "extra")
SUITE_KEYS = ("name", "description", "grids", *GRID_KEYS)
REQUIRED_GRID_KEYS = ("methods", "budgets", "tasks")
#: tracks whose cells need the dense reference of their task (``dense`` at ``1x``) for retention
REFERENCE_TRACKS = ("posthoc",)
#: the fields of a RunConfig that change a result but are not part of the cell key
FINGERPRINT_FIELDS = ("model", "batch_size", "lookup_iters", "seeds", "extra")


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
    model: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A named list of grids (see the module docstring for the YAML format)."""

    name: str
    grids: tuple[Grid, ...]
    description: str = ""
    source: str = ""

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


def load_suite(name_or_path: str | Path) -> Suite:
    """Load and validate a suite by shipped name (``smoke``) or path (``my/suite.yaml``)."""
    import yaml

    path = suite_path(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
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


def _check_keys(d: Mapping[str, Any], allowed: Sequence[str], source: str, ctx: str) -> None:
    for k in d:
        if k not in allowed:
            hint = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
            raise UsageError(f"{_where(source, ctx)}: unknown key '{k}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
                             + f" (keys: {', '.join(allowed)})")


def _str_list(value: Any, key: str, source: str, ctx: str) -> tuple[str, ...]:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{_where(source, ctx)}: '{key}' must be a non-empty list")
    out = []
    for v in value:
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise UsageError(f"{_where(source, ctx)}: '{key}' entries must be strings, got {v!r}")
        out.append(str(v).strip())
    return tuple(dict.fromkeys(out))


def _int(value: Any, key: str, source: str, ctx: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{_where(source, ctx)}: '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def parse_task_ref(spec: Any, source: str = "", ctx: str = "") -> TaskRef:
    """``"posthoc/stsb"`` or ``{"track": "posthoc", "name": "stsb"}`` -> TaskRef (validated)."""
    from compbench.tasks import get_task

    if isinstance(spec, Mapping):
        _check_keys(spec, ("track", "name"), source, ctx)
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


def _parse_grid(d: Mapping[str, Any], defaults: Mapping[str, Any], source: str, ctx: str) -> Grid:
    if not isinstance(d, Mapping):
        raise UsageError(f"{_where(source, ctx)}: a grid must be a mapping")
    _check_keys(d, GRID_KEYS, source, ctx)
    merged = {**defaults, **d}
    missing = [k for k in REQUIRED_GRID_KEYS if k not in merged]
    if missing:
        raise UsageError(f"{_where(source, ctx)}: missing {', '.join(missing)}")
    kw: dict[str, Any] = {
        "methods": _str_list(merged["methods"], "methods", source, ctx),
        "budgets": _str_list(merged["budgets"], "budgets", source, ctx),
        "tasks": tuple(dict.fromkeys(parse_task_ref(t, source, ctx) for t in
                                     (merged["tasks"] if isinstance(merged["tasks"], list) else [merged["tasks"]]))),
    }
    if "devices" in merged:
        kw["devices"] = _str_list(merged["devices"], "devices", source, ctx)
    if "seeds" in merged:
        seeds = merged["seeds"] if isinstance(merged["seeds"], list) else [merged["seeds"]]
        if not seeds:
            raise UsageError(f"{_where(source, ctx)}: 'seeds' must be a non-empty list")
        kw["seeds"] = tuple(dict.fromkeys(_int(s, "seeds", source, ctx, 0) for s in seeds))
    for key, minimum in (("threads", 1), ("batch_size", 1), ("lookup_iters", 1)):
        if key in merged:
            kw[key] = _int(merged[key], key, source, ctx, minimum)
    if "aggregate_seeds" in merged:
        if not isinstance(merged["aggregate_seeds"], bool):
            raise UsageError(f"{_where(source, ctx)}: 'aggregate_seeds' must be true or false")
        kw["aggregate_seeds"] = merged["aggregate_seeds"]
    if merged.get("model") is not None:
        kw["model"] = str(merged["model"])
    if merged.get("extra"):
        if not isinstance(merged["extra"], Mapping):
            raise UsageError(f"{_where(source, ctx)}: 'extra' must be a mapping of track settings "
                             "(train: backbone, d_model, max_steps, max_train_samples, max_eval_samples, recipe)")
        kw["extra"] = dict(merged["extra"])
    if "options" in merged and merged["options"]:
        opts = merged["options"]
        if not isinstance(opts, Mapping) or not all(isinstance(v, Mapping) for v in opts.values()):
            raise UsageError(f"{_where(source, ctx)}: 'options' must map a method name to {{option: value}}")
        kw["options"] = {str(m): {str(k): v for k, v in o.items()} for m, o in opts.items()}
    return Grid(**kw)


def parse_suite(doc: Any, *, source: str = "", default_name: str = "suite") -> Suite:
    """Validate a suite document (a mapping, as loaded from YAML)."""
    if not isinstance(doc, Mapping):
        raise UsageError(f"{_where(source, '')}: a suite must be a YAML mapping with methods, budgets and tasks")
    _check_keys(doc, SUITE_KEYS, source, "")
    defaults = {k: v for k, v in doc.items() if k in GRID_KEYS}
    grids_doc = doc.get("grids")
    if grids_doc is None:
        grids = (_parse_grid({}, defaults, source, ""),)
    else:
        if not isinstance(grids_doc, list) or not grids_doc:
            raise UsageError(f"{_where(source, '')}: 'grids' must be a non-empty list of mappings")
        grids = tuple(_parse_grid(g, defaults, source, f"grids[{i}]") for i, g in enumerate(grids_doc))
    suite = Suite(name=str(doc.get("name") or default_name), grids=grids, description=str(doc.get("description") or ""),
                  source=source)
    validate_names(suite)
    return suite


def validate_names(suite: Suite) -> None:
    """Unknown method names, malformed budgets and bad method options raise UsageError (nothing has run yet)."""
    from compbench.bench.budget import Budget
    from compbench.methods import get_method_class

    for g in suite.grids:
        for m in g.methods:
            cls = get_method_class(m)
            cls(**dict(g.options.get(m, {})))  # unknown option -> UsageError naming the known ones
        for b in g.budgets:
            Budget.parse(b)
        unused = sorted(set(g.options) - set(g.methods))
        if unused:
            raise UsageError(f"suite {suite.name}: options given for method(s) not in the grid: {', '.join(unused)}")


def _split_csv(values: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = tuple(v.strip() for s in values for v in s.split(",") if v.strip())
    return out or None


def apply_overrides(suite: Suite, *, methods: Iterable[str] | str | None = None, budgets: Iterable[str] | str | None = None,
                    tasks: Iterable[str] | str | None = None, seeds: Iterable[str] | str | None = None,
                    devices: Iterable[str] | str | None = None, threads: int | None = None) -> Suite:
    """Replace fields in every grid (CLI > YAML). ``tasks`` entries are ``track/name``, or a bare name for
    that task in every track the suite uses that has it. Comma-separated strings are accepted."""
    from compbench.tasks import TASKS, list_tasks

    m, b, t, s, dv = (_split_csv(x) for x in (methods, budgets, tasks, seeds, devices))
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
                                            options=dict(g.options.get(method, {})), model=g.model,
                                            fresh_process=False, batch_size=g.batch_size,
                                            lookup_iters=g.lookup_iters, seeds=seeds, extra=dict(g.extra))
                            ident = repr(sorted(cfg.to_dict().items(), key=lambda kv: kv[0]))
                            if ident not in seen:
                                seen.add(ident)
                                out.append(cfg)
    return out


# ---------------------------------------------------------------------------------------------
# cells and planning
# ---------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """A resolved cell: its config, key, current versions, and what the sweep will do with it.

    ``action``: ``run`` (execute), ``cached`` (an up-to-date record exists), ``skip`` (known before
    running that it cannot run: ``skip_reason``; a skipped record is written).
    """

    config: RunConfig
    key: str
    method_version: int
    task_version: int
    skip_reason: str | None = None
    skip_kind: str | None = None  # "track" | "device" | "budget"
    reference_bytes: int | None = None  # known for budget skips
    reference: bool = False
    action: str = "run"
    note: str = ""  # why it (re)runs, e.g. "stale: method v1 -> v2"

    @property
    def label(self) -> str:
        """Short human-readable name (the key)."""
        return self.key


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """The parts of a cell's configuration that change its result but are not in its key."""
    d = config.to_dict()
    return {k: d.get(k) for k in FINGERPRINT_FIELDS}


def _device_kind(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":", 1)[0]


def resolve_cell(config: RunConfig) -> Cell:
    """Validate names and compute the key; a cell that cannot run here (unsupported track, no such device,
    track not available, a budget the method cannot meet on a table of known shape) gets ``skip_reason``
    instead of raising. Bad names/options/budgets raise UsageError."""
    from compbench.bench.budget import Budget
    from compbench.bench.measure import available_cpus, resolve_device
    from compbench.bench.runner import TRACK_MODE, TRACK_RUNNERS
    from compbench.methods import get_method
    from compbench.tasks import DEFAULT_TASKS, get_task

    task_name = config.task or DEFAULT_TASKS.get(config.track, "")
    task = get_task(config.track, task_name)
    method = get_method(config.method, **config.options)
    budget = Budget.parse(config.budget)
    threads = config.threads if config.threads is not None else available_cpus()
    if threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    if config.seed < 0:
        raise UsageError(f"seed must be >= 0, got {config.seed}")
    if config.device not in ("cpu", "auto") and not config.device.startswith("cuda"):
        resolve_device(config.device)  # raises the standard unknown-device message
    config = replace(config, task=task_name, threads=threads)
    key = cell_key(config.track, task_name, method.card.name, str(budget), _device_kind(config.device), threads,
                   config.seed, config.options)
    if config.track == "train":  # as runner.prepare does: settings overrides and --seeds are part of the key
        from compbench.bench.train import train_key

        key = train_key(key, config, task, method)
    cell = Cell(config=config, key=key, method_version=method.card.version, task_version=task.card.version)
    if config.track not in TRACK_RUNNERS:
        cell.skip_reason = (f"track '{config.track}' is not available in this version "
                            f"(available: {', '.join(TRACK_RUNNERS)})")
        cell.skip_kind = "track"
    elif not method.supports(TRACK_MODE[config.track]):
        cell.skip_reason = (f"method '{method.card.name}' does not support the '{config.track}' track; "
                            f"it supports: {', '.join(method.card.modes)}")
        cell.skip_kind = "track"
    else:
        try:
            resolve_device(config.device)
        except UsageError as exc:
            cell.skip_reason = str(exc)
            cell.skip_kind = "device"
        else:
            from compbench.bench.runner import prepare

            cell.key = prepare(config).key  # the runner's own key is authoritative
            shape = table_shape(config)
            if shape is not None:  # an unattainable budget is known without loading the model
                from compbench.errors import UnattainableBudgetError

                try:
                    method.configure(shape[0], shape[1], budget.resolve(shape[0] * shape[1] * 4))
                except UnattainableBudgetError as exc:
                    cell.skip_reason, cell.skip_kind = str(exc), "budget"
                    cell.reference_bytes = exc.reference_bytes
    return cell


def table_shape(config: RunConfig) -> tuple[int, int] | None:
    """``(V, d)`` of the table a cell compresses when it is known without loading a model: the bundled
    encoder's token table for the posthoc track (from its config.json); None otherwise (the cell finds out)."""
    if config.track != "posthoc" or config.model is not None:
        return None
    return _bundled_table_shape()


@functools.lru_cache(maxsize=1)
def _bundled_table_shape() -> tuple[int, int] | None:
    import json

    try:
        from compbench.models.encoder import default_model_dir

        cfg = json.loads((default_model_dir() / "config.json").read_text(encoding="utf-8"))
        return int(cfg["vocab_size"]), int(cfg["hidden_size"])
    except (CompbenchError, OSError, KeyError, TypeError, ValueError):
        return None


def reference_config(config: RunConfig) -> RunConfig:
    """The dense reference cell a posthoc cell's retention is computed against (as the runner does)."""
    return replace(config, method="dense", budget="1x", options={})


def resolve_cells(configs: Sequence[RunConfig], *, references: bool = True) -> list[Cell]:
    """Resolve every config; add the dense reference cells (run first) for reference tracks; drop duplicates."""
    cells: dict[str, Cell] = {}
    refs: dict[str, Cell] = {}
    for cfg in configs:
        cell = resolve_cell(cfg)
        if cell.key in cells:
            continue
        cells[cell.key] = cell
        if references and cfg.track in REFERENCE_TRACKS and cfg.method != "dense" and cell.skip_reason is None:
            ref = resolve_cell(reference_config(cell.config))
            if ref.key not in refs:
                ref.reference = True
                refs[ref.key] = ref
    out = [c for k, c in refs.items() if k not in cells] + list(cells.values())
    return out


def is_up_to_date(record: Record, cell: Cell) -> tuple[bool, str]:
    """Whether ``record`` is a current result of ``cell``; else why not (one line)."""
    if record.key != cell.key:
        return False, f"record key {record.key} differs"
    if record.method.version != cell.method_version:
        return False, f"stale: method {record.method.name} v{record.method.version} -> v{cell.method_version}"
    if record.task.version != cell.task_version:
        return False, f"stale: task {record.task.name} v{record.task.version} -> v{cell.task_version}"
    if record.status == "failed":
        return False, f"previous run failed: {record.error or '?'}"
    sweep = record.provenance.get("sweep") or {}
    if record.status == "skipped" and sweep.get("skip") in ("track", "device") and cell.skip_reason is None:
        return False, "was skipped before, can run now"
    recorded = sweep.get("fingerprint")
    if recorded is None and isinstance(record.provenance.get("run_config"), dict):
        rc = record.provenance["run_config"]
        recorded = {k: rc.get(k) for k in FINGERPRINT_FIELDS}
    if recorded is not None:
        want = fingerprint(cell.config)
        diff = [k for k in FINGERPRINT_FIELDS if _norm(recorded.get(k)) != _norm(want.get(k))
                and not (k == "extra" and same_train_settings(cell.config, recorded.get(k)))]
        if diff:
            return False, "configuration changed: " + ", ".join(f"{k} {recorded.get(k)!r} -> {want.get(k)!r}" for k in diff)
    return True, ""


def same_train_settings(config: RunConfig, recorded_extra: Any) -> bool:
    """Whether ``recorded_extra`` resolves to the same train recipe and backbone as ``config.extra``.

    Spelling a default explicitly (``--d-model 384`` for ADE, whose width is fixed by its pretrained
    table, or ``backbone: transformer``) changes ``extra`` but not the run, so it does not make a
    train record stale. Always False outside the train track or when either side does not resolve.
    """
    if config.track != "train" or not isinstance(recorded_extra, (dict, type(None))):
        return False
    from compbench.bench.train import resolve_settings
    from compbench.methods import get_method
    from compbench.tasks import get_task

    try:
        task = get_task("train", config.task or "")
        method = get_method(config.method, **config.options)
        a = resolve_settings(task, method, recorded_extra or {}, config.model)
        b = resolve_settings(task, method, config.extra or {}, config.model)
    except CompbenchError:
        return False
    return (a.recipe, a.backbone) == (b.recipe, b.backbone)


def _norm(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if v == {}:
        return None
    return v


def seed_coverage(cell: Cell, store: ResultStore) -> dict[int, str] | None:
    """For a cell that aggregates several seeds (``config.seeds``): seed -> key of the up-to-date ``ok``
    single-seed record of the same configuration that holds it, for those of its seeds that have one
    (possibly none); None when the cell does not aggregate seeds or cannot run.

    Such records (``compbench run --seeds 0``, ``--seeds 1`` ... run one by one, e.g. in parallel or
    after an interrupted multi-seed run) are pooled by the leaderboard exactly like one multi-seed
    record, so the sweep reuses them instead of re-running their seeds.
    """
    seeds = cell.config.seeds
    if not seeds or len(seeds) < 2 or cell.skip_reason:
        return None
    held: dict[int, str] = {}
    for s in seeds:
        single = single_seed_cell(cell, s)
        # ``--seeds s`` and ``--seed s`` write the same key; their fingerprints differ only in ``seeds``
        variants = [single, replace(single, config=replace(single.config, seeds=None))]
        if single.key == cell.key or not store.path_for(single.key).is_file():
            continue
        try:
            record = store.read(single.key)
        except RecordError:
            continue
        seeds_held = list(record.metrics.seeds) if record.metrics.seeds else [record.seed]
        if record.status == "ok" and seeds_held == [s] and any(is_up_to_date(record, v)[0] for v in variants):
            held[s] = single.key
    return held


def single_seed_cell(cell: Cell, seed: int) -> Cell:
    """The cell of ``cell``'s configuration with one seed only (what ``compbench run --seeds s`` runs)."""
    return resolve_cell(replace(cell.config, seed=seed, seeds=(seed,)))


def seed_records_covering(cell: Cell, store: ResultStore) -> list[str] | None:
    """The keys of the single-seed records (:func:`seed_coverage`) when together they hold *every* seed of
    an aggregating cell, else None."""
    held = seed_coverage(cell, store)
    if not held or len(held) != len(cell.config.seeds or ()):
        return None
    return [held[s] for s in cell.config.seeds or ()]


def plan(cells: Sequence[Cell], store: ResultStore, overwrite: str = "only-missing") -> list[Cell]:
    """Set each cell's ``action`` from the store and the overwrite policy (see the module docstring)."""
    if overwrite not in OVERWRITE_POLICIES:
        raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got '{overwrite}'")
    planned: list[Cell] = []
    for cell in cells:
        path = store.path_for(cell.key)
        exists = path.is_file()
        wanted = "skip" if cell.skip_reason else "run"
        held = seed_coverage(cell, store) if not exists and overwrite != "always" else None
        if held and len(held) < len(cell.config.seeds or ()):
            # some seeds are already recorded on their own: run only the others, one cell per seed
            why = (f"seed{'s' if len(held) > 1 else ''} {', '.join(map(str, held))} held by single-seed records "
                   f"({', '.join(held.values())})")
            for s in cell.config.seeds or ():
                if s not in held:
                    (single,) = plan([single_seed_cell(cell, s)], store, overwrite)  # its own record, if any
                    single.note = f"seed {s} alone{'; ' + single.note if single.note else ''}; {why}"
                    planned.append(single)
            continue
        planned.append(cell)
        if held:
            cell.action, cell.note = "cached", "seeds held by single-seed records: " + ", ".join(held.values())
            continue
        if not exists or overwrite == "always":
            cell.action, cell.note = wanted, ("" if not exists else "--overwrite always")
            continue
        if overwrite == "never":
            cell.action, cell.note = "cached", "record exists (--overwrite never)"
            continue
        try:
            record = store.read(cell.key)
        except RecordError as exc:
            cell.action, cell.note = wanted, f"malformed record replaced: {exc}"
            continue
        ok, why = is_up_to_date(record, cell)
        if ok:
            cell.action, cell.note = "cached", ""
        elif cell.skip_reason and record.status in ("ok", "over_budget"):
            # a result of a cell that cannot run *here* (e.g. recorded on a GPU machine): never replace it by "skipped"
            cell.action, cell.note = "cached", f"kept ({why}; cannot re-run here: {cell.skip_reason})"
        else:
            cell.action, cell.note = wanted, why
    return planned


# ---------------------------------------------------------------------------------------------
# records written by the sweep itself (skipped / failed cells)
# ---------------------------------------------------------------------------------------------
def outcome_record(config: RunConfig, status: str, error: str, *, key: str | None = None,
                   reference_bytes: int | None = None, skip: str | None = None,
                   measurements: dict[str, Any] | None = None) -> Record:
    """A ``skipped`` or ``failed`` record for a cell that produced no result (the reason in ``error``).

    ``reference_bytes`` is 0 when the cell never reached the table (unknown)."""
    from compbench.bench.budget import Budget
    from compbench.bench.measure import available_cpus, device_name
    from compbench.bench.provenance import collect
    from compbench.bench.record import BudgetInfo, DeviceInfo, MethodInfo, TaskInfo
    from compbench.methods import get_method_class
    from compbench.tasks import DEFAULT_TASKS, get_task

    task_name = config.task or DEFAULT_TASKS.get(config.track, "")
    mc = get_method_class(config.method).card
    task = get_task(config.track, task_name)
    budget = Budget.parse(config.budget)
    threads = config.threads if config.threads is not None else available_cpus()
    kind = _device_kind(config.device)
    try:
        import torch

        dname = device_name(torch.device(config.device if kind == "cuda" and config.device != "auto" else kind))
    except Exception:  # noqa: BLE001 - no such device here: keep what the user asked for
        dname = config.device
    from compbench.bench.worker import run_command

    ref = int(reference_bytes or 0)
    provenance = collect(command=" ".join(run_command(config)))
    provenance["run_config"] = replace(config, task=task_name, threads=threads).to_dict()
    provenance["sweep"] = {"fingerprint": fingerprint(config), "skip": skip}
    if key is None:
        try:
            key = resolve_cell(config).key
        except CompbenchError:
            key = cell_key(config.track, task_name, mc.name, str(budget), kind, threads, config.seed, config.options)
    return Record(
        key=key,
        status=status,  # type: ignore[arg-type]
        error=error,
        track=config.track,
        seed=config.seed,
        method=MethodInfo(name=mc.name, version=mc.version, family=mc.family, reference=mc.reference,
                          options=dict(config.options)),
        task=TaskInfo(**task.card.to_dict()),
        budget=BudgetInfo(spec=str(budget), reference_bytes=ref, allowed_bytes=budget.resolve(ref) if ref else
                          (budget.max_bytes or 0)),
        device=DeviceInfo(kind=kind, name=dname, threads=threads),
        measurements=dict(measurements or {}),
        provenance=provenance,
    )


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
@dataclass
class SweepEvent:
    """Progress notification: ``plan`` (once, with the cells), ``start`` and ``done`` per executed cell."""

    kind: str
    cell: Cell | None = None
    record: Record | None = None
    cells: list[Cell] | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    """What a sweep did."""

    cells: list[Cell]
    records: dict[str, Record] = field(default_factory=dict)  # key -> record written by this sweep
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, action: str) -> int:
        """Number of cells with this planned action."""
        return sum(c.action == action for c in self.cells)

    @property
    def statuses(self) -> dict[str, int]:
        """Status counts of the records written by this sweep."""
        out: dict[str, int] = {}
        for r in self.records.values():
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def missing(self) -> list[Cell]:
        """Cells that should have run but have no record from this sweep (interrupted)."""
        return [c for c in self.cells if c.action in ("run", "skip") and c.key not in self.records]

    @property
    def failed(self) -> list[Record]:
        """Records of cells that failed in this sweep."""
        return [r for r in self.records.values() if r.status == "failed"]

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (``compbench sweep --json``)."""
        return {
            "cells": len(self.cells),
            "ran": sum(1 for c in self.cells if c.action == "run" and c.key in self.records),
            "cached": self.count("cached"),
            "skipped_known": self.count("skip"),
            "statuses": self.statuses,
            "missing": [c.key for c in self.missing],
            "failed": {r.key: r.error for r in self.failed},
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 2),
        }


EventCallback = Callable[[SweepEvent], None]


def import_plugins(modules: Sequence[str]) -> None:
    """Import user modules (``--import module`` or ``module:function``, the function is then called with no
    arguments) that register out-of-tree methods, tasks or track runners; done in the sweep and in every worker."""
    for spec in modules:
        name, _, fn = spec.partition(":")
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"--import {spec}: cannot import {name}: {exc}") from exc
        if fn:
            target = getattr(module, fn, None)
            if not callable(target):
                raise UsageError(f"--import {spec}: {name} has no function '{fn}'")
            target()


def prepare_sweep(suite: Suite, store: ResultStore, overwrite: str = "only-missing") -> list[Cell]:
    """Expand, resolve and plan a suite's cells against the store."""
    return plan(resolve_cells(expand(suite)), store, overwrite)


def run_sweep(cells: Sequence[Cell], store: ResultStore, executor: Any, *,
              on_event: EventCallback | None = None) -> SweepResult:
    """Execute planned cells: write skipped records, then run the dense references, then the rest.

    Returns a SweepResult; on SIGINT (KeyboardInterrupt) the executor stops its running cells, finished
    records stay, and the result has ``interrupted=True``. Re-running completes the missing cells.
    """
    store.check_writable()
    t0 = time.perf_counter()
    result = SweepResult(cells=list(cells))
    emit = on_event or (lambda e: None)
    emit(SweepEvent("plan", cells=list(cells)))

    def done(cell: Cell, record: Record, seconds: float = 0.0) -> None:
        result.records[cell.key] = record
        emit(SweepEvent("done", cell=cell, record=record, seconds=seconds))

    try:
        for cell in cells:
            if cell.action == "skip":
                rec = outcome_record(cell.config, "skipped", cell.skip_reason or "", key=cell.key, skip=cell.skip_kind,
                                     reference_bytes=cell.reference_bytes)
                store.write(rec)
                done(cell, rec)
        to_run = [c for c in cells if c.action == "run"]
        first = [c for c in to_run if c.config.method == "dense" and c.config.budget.strip() in ("1x", "1.0x")]
        rest = [c for c in to_run if c not in first]
        for wave in (first, rest):
            if wave:
                executor.run(wave, store, done, lambda c: emit(SweepEvent("start", cell=c)))
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()
    result.seconds = time.perf_counter() - t0
    return result


def make_executor(kind: str, *, jobs: int = 1, address: str | None = None, imports: Sequence[str] = (),
                  cell_timeout: float | None = None) -> Any:
    """``local`` (a pool of fresh processes), ``ray`` (Ray tasks) or ``inline`` (this process, for debugging)."""
    from compbench.bench import executors

    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if cell_timeout is not None and cell_timeout <= 0:
        raise UsageError(f"--cell-timeout must be > 0, got {cell_timeout}")
    if kind == "local":
        return executors.LocalExecutor(jobs=jobs, imports=imports, cell_timeout=cell_timeout)
    if kind == "ray":
        return executors.RayExecutor(address=address, imports=imports)
    if kind == "inline":
        return executors.InlineExecutor(imports=imports)
    hint = difflib.get_close_matches(kind, ["local", "ray", "inline"], n=1)
    raise UsageError(f"unknown executor '{kind}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
                     + " (executors: local, ray, inline)")


__all__ = [
    "Cell", "CompbenchError", "Grid", "Suite", "SweepEvent", "SweepResult", "TaskRef", "apply_overrides", "expand",
    "fingerprint", "is_up_to_date", "same_train_settings", "seed_coverage", "seed_records_covering", "single_seed_cell", "list_suites", "load_suite", "make_executor", "outcome_record", "parse_suite",
    "plan", "prepare_sweep", "resolve_cell", "resolve_cells", "run_sweep", "suite_path",
]
