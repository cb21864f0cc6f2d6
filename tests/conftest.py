"""Shared fixtures: offline environment, a tiny table, one MiniLM encoder per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture()
def tiny_table() -> torch.Tensor:
    """A seeded 300 x 48 table with low intrinsic dimension plus noise (like real embeddings)."""
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(300, 12, generator=g) @ torch.randn(12, 48, generator=g)
    return (base + 0.1 * torch.randn(300, 48, generator=g)) * 0.05


@pytest.fixture(scope="session")
def encoder():
    """The bundled all-MiniLM-L6-v2, loaded once per test session."""
    from compbench.models.encoder import SentenceEncoder

    return SentenceEncoder(None, device="cpu")


@pytest.fixture(scope="session")
def shared_cache(encoder):
    """A runner cache pre-filled with the session encoder (so run_cell does not reload it)."""
    return {"encoder:None:cpu": encoder}
