"""The shared layer test (``tests/test_case.py``) over every registered aca_keras layer class
and every registered operation.

The classes come from the Keras serialisation registry (package ``aca_keras``) after importing
every module of the package, so a newly registered layer is found without editing this file;
:func:`test_every_registered_layer_class_has_a_case` fails until ``CASES`` has an entry for it.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest
from test_case import inputs_like, run_layer_test

import aca_keras
from aca_keras.layers import ops as ops_lib

PACKAGE = "aca_keras"
SHAPE = (2, 8, 8, 4)  # batch 2 (BatchNorm in training mode), 8x8, 4 channels


def registered_layer_classes() -> dict[str, type]:
    """``{"aca_keras>Name": class}`` of every registered Layer subclass of the package (models
    included), after importing all of its modules."""
    for module in pkgutil.walk_packages(aca_keras.__path__, PACKAGE + "."):
        importlib.import_module(module.name)
    return {key: obj for key, obj in keras.saving.get_custom_objects().items()
            if key.startswith(PACKAGE + ">") and isinstance(obj, type)
            and issubclass(obj, keras.layers.Layer)}


@dataclass
class Case:
    """One configuration of a registered class for :func:`run_layer_test`."""

    cls: str  # the class's registered name, without the package
    init_kwargs: dict[str, Any]
    input_shapes: tuple[tuple[int, ...], ...] = (SHAPE,)
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    onnx: bool | str = True  # a string: the reason the ONNX check cannot apply
    float16_dtype: str = "float16"
    low: float = -2.0
    high: float = 2.0

    @property
    def id(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.init_kwargs.items()
                        if isinstance(v, (int, float, str)) and k != "architecture")
        return f"{self.cls}({args})"


def _weights(rows: int, columns: int) -> np.ndarray:
    """Softmaxed per-edge operation weights, as the supernet passes them."""
    logits = np.random.default_rng(3).normal(size=(rows, columns))
    w = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return (w[0] if rows == 1 else w).astype("float32")


def _architecture() -> dict[str, Any]:
    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 2), EdgeSpec(0, 1, "max_pool_3x3", 4)),
                    (2,))
    return Architecture(cell, cell, 4, ops_lib.DARTS_OPS).to_dict()


_SEARCH_OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]
_NO_ONNX = "a search supernet's grouped edges are never exported (only derived networks are)"
_NO_ONNX_CELL = ("two inputs: the project's ONNX route (aca_keras.exporting) converts "
                 "single-input image graphs, and a search cell is never exported")
_IMAGES = (2, 8, 8, 3)

CASES = [
    Case("BatchNormalization", {"momentum": 0.9, "epsilon": 1e-5}),
    Case("BatchNormalization", {"momentum": 0.9, "epsilon": 1e-5, "center": False,
                                "scale": False}),
    Case("ChannelSlice", {"start": 1, "stop": 3}),
    Case("Subsample", {"stride": 2}),
    Case("Zero", {"channels_out": 3, "stride": 2}),
    Case("Noise", {"channels_out": 3, "stride": 2, "seed": 5}),
    Case("ReLUConvBN", {"channels_out": 6, "kernel_size": 3, "stride": 2, "affine": True}),
    Case("DilConv", {"channels_out": 4, "kernel_size": 3, "stride": 2, "dilation": 2,
                     "affine": False}),
    Case("SepConv", {"channels_in": 4, "channels_out": 6, "kernel_size": 3, "stride": 1,
                     "affine": True}),
    Case("PoolBN", {"pool": "avg", "channels_out": 3, "stride": 1, "affine": True}),
    Case("PoolBN", {"pool": "max", "channels_out": 4, "stride": 2, "affine": False}),
    Case("FactorizedReduce", {"channels_out": 5, "affine": True}, ((2, 9, 9, 4),)),
    Case("DropPath", {"rate": 0.3, "seed": 5}),
    Case("ChannelShuffle", {"groups": 2}),
    Case("MixedEdge", {"ops": _SEARCH_OPS, "channels": 4, "stride": 1},
         call_kwargs={"weights": _weights(1, len(_SEARCH_OPS))}),
    Case("MixedEdge", {"ops": _SEARCH_OPS, "channels": 4, "stride": 2, "partial_k": 2},
         call_kwargs={"weights": _weights(1, len(_SEARCH_OPS))}),
    Case("SearchCell", {"ops": _SEARCH_OPS, "channels": 4, "reduction": False,
                        "reduction_prev": True, "nodes": 1, "partial_k": 2},
         input_shapes=((2, 16, 16, 4), SHAPE),
         call_kwargs={"weights": _weights(2, len(_SEARCH_OPS))},
         onnx="two inputs: the project's ONNX route (aca_keras.exporting) converts "
              "single-input image graphs, and a search cell is never exported"),
    Case("SearchCell", {"ops": _SEARCH_OPS, "channels": 4, "reduction": True,
                        "reduction_prev": False, "nodes": 2, "partial_k": 1},
         input_shapes=(SHAPE, SHAPE), call_kwargs={"weights": _weights(5, len(_SEARCH_OPS))},
         onnx="two inputs: the project's ONNX route (aca_keras.exporting) converts "
              "single-input image graphs, and a search cell is never exported"),
    Case("SearchCell", {"ops": _SEARCH_OPS, "channels": 4, "reduction": True,
                        "reduction_prev": False, "nodes": 2, "partial_k": 2,
                        "layout": "per_edge"},
         input_shapes=(SHAPE, SHAPE), call_kwargs={"weights": _weights(5, len(_SEARCH_OPS))},
         onnx=_NO_ONNX_CELL),
    Case("GroupedDilConv", {"edges": 2, "channels_in": 4, "channels_out": 3, "kernel_size": 3,
                            "stride": 2, "dilation": 2}, ((2, 8, 8, 8),), onnx=_NO_ONNX),
    Case("GroupedDilConv", {"edges": 3, "channels_in": 4, "channels_out": 4, "kernel_size": 5,
                            "stride": 1, "dilation": 2}, ((2, 8, 8, 12),), onnx=_NO_ONNX),
    Case("GroupedSepConv", {"edges": 2, "channels_in": 4, "channels_out": 4, "kernel_size": 3,
                            "stride": 2}, ((2, 9, 9, 8),), onnx=_NO_ONNX),
    Case("GroupedPoolBN", {"pool": "avg", "edges": 2, "channels": 4, "stride": 2},
         ((2, 9, 9, 8),), onnx=_NO_ONNX),
    Case("GroupedPoolBN", {"pool": "max", "edges": 3, "channels": 4, "stride": 1},
         ((2, 8, 8, 12),), onnx=_NO_ONNX),
    Case("PerEdgeOperation", {"op": "skip_connect", "edges": 2, "channels_in": 4,
                              "channels_out": 4, "stride": 2}, ((2, 8, 8, 8),), onnx=_NO_ONNX),
    Case("EdgeGroup", {"ops": _SEARCH_OPS, "channels": 4, "edges": 2, "stride": 2,
                       "partial_k": 2},
         input_shapes=(SHAPE, SHAPE), call_kwargs={"weights": _weights(2, len(_SEARCH_OPS))},
         onnx=_NO_ONNX),
    Case("SearchNetwork", {"input_shape": _IMAGES[1:], "num_classes": 3, "cells": 3,
                           "channels": 4, "nodes": 1, "stem_multiplier": 1,
                           "ops": _SEARCH_OPS},
         input_shapes=(_IMAGES,), low=0.0, high=255.0, float16_dtype="float32",  # logits
         onnx="the search supernet is never exported (only derived networks are)"),
    Case("DerivedNetwork", {"architecture": _architecture(), "input_shape": _IMAGES[1:],
                            "num_classes": 3, "cells": 1, "channels": 4, "stem_multiplier": 1,
                            "auxiliary": False, "drop_path": 0.0},
         input_shapes=(_IMAGES,), low=0.0, high=255.0),
    Case("DerivedNetwork", {"architecture": _architecture(), "input_shape": (16, 16, 3),
                            "num_classes": 3, "cells": 3, "channels": 4, "stem_multiplier": 1,
                            "auxiliary": True, "drop_path": 0.2},
         input_shapes=((2, 16, 16, 3),), low=0.0, high=255.0,
         onnx="two outputs (logits, aux_logits): exports take inference_model(), checked "
              "with auxiliary=False above"),
]


def _run(case: Case, tmp_path) -> None:
    cls = registered_layer_classes()[f"{PACKAGE}>{case.cls}"]
    data = [inputs_like(shape, seed=i, low=case.low, high=case.high)
            for i, shape in enumerate(case.input_shapes)]
    run_layer_test(cls, case.init_kwargs, data[0] if len(data) == 1 else data,
                   tmp_path=tmp_path, call_kwargs=case.call_kwargs, onnx=case.onnx,
                   float16_dtype=case.float16_dtype)
    assert keras.config.dtype_policy().name == "float32"  # restored after the float16 check


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_registered_layer(case, tmp_path):
    _run(case, tmp_path)


def test_every_registered_layer_class_has_a_case():
    registered = set(registered_layer_classes())
    covered = {f"{PACKAGE}>{case.cls}" for case in CASES}
    assert not registered - covered, (f"registered layer classes without a case in "
                                      f"tests/test_layers.py CASES: {sorted(registered - covered)}")
    assert not covered - registered, f"CASES name unregistered classes: {covered - registered}"


# Every registered operation, made by create_op: at stride 2 from an odd size to fewer
# channels (9x9x8 -> 5x5x4), and at stride 1 keeping the width.
OP_CASES = [(name, 8, 4, 2, (2, 9, 9, 8)) for name in ops_lib.list_ops()] + \
           [(name, 4, 4, 1, SHAPE) for name in ops_lib.list_ops()]


@pytest.mark.parametrize("name, channels_in, channels_out, stride, shape", OP_CASES,
                         ids=[f"{c[0]}-s{c[3]}" for c in OP_CASES])
def test_registered_operation(name, channels_in, channels_out, stride, shape, tmp_path):
    def factory(**kwargs):
        return ops_lib.create_op(name, **kwargs)

    n, h, w, _ = shape
    run_layer_test(factory, {"channels_in": channels_in, "channels_out": channels_out,
                             "stride": stride, "affine": True},
                   inputs_like(shape), tmp_path=tmp_path,
                   expected_output_shape=(n, -(-h // stride), -(-w // stride), channels_out))
