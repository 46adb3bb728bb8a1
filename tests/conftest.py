"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="session", autouse=True)
def _freeze_imported_objects():
    """Move everything imported so far (TensorFlow, Keras, aca_keras: millions of objects)
    out of the garbage collector's reach: a full collection then scans only what the tests
    create, instead of taking seconds each time as the heap grows."""
    import gc

    import keras  # noqa: F401  (imported before freezing, on purpose)
    import tensorflow  # noqa: F401

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Each test starts from a fixed seed and a clear Keras session (without Keras's forced
    full garbage collection, which took up to 10 s per test late in a run; Python's own
    collector still runs)."""
    import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session(free_memory=False)


@contextlib.contextmanager
def script_module(folder: str, script: str):
    """Import ``<folder>/<script>.py`` (``studies`` or ``benchmarks``: scripts, not a package)
    as a module for the duration of the context; registered in ``sys.modules`` because
    dataclasses look their module up there."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"{script}_{folder}_under_test",
                                                  REPO_ROOT / folder / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)

