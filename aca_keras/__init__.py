"""aca_keras: differentiable architecture search with Adaptive Channel Allocation.

The public API is loaded lazily, so ``import aca_keras`` is cheap and has no side effects;
TensorFlow is imported the first time a function that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from aca_keras._backend import require_tensorflow

__version__ = "0.1.0"

require_tensorflow()

# public name -> (module, attribute); attribute None means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "data": ("aca_keras.data", None),
    "ops": ("aca_keras.layers.ops", None),
    "errors": ("aca_keras.errors", None),
    "distribute": ("aca_keras.distribute", None),
    "zoo": ("aca_keras.zoo", None),
    "tuning": ("aca_keras.tuning", None),
    "variants": ("aca_keras.searching.variants", None),
    "importance": ("aca_keras.channels.importance", None),
    "allocation": ("aca_keras.channels.allocation", None),
    "monitor": ("aca_keras.searching.monitor", None),
    "callbacks": ("aca_keras.callbacks", None),
    "Genotype": ("aca_keras.space.genotype", "Genotype"),
    "derive_genotype": ("aca_keras.space.genotype", "derive_genotype"),
    "SearchNetwork": ("aca_keras.models.supernet", "SearchNetwork"),
    "SearchConfig": ("aca_keras.searching.config", "SearchConfig"),
    "search": ("aca_keras.searching.pipeline", "search"),
    "reallocate": ("aca_keras.searching.reallocate", "reallocate"),
    "Architecture": ("aca_keras.space.architecture", "Architecture"),
    "build_model": ("aca_keras.models.derived", "build_model"),
    "load_model": ("aca_keras.models.derived", "load_model"),
    "train": ("aca_keras.training", "train"),
    "train_run": ("aca_keras.training", "train_run"),
    "export": ("aca_keras.exporting", "export"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'aca_keras' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
