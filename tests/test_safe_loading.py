"""Reliability, part 6: compbench never unpickles an untrusted file.

- a source scan (AST) of ``src/compbench``: no pickle-family module, ``torch.load`` only with
  ``weights_only=True``, ``np.load`` only with an explicit ``allow_pickle=False``, no ``pandas.read_pickle``,
  ``yaml.load`` or builtin ``eval``/``exec``;
- every ``np.load`` call site (GloVe vectors, the train track's token cache, the store track's vector cache)
  meets a pickled object array whose unpickling would create a marker file: it is refused (a one-line
  DataError, or the cache is recomputed) and the marker never appears;
- result records are JSON only: a record file holding a pickle is refused in one line, never unpickled;
- a ``--model`` folder whose ``pytorch_model.bin`` is a hostile pickle is refused by
  ``torch.load(weights_only=True)`` (inside transformers) with one line, never run.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

import compbench

SRC = Path(compbench.__file__).resolve().parent
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
FORBIDDEN_CALLS = {"pandas.read_pickle", "pd.read_pickle", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                   "eval", "exec", "torch.serialization.load", "numpy.lib.format.read_array"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw_const(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<non-constant>"
    return "<missing>"


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Every unsafe deserialisation in ``source`` as ``file:line: why``."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            out += [f"{where}: imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[0] in PICKLE_MODULES:
                out.append(f"{where}: imports from {mod}")
            if mod in ("numpy", "torch", "yaml", "pandas") and any(a.name in ("load", "read_pickle") for a in node.names):
                out.append(f"{where}: imports load from {mod} (call it as {mod}.load so it can be checked)")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in FORBIDDEN_CALLS:
                out.append(f"{where}: calls {name}")
            elif name == "torch.load" and _kw_const(node, "weights_only") is not True:
                out.append(f"{where}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and _kw_const(node, "allow_pickle") is not False:
                out.append(f"{where}: {name} without an explicit allow_pickle=False")
    return out


def test_the_scanner_finds_what_it_looks_for() -> None:
    bad = """
import pickle
from dill import loads
from numpy import load
import numpy as np, torch, yaml, pandas as pd
np.load("a.npy")
np.load("a.npy", allow_pickle=True)
torch.load("w.bin")
torch.load("w.bin", weights_only=False)
pd.read_pickle("x")
yaml.load(open("s.yaml"))
eval("1 + 1")
"""
    assert sorted(int(p.split(":")[1]) for p in unsafe_loads(bad)) == [2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    good = """
