"""The README's "Use the winner" snippet, run as written: export tiered at 40x, apply it to the bundled MiniLM
sentence-transformers model, and reproduce the committed record's STS-B score to the last printed digit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _snippet() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use the winner", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


@pytest.mark.slow  # a tiered fit of MiniLM's table (about a minute) and an STS-B encoding (about 20 s)
def test_the_readme_snippet_reproduces_the_records_stsb_score(tmp_path: Path) -> None:
    export = subprocess.run([sys.executable, "-m", "compbench", "export", "--method", "tiered", "--budget", "40x",
                             "-o", str(tmp_path / "tiered-40x"), "--results", str(REPO / "results"), "--threads", "1",
                             "--no-speed"], capture_output=True, text=True, timeout=900, check=False)
    assert export.returncode == 0, export.stderr[-2000:]
    cfg = json.loads((tmp_path / "tiered-40x" / "config.json").read_text())
    record = json.loads((REPO / "results" / (cfg["record_key"] + ".json")).read_text())
    assert cfg["stored_bytes"] == record["budget"]["stored_bytes"]  # the artifact is the record's module
    assert cfg["record"]["main"] == record["metrics"]["main"]
    run = subprocess.run([sys.executable, "-c", _snippet()], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == f"{record['metrics']['main']:.4f}"
