"""Bring your own table (issue 32, part 4): --table FILE on run and export, validated with one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from compbench.artifact import load_embedding
from compbench.datasets.user_table import load_user_table


def _cb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compbench", *args], capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((2000, 12)) @ rng.standard_normal((12, 32))).astype(np.float32)
    out = {"npy": root / "mine.npy", "st": root / "two.safetensors", "nan": root / "nan.npy",
           "row": root / "row.npy", "vec": root / "vec.npy", "text": root / "text.npy", "obj": root / "obj.npy",
           "csv": root / "table.csv", "ints": root / "ints.npy"}
    np.save(out["npy"], table)
    save_file({"emb": torch.from_numpy(table), "other": torch.zeros(3, 4)}, str(out["st"]))
    bad = table.copy()
    bad[[7, 9], 0] = [np.nan, np.inf]
    np.save(out["nan"], bad)
    np.save(out["row"], table[:1])
    np.save(out["vec"], table[0])
    out["text"].write_text("1,2,3\n4,5,6\n")
    np.save(out["obj"], np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    out["csv"].write_text("1,2\n")
    np.save(out["ints"], np.arange(8000).reshape(200, 40))
    return out


def test_npy_and_safetensors_load_as_fp32_with_their_sha(files: dict[str, Path]) -> None:
    t, info = load_user_table(files["npy"])
    assert t.dtype == torch.float32 and t.shape == (2000, 32) and info["format"] == "npy" and len(info["sha256"]) == 64
    t2, info2 = load_user_table(files["st"], "emb")
    assert torch.equal(t, t2) and info2["tensor"] == "emb"


def test_a_hugging_face_folder_gives_its_input_embeddings(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    model.save_pretrained(str(tmp_path / "hf"))
    t, info = load_user_table(tmp_path / "hf")
    assert torch.equal(t, model.get_input_embeddings().weight.detach()) and info["format"] == "hf-folder"


@pytest.mark.parametrize("key, extra, code, needle", [
    ("nan", (), 1, "2 of 2,000 rows hold NaN or Inf (first: row 7)"),
    ("row", (), 1, "at least 2 rows and 2 columns, got 1 x 32"),
    ("vec", (), 1, "must be 2-D"),
    ("text", (), 1, "not a .npy file"),
    ("obj", (), 1, "not a plain numeric .npy array"),
    ("csv", (), 2, "unknown format '.csv'"),
    ("ints", (), 1, "must hold floats"),
    ("st", (), 2, "holds 2 tensors (emb, other); pick one with --tensor NAME"),
    ("st", ("--tensor", "nope"), 2, "--tensor 'nope' is not in"),
    ("npy", ("--track", "lm"), 2, "cannot be combined with --track lm"),
    ("npy", ("--model", "x"), 2, "--model does not apply"),
])
def test_bad_tables_are_one_line_errors(files: dict[str, Path], key: str, extra: tuple[str, ...], code: int,
                                        needle: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from compbench.cli import main

    res = CliRunner().invoke(main, ["run", "--table", str(files[key]), *extra, "--method", "pq", "--budget", "10x",
                                    "--threads", "1", "--results", str(tmp_path)])
    assert res.exit_code == code, res.output
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.output


def test_missing_table_and_stray_tensor_flag(tmp_path: Path) -> None:
    proc = _cb("run", "--table", str(tmp_path / "none.npy"), "--method", "pq", "--budget", "10x")
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = _cb("run", "--tensor", "x", "--method", "pq", "--budget", "10x", "--dry-run")
    assert proc.returncode == 2 and "--tensor applies with --table" in proc.stderr


def test_run_writes_a_record_and_export_loads_back(files: dict[str, Path], tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = _cb("run", "--table", str(files["st"]), "--tensor", "emb", "--method", "pq", "--budget", "40x",
               "--threads", "1", "--json", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["key"] == "table/fidelity+table=two-emb/pq/40x/cpu-1t-s0" and rec["status"] == "ok"
    assert rec["model"]["sha256"] and rec["metrics"]["interval"]["n_items"] == 2000
    assert 0.5 < rec["metrics"]["main"] < 1.0
    out = tmp_path / "art"
    proc = _cb("export", "--table", str(files["st"]), "--tensor", "emb", "--method", "pq", "--budget", "40x",
               "--threads", "1", "-o", str(out), "--results", str(results), "--no-speed")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["record_key"] == rec["key"] and cfg["record"]["main"] == rec["metrics"]["main"]
    assert cfg["stored_bytes"] == rec["budget"]["stored_bytes"]
    emb = load_embedding(out)
    table, _ = load_user_table(files["st"], "emb")
    cos = torch.nn.functional.cosine_similarity(emb.materialize(), table, dim=1).mean()
    assert float(cos) == pytest.approx(rec["metrics"]["main"], abs=1e-6)


def test_frequencies_file_drives_tiered_and_is_validated(files: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from compbench.cli import main

    counts = np.zeros(2000)
    counts[:50] = np.arange(50, 0, -1) * 10.0
    np.save(tmp_path / "counts.npy", counts)
    res = CliRunner().invoke(main, ["run", "--table", str(files["npy"]), "--method", "tiered", "--budget", "40x",
                                    "--threads", "1", "--frequencies", str(tmp_path / "counts.npy"), "--json",
                                    "--results", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    freq = json.loads(res.stdout)["method"]["config"]["frequencies"]
    assert freq["kind"] == "file" and freq["seen_rows"] == 50 and len(freq["sha256"]) == 64
    np.save(tmp_path / "short.npy", counts[:10])
    np.save(tmp_path / "neg.npy", -counts)
    for extra, code, needle in (
            (["--method", "pq", "--frequencies", str(tmp_path / "counts.npy")], 2, "not 'pq'"),
            (["--method", "tiered", "--frequencies", str(tmp_path / "short.npy")], 1, "10 counts for a 2,000-row table"),
            (["--method", "tiered", "--frequencies", str(tmp_path / "neg.npy")], 1, "finite and >= 0"),
            (["--method", "tiered", "--frequencies", str(tmp_path / "none.npy")], 2, "no such file")):
        res = CliRunner().invoke(main, ["run", "--table", str(files["npy"]), "--budget", "40x", "--threads", "1",
                                        "--results", str(tmp_path / "r"), *extra])
        assert res.exit_code == code, res.output
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
