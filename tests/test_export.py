"""Export, load and apply (issue 32): every posthoc method's artifact round-trips bit for bit in a fresh process
that cannot import faiss or scikit-learn; sizes match the counted bytes; tampered artifacts are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compbench.artifact import ArtifactError, apply, load_embedding
from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.budget import Budget
from compbench.errors import UnattainableBudgetError, UsageError
from compbench.export import write_artifact
from compbench.methods import get_method, list_methods

V, D = 1500, 48
IDS = torch.tensor([[0, 1, 2, 1499], [7, 7, 300, 42]])


def _posthoc() -> list[str]:
    return [n for n in list_methods() if n != "dense" and "posthoc" in get_method(n).card.modes]


def _table() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(V, 12, generator=g) @ torch.randn(12, D, generator=g) + 0.1 * torch.randn(V, D, generator=g))


def _fit(name: str) -> tuple[torch.nn.Module, str]:
    m = get_method(name)
    for spec in ("10x", "40x", "7.5x", "3.9x", "2x"):
        try:
            cfg = m.configure(V, D, Budget.parse(spec).resolve(V * D * 4))
        except UnattainableBudgetError:
            continue
        return m.compress(_table(), cfg, seed=0).eval(), spec
    raise AssertionError(f"{name}: no budget fits")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.Tensor, int]]:
    root = tmp_path_factory.mktemp("artifacts")
    out = {}
    for name in _posthoc():
        module, spec = _fit(name)
        facts = {"method": name, "method_version": get_method(name).card.version, "budget": spec,
                 "achieved_ratio": V * D * 4 / stored_bytes(module)}
        folder = write_artifact(module, root / name, facts)
        with torch.no_grad():
            out[name] = (folder, module(IDS).float().clone(), stored_bytes(module))
    return out


#: derived state that only faiss can rebuild: RaBitQ's seeded rotation (faiss' RandomRotationMatrix, 0 bytes by the
#: suite's accounting); its artifact loads where faiss is installed (the loader says so in one line otherwise)
NEEDS_FAISS = {"rabitq"}

LOADER = r"""
import sys, json
if sys.argv[4] == "block":
    sys.modules["faiss"] = None      # loading must not need faiss
    sys.modules["sklearn"] = None    # nor scikit-learn
import torch
from safetensors.torch import save_file
import compbench
root, names, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
ids = torch.tensor([[0, 1, 2, 1499], [7, 7, 300, 42]])
res = {}
for n in names:
    emb = compbench.load_embedding(f"{root}/{n}")
    with torch.no_grad():
        res[n] = emb(ids).float().contiguous()
        assert emb(ids[0, 0]).shape == (emb.embedding_dim,)            # a 0-d id
        assert emb(ids.reshape(2, 2, 2)).shape == (2, 2, 2, emb.embedding_dim)
save_file(res, out)
"""


def test_every_posthoc_method_round_trips_bitwise_in_a_fresh_process_without_faiss(
        artifacts: dict[str, tuple[Path, torch.Tensor, int]], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    names = sorted(artifacts)
    root = artifacts[names[0]][0].parent
    loaded = {}
    for mode, group in (("block", [n for n in names if n not in NEEDS_FAISS]), ("allow", sorted(NEEDS_FAISS))):
        out = tmp_path / f"{mode}.safetensors"
        proc = subprocess.run([sys.executable, "-c", LOADER, str(root), ",".join(group), str(out), mode],
                              capture_output=True, text=True, timeout=300, env={**os.environ}, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        loaded.update(load_file(str(out)))
    for n in names:
        assert torch.equal(loaded[n], artifacts[n][1]), n


@pytest.mark.parametrize("name", _posthoc())
def test_file_size_is_the_counted_bytes_plus_the_header(name: str,
                                                         artifacts: dict[str, tuple[Path, torch.Tensor, int]]) -> None:
    folder, _, counted = artifacts[name]
    cfg = json.loads((folder / "config.json").read_text())
    size = (folder / "embedding.safetensors").stat().st_size
    assert cfg["stored_bytes"] == counted and cfg["file_bytes"] == size
    assert counted <= size - cfg["header_bytes"] <= counted * 1.01, (name, counted, size, cfg["header_bytes"])
    emb = load_embedding(folder)
    assert (emb.num_embeddings, emb.embedding_dim) == (V, D)
    assert stored_bytes(emb) == counted
    # state_dict round trip and logits(h) = h @ table^T
    again = {k: v.clone() for k, v in emb.state_dict().items()}
    emb.load_state_dict(again, strict=True)
    h = torch.randn(3, D)
    assert torch.allclose(emb.logits(h), h @ emb.materialize().T)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_artifacts_are_refused_with_one_line(artifacts: dict[str, tuple[Path, torch.Tensor, int]],
                                                       tmp_path: Path) -> None:
    src = artifacts["pq"][0]
    bad = _copy(src, tmp_path / "bytes")
    blob = bytearray((bad / "embedding.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (bad / "embedding.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="weights were changed"):
        load_embedding(bad)
    planted = _copy(src, tmp_path / "pickle")
    (planted / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactError, match="files compbench never writes"):
        load_embedding(planted)
    version = _copy(src, tmp_path / "version")
    cfg = json.loads((version / "config.json").read_text())
    cfg["method_version"] = 99
    (version / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="version 99"):
        load_embedding(version)
    shape = _copy(src, tmp_path / "shape")
    cfg = json.loads((shape / "config.json").read_text())
    first = sorted(cfg["tensors"])[0]
    cfg["tensors"][first]["shape"] = [1, 2, 3]
    (shape / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="refused"):
        load_embedding(shape)
    foreign = _copy(src, tmp_path / "class")
    cfg = json.loads((foreign / "config.json").read_text())
    cfg["module"]["class"] = "os:system"
    (foreign / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="outside compbench.methods"):
        load_embedding(foreign)
    with pytest.raises(ArtifactError, match="no artifact folder"):
        load_embedding(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="has no config.json"):
        load_embedding(tmp_path / "empty")


def test_apply_to_a_transformers_lm_input_and_tied(artifacts: dict[str, tuple[Path, torch.Tensor, int]]) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    folder, _, _ = artifacts["pq"]
    emb = load_embedding(folder)
    table = emb.materialize()
    ids = torch.tensor([[1, 5, 9, 300]])
    apply(model, folder, tied=True)
    with torch.no_grad():
        got = model(input_ids=ids).logits
        h = model.model(inputs_embeds=table[ids]).last_hidden_state
        assert torch.allclose(got, h @ table.T, atol=1e-5)
    wrong = LlamaForCausalLM(LlamaConfig(vocab_size=V + 1, hidden_size=D, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(UsageError, match="vocabulary size and width must match"):
        apply(wrong, folder)


def test_export_cli_refuses_a_non_empty_folder_and_a_train_method(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, needle in ((["--method", "pq", "--budget", "40x", "-o", str(tmp_path / "full")], "not empty"),
                         (["--method", "hashing", "--budget", "40x", "-o", str(tmp_path / "h")], "hashing")):
        proc = subprocess.run([sys.executable, "-m", "compbench", "export", *args], capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_an_artifact_naming_a_renamed_module_still_loads() -> None:
    """``methods/base.py`` became ``methods/method_base.py`` (issue 33): files written before name the old module."""
    from compbench import artifact
    from compbench.methods.method_base import DenseEmbedding

    assert artifact._resolve("compbench.methods.base:DenseEmbedding") is DenseEmbedding
    with pytest.raises(artifact.ArtifactError, match="does not have"):
        artifact._resolve("compbench.methods.base:NoSuchClass")
