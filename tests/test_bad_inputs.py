"""The bad-input matrix: every bad input of ``docs/bad-inputs.md``, one test row each.

Each row names the input, the error type the library raises and an excerpt of its message;
``test_doc_table_lists_the_same_rows`` keeps the document and this table in step.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import pytest

from aca_keras import data
from aca_keras import distribute as dist
from aca_keras.errors import (
    DataError,
    ExportError,
    RunDirError,
    SchemaVersionError,
    StorageError,
    StrategyError,
    UnknownDatasetError,
    UnknownOperationError,
)
from aca_keras.io import checkpoint as ckpt

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"

# ----------------------------------------------------------------------------- fixtures


def _images(n: int = 16, size: int = 8, channels: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (n, size, size, channels)).astype("uint8")
    y = (np.arange(n) % 4).astype("int32")
    return x, y


def _architecture():
    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

    ops = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
           "dil_conv_3x3", "dil_conv_5x5")
    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 2), EdgeSpec(0, 1, "max_pool_3x3", 4),
                     EdgeSpec(1, 0, "dil_conv_3x3", 1), EdgeSpec(1, 2, "avg_pool_3x3", 3)),
                    (2, 3))
    return Architecture(cell, cell, 4, ops)


def _model(image: int = 8, classes: int = 4):
    from aca_keras.models.derived import build_model

    return build_model(_architecture(), (image, image, 3), classes, cells=2, channels=4,
                       auxiliary=False, drop_path=0.0)


def _tiny_checkpoint_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _write_checkpoint(path: Path):
    model, optimizer = _tiny_checkpoint_model()
    ckpt.save_checkpoint(path, model, {"optimizer": optimizer}, {"epoch": 1})
    return model, optimizer


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _search_args(**extra):
    return dict(dataset=_images(32), epochs=1, cells=2, channels=4, nodes=2, batch_size=4,
                verbose=0, seed=1, **extra)


# ----------------------------------------------------------------------------- the rows


def _unknown_dataset(ctx):
    data.load("no_such_dataset_xyz")


def _missing_dataset_path(ctx):
    data.load(str(ctx.tmp / "missing.npz"))


def _corrupt_npz(ctx):
    path = ctx.tmp / "broken.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    data.load(str(path))


def _images_wrong_shape(ctx):
    data.load((np.zeros((10, 8), "float32"), np.zeros(10, "int32")))


def _labels_count_mismatch(ctx):
    x, y = _images(10)
    data.load((x, y[:9]))


def _labels_negative(ctx):
    x, y = _images(10)
    y[3] = -1
    data.load((x, y))


def _labels_out_of_range(ctx):
    x, y = _images(10)
    y[0] = 7
    data.load((x, y), num_classes=4)


def _labels_one_hot(ctx):
    x, y = _images(10)
    data.load((x, np.eye(4, dtype="float32")[y]))


def _pixels_nan(ctx):
    x, y = _images(10)
    x = x.astype("float32")
    x[0, 0, 0, 0] = np.nan
    data.load((x, y))


def _model_image_mismatch(ctx):
    from aca_keras.training.trainer import train

    x, y = _images(16, size=12)
    train(_model(image=8), data.load((x, y)), epochs=1, batch_size=8, verbose=0)


def _model_class_mismatch(ctx):
    from aca_keras.training.trainer import train

    x, y = _images(16)
    train(_model(classes=10), data.load((x, y)), epochs=1, batch_size=8, verbose=0)


def _keras_file_corrupt(ctx):
    from aca_keras.models.derived import load_model

    path = ctx.tmp / "model.keras"
    path.write_bytes(b"not a zip")
    load_model(path)


def _keras_file_truncated(ctx):
    from aca_keras.models.derived import load_model

    path = ctx.tmp / "model.keras"
    _model().save(path)
    data_bytes = path.read_bytes()
    path.write_bytes(data_bytes[: len(data_bytes) // 2])
    load_model(path)


def _export_corrupt_keras(ctx):
    from aca_keras.exporting.exporter import export

    path = ctx.tmp / "model.keras"
    path.write_bytes(b"not a zip")
    export(path, ctx.tmp / "out.onnx")


def _run_config_corrupt(ctx):
    from aca_keras.searching.pipeline import search

    run = ctx.tmp / "run"
    run.mkdir()
    (run / "config.json").write_text('{"epochs": 2, "se')
    search(run_dir=run, resume=True)


def _run_config_from_future(ctx):
    from aca_keras.searching.pipeline import search

    run = ctx.tmp / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "digits", "quantum_ops": True}))
    search(run_dir=run, resume=True)


def _run_dir_missing(ctx):
    from aca_keras.searching.pipeline import search

    search(run_dir=ctx.tmp / "never-ran", resume=True)


def _run_dir_unfinished(ctx):
    from aca_keras.training.trainer import train_run

    (ctx.tmp / "run").mkdir()
    train_run(ctx.tmp / "run")


def _train_checkpoint_corrupt(ctx):
    from aca_keras.training.trainer import train

    run = ctx.tmp / "run"
    (run / "train_checkpoint").mkdir(parents=True)
    (run / "train_checkpoint" / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    x, y = _images(16)
    train(_model(), data.load((x, y)), epochs=1, batch_size=8, run_dir=run, resume=True,
          verbose=0)


def _checkpoint_of_other_model(ctx):
    path = ctx.tmp / "checkpoint.npz"
    _write_checkpoint(path)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    ckpt.load_checkpoint(path, other, {})


def _architecture_from_future(ctx):
    from aca_keras.space.architecture import Architecture

    document = _architecture().to_dict()
    document["version"] = 99
    Architecture.from_dict(document)


def _genotype_from_future(ctx):
    from aca_keras.space.genotype import Genotype

    document = _architecture().to_genotype().to_dict()
    document["version"] = 99
    Genotype.from_dict(document)


def _architecture_unknown_operation(ctx):
    from aca_keras.space.architecture import Architecture

    document = _architecture().to_dict()
    text = json.dumps(document).replace('"dil_conv_3x3"', '"warp_conv_3x3"')
    Architecture.from_dict(json.loads(text))


def _search_unknown_operation(ctx):
    from aca_keras.searching.pipeline import search

    search(**_search_args(ops=["sep_conv_3x3", "warp_conv_3x3"], run_dir=ctx.tmp / "run"))


def _output_dir_unwritable(ctx):
    from aca_keras.searching.pipeline import search

    blocker = ctx.tmp / "a-file"
    blocker.write_text("a file where the run directory's parent should be")
    search(**_search_args(run_dir=blocker / "run"))


def _disk_full_at_rename(ctx):
    path = ctx.tmp / "checkpoint.npz"
    ctx.state["model"], ctx.state["optimizer"] = _write_checkpoint(path)
    ctx.state["before"] = path.read_bytes()
    ctx.monkeypatch.setattr(ckpt.os, "replace", _enospc)
    model, optimizer = _tiny_checkpoint_model()
    ckpt.save_checkpoint(path, model, {"optimizer": optimizer}, {"epoch": 2})


def _disk_full_mid_write(ctx):
    path = ctx.tmp / "checkpoint.npz"
    ctx.state["model"], ctx.state["optimizer"] = _write_checkpoint(path)
    ctx.state["before"] = path.read_bytes()

    def savez(handle, **arrays):
        handle.write(b"PK\x03\x04" + b"\0" * 64)  # part of an archive, then the disk is full
        _enospc()

    ctx.monkeypatch.setattr(ckpt.np, "savez", savez)
    model, optimizer = _tiny_checkpoint_model()
    ckpt.save_checkpoint(path, model, {"optimizer": optimizer}, {"epoch": 2})


def _previous_checkpoint_survives(ctx, error):
    path = ctx.tmp / "checkpoint.npz"
    assert error.errno == errno.ENOSPC
    assert str(path) in str(error)
    assert path.read_bytes() == ctx.state["before"]
    assert [p.name for p in ctx.tmp.iterdir()] == ["checkpoint.npz"]  # no temporary left
    model, optimizer = _tiny_checkpoint_model()
    assert ckpt.load_checkpoint(path, model, {"optimizer": optimizer}) == {"epoch": 1}
    for a, b in zip(model.variables, ctx.state["model"].variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _interrupted_export(ctx):
    from aca_keras.exporting import exporter as exporting
    from aca_keras.exporting import onnx as onnx_route

    target = ctx.tmp / "model.onnx"
    target.write_bytes(b"the previous export")

    def half_written(graph, tmp, *args, **kwargs):
        Path(tmp).write_bytes(b"\x08\x07 half an ONNX file")
        raise KeyboardInterrupt

    # the onnx format's writer (export_onnx, named in aca_keras.exporting.formats) calls it
    ctx.monkeypatch.setattr(onnx_route, "write_onnx", half_written)
    exporting.export(_model(), target, "onnx", overwrite=True)


def _export_left_nothing(ctx, error):
    assert (ctx.tmp / "model.onnx").read_bytes() == b"the previous export"
    assert sorted(p.name for p in ctx.tmp.iterdir()) == ["model.onnx"]


def _strategy_unknown(ctx):
    from aca_keras.searching.pipeline import search

    search(**_search_args(strategy="tpu-pod", run_dir=ctx.tmp / "run"))


def _multiworker_without_tf_config(ctx):
    ctx.monkeypatch.delenv("TF_CONFIG", raising=False)
    dist.get_strategy("multiworker")


def _multiworker_bad_tf_config(ctx):
    ctx.monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": []}}')
    dist.get_strategy("multiworker")


def _batch_not_divisible(ctx):
    dist.check_global_batch(30, 4)


def _mixed_precision_unknown(ctx):
    from aca_keras.searching.pipeline import search

    search(**_search_args(mixed_precision="float8", run_dir=ctx.tmp / "run"))


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Row:
    id: str
    action: Callable[[Any], None]
    error: type[BaseException]
    excerpt: str
    check: Callable[[Any, BaseException], None] | None = None


ROWS = [
    Row("dataset-unknown-name", _unknown_dataset, UnknownDatasetError, "no_such_dataset_xyz"),
    Row("dataset-missing-path", _missing_dataset_path, DataError, "No such file or directory"),
    Row("dataset-corrupt-npz", _corrupt_npz, DataError, "Could not read"),
    Row("images-wrong-shape", _images_wrong_shape, DataError, r"shaped \(N, H, W\)"),
    Row("labels-count-mismatch", _labels_count_mismatch, DataError, "10 images but 9"),
    Row("labels-negative", _labels_negative, DataError, "negative label -1"),
    Row("labels-out-of-range", _labels_out_of_range, DataError, "num_classes=4"),
    Row("labels-one-hot", _labels_one_hot, DataError, "one-hot"),
    Row("pixels-nan", _pixels_nan, DataError, "NaN or infinite"),
    Row("model-data-image-mismatch", _model_image_mismatch, DataError, "but the model takes"),
    Row("model-data-class-mismatch", _model_class_mismatch, DataError, "4 classes but the model"),
    Row("keras-file-corrupt", _keras_file_corrupt, RunDirError, "not a loadable .keras"),
    Row("keras-file-truncated", _keras_file_truncated, RunDirError, "not a loadable .keras"),
    Row("export-corrupt-keras", _export_corrupt_keras, ExportError, "not a valid .keras file"),
    Row("run-config-corrupt", _run_config_corrupt, RunDirError, "not valid JSON"),
    Row("run-config-from-future", _run_config_from_future, RunDirError, "newer aca_keras"),
    Row("run-dir-missing", _run_dir_missing, RunDirError, "is not a directory"),
    Row("run-dir-unfinished-search", _run_dir_unfinished, RunDirError, "no architecture.json"),
    Row("train-checkpoint-corrupt", _train_checkpoint_corrupt, RunDirError,
        "corrupt or unreadable"),
    Row("checkpoint-of-other-model", _checkpoint_of_other_model, RunDirError,
        "does not match this model"),
    Row("architecture-from-future", _architecture_from_future, SchemaVersionError, "99"),
    Row("genotype-from-future", _genotype_from_future, SchemaVersionError, "99"),
    Row("architecture-unknown-operation", _architecture_unknown_operation,
        UnknownOperationError, "warp_conv_3x3"),
    Row("search-unknown-operation", _search_unknown_operation, UnknownOperationError,
        "warp_conv_3x3"),
    Row("output-dir-unwritable", _output_dir_unwritable, RunDirError,
        "Cannot write the run directory"),
    Row("disk-full-at-checkpoint-rename", _disk_full_at_rename, StorageError,
        "previous version of the file is intact", _previous_checkpoint_survives),
    Row("disk-full-during-checkpoint-write", _disk_full_mid_write, StorageError,
        "previous version of the file is intact", _previous_checkpoint_survives),
    Row("interrupted-export", _interrupted_export, KeyboardInterrupt, "", _export_left_nothing),
    Row("strategy-unknown", _strategy_unknown, StrategyError, "Unknown strategy 'tpu-pod'"),
    Row("multiworker-without-tf-config", _multiworker_without_tf_config, StrategyError,
        "needs the TF_CONFIG"),
    Row("multiworker-bad-tf-config", _multiworker_bad_tf_config, StrategyError,
        "not a valid multi-worker configuration"),
    Row("batch-not-divisible-by-replicas", _batch_not_divisible, StrategyError,
        "does not split evenly over 4 replicas"),
    Row("mixed-precision-unknown-policy", _mixed_precision_unknown, StrategyError,
        "Unknown mixed precision policy 'float8'"),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row: Row, tmp_path, monkeypatch):
    ctx = SimpleNamespace(tmp=tmp_path, monkeypatch=monkeypatch, state={})
    with pytest.raises(row.error, match=row.excerpt or None) as info:
        row.action(ctx)
    if row.check is not None:
        row.check(ctx, info.value)


def _doc_rows() -> list[tuple[str, str]]:
    """``(id, error type)`` of every row of the table in docs/bad-inputs.md."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|.*?\|\s*`([A-Za-z]+)`", line)
        if match:
            rows.append((match.group(1), match.group(2)))
    return rows


def test_doc_table_lists_the_same_rows():
    documented = _doc_rows()
    assert [row_id for row_id, _ in documented] == [row.id for row in ROWS]
    assert [error for _, error in documented] == [row.error.__name__ for row in ROWS]
