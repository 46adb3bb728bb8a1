"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACA_SHARED_DIR", REPO_ROOT.parent / "shared"))
CIFAR_SAMPLE = SHARED / "data" / "cifar10-sample" / "train.npz"


@pytest.fixture
def cifar_sample_path() -> Path:
    """Path of the 4,660-image CIFAR-10 sample in ../shared; skips when it is absent."""
    if not CIFAR_SAMPLE.is_file():
        pytest.skip(f"CIFAR-10 sample not found at {CIFAR_SAMPLE} (../shared is not beside the repo)")
    return CIFAR_SAMPLE


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Each test starts from a fixed seed and a clear Keras session."""
    import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()
