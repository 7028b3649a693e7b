"""Shared fixtures. One thread per process: the test machine has 2 slow cores shared with
benchmark jobs, and two threads per process contend badly there."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Keep torch on one thread even if an imported module changed it."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def digits():
    """(train, test) of scikit-learn's 8x8 digits (bundled, 1257 / 540 images)."""
    from datadistill import load_dataset

    return load_dataset("digits")