import numpy as np, torch, yaml
np.load("a.npy", allow_pickle=False)
torch.load("w.bin", weights_only=True, map_location="cpu")
yaml.safe_load("a: 1")
model.eval()
"""
    assert unsafe_loads(good) == []


def test_no_module_deserialises_unsafely() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    problems = [p for f in files for p in unsafe_loads(f.read_text(encoding="utf-8"), str(f.relative_to(SRC)))]
    assert problems == []


# ------------------------------------------------------------------------------------------------------------------
# hostile files at every load site
# ------------------------------------------------------------------------------------------------------------------
class _Hostile:
    """Unpickling this creates ``marker`` (a stand-in for running arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    m = tmp_path / "UNPICKLED"
    yield m
    assert not m.exists(), "a hostile pickle was unpickled"


def _object_array(marker: Path) -> np.ndarray:
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = _Hostile(marker), "x"
    return arr


def test_numpy_loads_refuse_object_arrays(marker: Path, tmp_path: Path) -> None:
    """The behaviour the call sites rely on: allow_pickle=False refuses before unpickling anything."""
    path = tmp_path / "a.npy"
    np.save(path, _object_array(marker), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        np.load(path, allow_pickle=False)
    np.savez(tmp_path / "a.npz", ids=_object_array(marker))
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z, pytest.raises(ValueError, match="allow_pickle=False"):
        z["ids"]


def test_glove_loader_refuses_a_pickled_vectors_file(marker: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    from compbench.errors import DataError
    from compbench.tasks import words

    np.save(tmp_path / "glove_6B_50d_emb.npy", _object_array(marker), allow_pickle=True)
    pd.DataFrame({"index": ["the", "a"]}).to_parquet(tmp_path / "glove_6B_index.parquet")
    monkeypatch.setattr(words, "glove_dir", lambda: tmp_path)
    with pytest.raises(DataError, match="cannot read GloVe .*allow_pickle=False"):
        words.load_glove.__wrapped__()  # uncached: the real GloVe table of other tests is left alone


def test_token_cache_with_a_pickle_is_recomputed_not_loaded(marker: Path, tmp_path: Path) -> None:
    from compbench.datasets import file_sha256, split_path
    from compbench.tasks import get_task
    from compbench.tasks.train import load_tokenizer, token_cache_path, tokenize_source

    task = get_task("train", "trec")
    tok, info = load_tokenizer()
    path = token_cache_path(tmp_path, task.dataset, "test", file_sha256(split_path(task.dataset, "test")), info, 8)
    np.savez(path, ids=_object_array(marker), lengths=_object_array(marker))
    ids, lengths = tokenize_source(task, "test", tok, info, 8, tmp_path)
    assert ids.dtype == np.int32 and ids.shape == (500, 8)
    with np.load(path, allow_pickle=False) as z:  # overwritten with the clean arrays
        assert np.array_equal(z["ids"], ids)


def test_store_vector_cache_with_a_pickle_is_recomputed_not_loaded(marker: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from compbench import config
    from compbench.bench.tracks import store_track
    from compbench.tasks.store import corpus_sha256

    class Info:
        def to_dict(self) -> dict:
            return {"name": "fake", "revision": "r1", "dim": 4}

    class FakeEncoder:
        info = Info()
        st = None

        def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            return np.ones((len(texts), 4), dtype=np.float32)

    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    texts = ["a", "b", "c"]
    key = store_track.vectors_key(Info().to_dict(), corpus_sha256(texts), None)
    (tmp_path / "store-vectors").mkdir()
    np.save(tmp_path / "store-vectors" / f"{key}.npy", _object_array(marker), allow_pickle=True)
    vec, facts = store_track.corpus_vectors(FakeEncoder(), texts)
    assert facts["vectors_cached"] is False and vec.shape == (3, 4)
    vec2, facts2 = store_track.corpus_vectors(FakeEncoder(), texts)
    assert facts2["vectors_cached"] is True and np.array_equal(vec, vec2)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_record_file_holding_a_pickle_is_refused_in_one_line(marker: Path, tmp_path: Path, protocol: int) -> None:
    from click.testing import CliRunner

    from compbench.bench.results.record_store import ResultStore, load_record
    from compbench.cli import main
    from compbench.errors import RecordError
    from tests_support import make_record

    store = ResultStore(tmp_path / "r")
    good = store.write(make_record(seed=0))
    hostile = good.with_name("cpu-1t-s1.json")
    hostile.write_bytes(pickle.dumps({"record": _Hostile(marker)}, protocol=protocol))
    with pytest.raises(RecordError) as exc:
        load_record(hostile)
    assert str(hostile) in str(exc.value) and "\n" not in str(exc.value)
    if protocol >= 2:
        assert "looks like a Python pickle; records are JSON only" in str(exc.value)
    records, problems = store.load_all()
    assert len(records) == 1 and [p.path for p in problems] == [hostile]
    res = CliRunner().invoke(main, ["show", str(hostile)])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1


def test_records_are_written_as_json_text(tmp_path: Path) -> None:
    import json

    from compbench.bench.results.record_store import ResultStore
    from tests_support import make_record

    path = ResultStore(tmp_path).write(make_record())
    assert json.loads(path.read_text(encoding="utf-8"))["key"] == make_record().key


def test_a_model_whose_weights_are_a_hostile_pickle_is_refused(marker: Path, tmp_path: Path) -> None:
    """``--model DIR`` with a ``pytorch_model.bin``: transformers loads it with torch.load(weights_only=True)."""
    from compbench.errors import DataError
    from compbench.models.encoder import SentenceEncoder
    from compbench.models.model_registry import default_model_dir

    model = tmp_path / "model"
    model.mkdir()
    for f in default_model_dir().rglob("*"):
        if f.is_file() and f.name != "model.safetensors":
            target = model / f.relative_to(default_model_dir())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"embeddings.word_embeddings.weight": _Hostile(marker)}))
    with pytest.raises(DataError, match=r"torch.load\(weights_only=True\) and arbitrary pickles are never run") as exc:
        SentenceEncoder(str(model))
    assert "\n" not in str(exc.value)
