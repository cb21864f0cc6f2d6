"""Task contracts.

A task is a card (name, version, track, main metric, direction, tolerance for
regression checks, dataset, protocol) plus an ``evaluate`` for its track. A task
name means the same dataset in every track (``sst2`` is SST-2 in posthoc and in
train); the registry key is ``"<track>/<name>"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

TRACKS = ("posthoc", "train", "words", "store", "scale", "lm", "table")


@dataclass(frozen=True)
class TaskCard:
    """Static description of a task, stored in every record."""

    name: str
    version: int
    track: str
    metric: str
    higher_is_better: bool = True
    tolerance: float = 0.005
    dataset: str | None = None
    protocol: str = ""

    @property
    def key(self) -> str:
        """Registry key ``track/name``."""
        return f"{self.track}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return {
            "name": self.name,
            "version": self.version,
            "track": self.track,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "tolerance": self.tolerance,
            "dataset": self.dataset,
            "protocol": self.protocol,
        }


class Task:
    """Base class: subclasses set ``card`` and implement the evaluate method of their track."""

    card: ClassVar[TaskCard]

    def data_files(self) -> list[str]:
        """Dataset split names (``name/split``) this task reads; their sha256 goes into records."""
        return []
