"""The result store: a folder of JSON records at deterministic paths.

- ``path_for(key)`` = ``<root>/<key>.json`` (see :func:`compbench.bench.cell.identity.cell_key`).
- Writes are atomic: a temp file in the same folder, fsync, ``os.replace``; a crash
  never leaves a half-written record, and concurrent writers of the same cell never
  interleave (the last complete write wins).
- Loading validates every record; a malformed one is reported with its path and
  skipped, the others still load.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compbench.bench.results.record import SCHEMA_VERSION, NewerSchemaError, Record, SchemaError, migrate, to_json
from compbench.errors import NewerRecordError, RecordError, UsageError, first_line, quoted
from compbench.stats import Items
from compbench.tasks.task_base import TRACKS


@dataclass(frozen=True)
class LoadProblem:
    """A record file that could not be loaded, and why (one line)."""

    path: Path
    reason: str


def load_record(path: Path | str) -> Record:
    """Read, migrate and validate one record; raises RecordError naming the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise RecordError(f"{p}: no such record file") from exc
    except OSError as exc:
        raise RecordError(f"{p}: cannot read: {exc}") from exc
    if raw[:1] == b"\x80" and raw[-1:] == b".":  # pickle protocol >= 2: never unpickled
        raise RecordError(f"{p}: not a JSON record (looks like a Python pickle; records are JSON only and pickles "
                          "are never loaded)")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecordError(f"{p}: cannot read: not UTF-8 JSON text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise RecordError(f"{p}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer of > 4300 digits, nesting too deep
        raise RecordError(f"{p}: malformed JSON: {first_line(exc)}") from exc
    if not isinstance(doc, dict):
        raise RecordError(f"{p}: a record must be a JSON object")
    try:
        return Record.model_validate(migrate(doc))
    except NewerSchemaError as exc:
        raise NewerRecordError(f"{p}: {exc}; kept as it is") from exc
    except SchemaError as exc:
        raise RecordError(f"{p}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(quoted(x) for x in first["loc"]) or "<root>"
        raise RecordError(f"{p}: invalid record: {where}: {first['msg']} ({exc.error_count()} error(s))") from exc


def newer_schema_at(path: Path) -> int | None:
    """The ``schema_version`` of the record at ``path`` when it is newer than this compbench's, else None (no
    file, unreadable, or not newer)."""
    try:
        if not path.is_file() or path.stat().st_size > 64 << 20:
            return None
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return version
    return None


def file_mode() -> int:
    """The mode a new file gets under the process umask (``0o666 & ~umask``: 0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class ResultStore:
    """Records under ``root`` at ``<root>/<key>.json``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def check_writable(self) -> None:
        """Fail fast (UsageError) when records cannot be written under the root, before any work is done."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=self.root)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise UsageError(f"results directory {self.root} is not writable: {exc.strerror or exc}") from exc

    def path_for(self, key: str) -> Path:
        """Deterministic path of a cell's record."""
        return self.root / f"{key}.json"

    def exists(self, key: str) -> bool:
        """Whether a record file exists for ``key``."""
        return self.path_for(key).is_file()

    def write(self, record: Record) -> Path:
        """Atomically write ``record`` to its path; returns the path. A record there that a newer compbench wrote
        is never replaced (NewerRecordError): this version cannot read it, so it cannot know what it would lose."""
        path = self.path_for(record.key)
        newer = newer_schema_at(path)
        if newer is not None:
            raise NewerRecordError(f"{path}: holds a record of schema_version {newer}, newer than this compbench "
                                   f"({SCHEMA_VERSION}); it was kept (upgrade compbench to replace it)")
        self._atomic_write(path, to_json(record).encode("utf-8"))
        return path

    def items_path(self, key: str) -> Path:
        """The per-item sidecar of a record: ``<record path without .json>.items.npz``."""
        path = self.path_for(key)
        return path.with_name(path.name[: -len(".json")] + ".items.npz")

    def write_items(self, key: str, items: Any) -> dict[str, Any]:
        """Atomically write a cell's per-item outcomes (:class:`compbench.stats.Items`) next to its record;
        returns the reference the record keeps (file name, sha256, kind, counts)."""
        import hashlib

        blob = items.to_npz()
        path = self.items_path(key)
        self._atomic_write(path, blob)
        return {"file": path.name, "sha256": hashlib.sha256(blob).hexdigest(), "kind": items.kind,
                "n_items": items.n_items, "n_seeds": items.n_seeds, "bytes": len(blob)}

    def read_items(self, record: Record) -> Any:
        """The per-item outcomes a record references, or None when it has none, the file is missing, or its
        sha256 differs from the record's (a stale or foreign sidecar is never used)."""
        import hashlib

        ref = (record.measurements or {}).get("items")
        if not isinstance(ref, dict) or not ref.get("sha256"):
            return None
        path = self.items_path(record.key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(blob).hexdigest() != ref["sha256"]:
            return None
        try:
            return Items.from_npz(blob)
        except (OSError, ValueError, KeyError):
            return None

    def _atomic_write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise UsageError(f"results directory {self.root} is not writable: {exc.strerror or exc}") from exc
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600; a team's shared results folder must be readable
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def read(self, key: str) -> Record:
        """Load the record of ``key`` (RecordError when missing or malformed)."""
        return load_record(self.path_for(key))

    def paths(self) -> list[Path]:
        """All record files (temp files excluded), sorted.

        Only the track folders (``<root>/<track>/...``, where every record key starts) are searched, so other
        folders under a results directory -- a committed baseline such as ``results/baselines/smoke-cpu/`` or a
        ``.cache`` -- are never mistaken for records of this store.
        """
        out: list[Path] = []
        for track in TRACKS:
            sub = self.root / track
            if sub.is_dir():
                out.extend(p for p in sub.rglob("*.json")
                           if not p.name.startswith(".") and not any(part.startswith(".") for part in p.relative_to(sub).parts))
        return sorted(out)

    def iter_records(self) -> Iterator[Record | LoadProblem]:
        """Every record, or a LoadProblem for each file that failed validation (never raises for one file)."""
        for p in self.paths():
            try:
                rec = load_record(p)
            except RecordError as exc:
                yield LoadProblem(p, str(exc))
                continue
            home = self.path_for(rec.key)
            if home.resolve() != p.resolve():  # a copied or moved record must not count as another cell or seed
                yield LoadProblem(p, f"{p}: its key {rec.key} belongs at {home}; refused (a copied or moved record)")
                continue
            yield rec

    def load_all(self) -> tuple[list[Record], list[LoadProblem]]:
        """All valid records and the problems of the invalid ones."""
        good: list[Record] = []
        bad: list[LoadProblem] = []
        for r in self.iter_records():
            (bad if isinstance(r, LoadProblem) else good).append(r)  # type: ignore[arg-type]
        return good, bad
