"""Shared fixtures: CPU-only, one thread, deterministic."""

import os

import pytest
import torch

os.environ.setdefault("KDIFF_PROGRESS", "0")
torch.set_num_threads(1)


@pytest.fixture
def device():
    """Tests always run on the CPU (CI has no GPU)."""
    return torch.device("cpu")
