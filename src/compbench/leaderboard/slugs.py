"""Path components for report pages: a track, task or device name made safe to use as a folder name."""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def safe_component(text: str) -> str:
    """A path component that cannot escape the report folder: kept when it is plain
    (``[A-Za-z0-9][A-Za-z0-9._+-]*``), else slugged with a short hash of the original."""
    text = str(text)
    if _SAFE.fullmatch(text) and text not in (".", ".."):
        return text
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._-+") or "x"
    return f"{slug[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


__all__ = ["safe_component"]
