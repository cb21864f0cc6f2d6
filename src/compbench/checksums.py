"""File hashing and a cross-process file lock: one definition for every cache, artifact and data loader.

Dependency-free (standard library only), so the artifact loader (:mod:`compbench.artifact`) can use it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 1 << 20


def sha256_file(path: Path | str) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    """The checksum sidecar of a cache file: ``<name>.sha256`` next to it."""
    return path.with_name(path.name + ".sha256")


def record_checksum(path: Path) -> None:
    """Write ``path``'s sha256 into its sidecar (after the file itself was written atomically); an unwritable
    folder only costs the check (the file is then rebuilt on its next read)."""
    try:
        sidecar(path).write_text(sha256_file(path) + "\n", encoding="ascii")
    except OSError:
        pass


def checksum_problem(path: Path) -> str | None:
    """Why the cache file ``path`` must not be trusted (no sidecar, or a sha256 that differs), or None when it
    matches the sha256 recorded when it was written."""
    try:
        expected = sidecar(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "no checksum recorded"
    digest = sha256_file(path)
    return None if digest == expected else f"checksum mismatch: sha256 {digest[:12]}, recorded {expected[:12]}"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created with its folder; a no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


__all__ = ["sha256_file", "file_lock"]
