"""Export formats are one registry (aca_keras.exporting.formats): a format registered in one
call is exported, placed, verified and read back by ``export()``, offered by ``aca-export``
and ``aca-zoo``, and exported and checked by the zoo's entry code; unregistered, it is gone
everywhere."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import aca_keras.exporting as exporting
from aca_keras.cli.export import _parser as export_parser
from aca_keras.cli.export import main as export_main
from aca_keras.cli.export import zoo_export_path
from aca_keras.cli.zoo import build_parser as zoo_parser
from aca_keras.errors import ExportError, ZooError
from aca_keras.exporting.formats import (
    ExportFormat,
    ExportRequest,
    UnknownFormatError,
    format_for_path,
    get_format,
    list_formats,
    register_format,
    unregister_format,
)
from aca_keras.exporting.sources import Source
from aca_keras.zoo import _entry, _publish, _verify

BUILT_IN = ["onnx", "savedmodel", "tflite"]

# ------------------------------------------------------------------- a toy format: a .keras
# file of the graph and the metadata document, zipped (".toy"), or side by side in a folder
# marked TOY (the directory format "toydir")


def _write_files(graph, folder: Path, request: ExportRequest) -> None:
    graph.save(folder / "graph.keras")
    (folder / "aca_keras.json").write_text(json.dumps(request.metadata, sort_keys=True))


def write_toy(graph, path: Path, request: ExportRequest) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _write_files(graph, Path(folder), request)
        with zipfile.ZipFile(path, "w") as archive:
            for name in ("graph.keras", "aca_keras.json"):
                archive.write(Path(folder) / name, name)


def run_toy(path: Path, batches, output: str):
    with tempfile.TemporaryDirectory() as folder:
        zipfile.ZipFile(path).extractall(folder)
        return run_toydir(Path(folder), batches, output)


def read_toy(path: Path) -> str:
    return zipfile.ZipFile(path).read("aca_keras.json").decode()


def write_toydir(graph, path: Path, request: ExportRequest) -> None:
    path.mkdir()
    _write_files(graph, path, request)
    (path / "TOY").write_text("")


def run_toydir(path: Path, batches, output: str):
    model = keras.saving.load_model(path / "graph.keras")
    return [np.asarray(model(b, training=False)) for b in batches]


def read_toydir(path: Path) -> str:
    return (path / "aca_keras.json").read_text()


def _tiny_model():
    from aca_keras.models.derived import build_model
    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

    ops = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
           "dil_conv_3x3", "dil_conv_5x5")
    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 2), EdgeSpec(0, 1, "max_pool_3x3", 4),
                     EdgeSpec(1, 0, "dil_conv_3x3", 1), EdgeSpec(1, 2, "avg_pool_3x3", 3)),
                    (2, 3))
    keras.utils.set_random_seed(0)
    return build_model(Architecture(cell, cell, 4, ops), (8, 8, 3), 4, cells=2, channels=4,
                       auxiliary=False, drop_path=0.0)


@pytest.fixture
def toy_formats():
    register_format("toy", suffix=".toy", label="Toy", description="zipped Keras graph",
                    write=write_toy, run=run_toy, read_metadata=read_toy)
    register_format("toydir", suffix="_toy", label="ToyDir",
                    description="Keras graph folder", write=write_toydir, run=run_toydir,
                    read_metadata=read_toydir, directory=True, default_name="toy_model",
                    marker="TOY", aliases=("toy_folder",))
    try:
        yield
    finally:
        unregister_format("toydir")
        unregister_format("toy")


# --------------------------------------------------------------------------------- tests


def test_a_registered_format_is_exported_placed_verified_and_offered(toy_formats, tmp_path,
                                                                      capsys):
    assert list_formats() == [*BUILT_IN, "toy", "toydir"]
    assert exporting.FORMATS == (*BUILT_IN, "toy", "toydir")
    model = _tiny_model()

    # export() writes it, runs it with its runner, reads its metadata back, places it
    result = exporting.export(model, tmp_path / "out" / "net.toy", "toy")
    assert result.path == tmp_path / "out" / "net.toy" and result.path.is_file()
    assert result.format == "toy" and result.verified and result.max_abs_diff <= 1e-6
    assert result.top1_agreement == 1.0 and result.checked_images == 5  # batches of 1 and 4
    assert exporting.read_metadata(result.path) == json.loads(read_toy(result.path))
    assert exporting.read_metadata(result.path)["export_format"] == "toy"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["net.toy"]
    # placement: a directory receives model<suffix>; a .keras file's default sits beside it
    # as <stem><suffix>; a directory format's default_name; an alias names it too
    assert exporting.export(model, tmp_path / "out", "toy", verify=False).path == \
        tmp_path / "out" / "model.toy"
    model.save(tmp_path / "net.keras")
    assert exporting.export(tmp_path / "net.keras", format="toy").path == tmp_path / "net.toy"
    folder = exporting.export(tmp_path / "net.keras", format="Toy-Folder")
    assert folder.path == tmp_path / "net_toy" and folder.format == "toydir"
    assert (folder.path / "TOY").is_file() and folder.max_abs_diff <= 1e-6
    assert exporting.read_metadata(folder.path)["export_format"] == "toydir"
    assert format_for_path(folder.path).name == "toydir"
    # a directory format never replaces a folder without its marker, even with overwrite
    (tmp_path / "other").mkdir()
    with pytest.raises(ExportError, match="is not a ToyDir directory"):
        exporting.export(model, tmp_path / "other", "toydir", overwrite=True)
    # the verification is real: a runner that is off by 1e-3 fails, and nothing is left
    bad = dataclasses.replace(get_format("toy"),
                              run=lambda p, b, o: [y + 1e-3 for y in run_toy(p, b, o)])
    register_format(bad, overwrite=True)
    with pytest.raises(ExportError, match="The exported toy model does not match Keras"):
        exporting.export(model, tmp_path / "failed" / "net.toy", "toy")
    assert list((tmp_path / "failed").iterdir()) == []
    register_format(dataclasses.replace(bad, run=run_toy), overwrite=True)

    # aca-export offers and uses it
    shown = " ".join(export_parser().format_help().split())  # help text, unwrapped
    assert "--format onnx|savedmodel|tflite|toy|toydir" in shown
    assert "toy: zipped Keras graph; toydir: Keras graph folder" in shown
    assert "RUN_DIR/export/ model.onnx, saved_model/, model.tflite, model.toy, toy_model/" \
        in shown
    assert export_main([str(tmp_path / "net.keras"), "--format", "toy", "--output",
                        str(tmp_path / "cli.toy")]) == 0
    out = capsys.readouterr().out
    assert f"exported: {tmp_path / 'cli.toy'}" in out and "format: toy" in out
    assert zoo_export_path("tiny", "toy", None) == Path.cwd() / "tiny.toy"
    # aca-zoo offers it to publish --export and export --format
    parser = zoo_parser()
    for command in ("publish", "export"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert "{onnx,savedmodel,tflite,toy,toydir}" in shown
        assert "toy: zipped Keras graph; toydir: Keras graph folder" in shown
    assert parser.parse_args(["publish", "RUN", "--name", "x", "--export", "toy"]).export == \
        ["toy"]
    assert parser.parse_args(["export", "x", "--format", "toydir"]).format == "toydir"

    # the zoo's entry code: its artifact file, the export into an entry, the parity check
    assert _entry.export_file("toy") == "model.toy"
    assert _entry.export_file("toydir") == "toy_model.zip"
    assert _entry.export_kinds() == [*BUILT_IN, "toy", "toydir"]
    staging = tmp_path / "entry"
    staging.mkdir()
    names = ["a", "b", "c", "d"]
    for kind, description in (("toy", "zipped Keras graph; input images raw pixels 0-255, "
                                      "output logits; verified against Keras at export"),
                              ("toydir", "zip archive of a Keras graph folder; input images")):
        artifact = _publish._export(model, staging, kind, names)
        path = staging / _entry.export_file(kind)
        assert artifact["kind"] == kind and artifact["path"] == path.name
        assert artifact["description"].startswith(description)
        assert artifact["bytes"] == path.stat().st_size and artifact["sha256"] == \
            _entry.sha256_file(path)
        ok, detail = _verify._export_parity(model, get_format(kind), path, (8, 8, 3))
        assert ok, detail
        assert detail.startswith(f"{path.name} agrees with Keras (max |difference| ")
    with zipfile.ZipFile(staging / "toy_model.zip") as archive:
        assert sorted(archive.namelist()) == ["TOY", "aca_keras.json", "graph.keras"]
    assert json.loads(zipfile.ZipFile(staging / "model.toy").read("aca_keras.json"))[
        "class_names"] == names


def test_an_unregistered_format_is_gone_everywhere(tmp_path, capsys):
    register_format("toy", suffix=".toy", label="Toy", description="zipped Keras graph",
                    write=write_toy, run=run_toy, read_metadata=read_toy)
    unregister_format("toy")
    assert list_formats() == BUILT_IN
    with pytest.raises(ValueError, match="valid formats: onnx, savedmodel, tflite"):
        exporting.export(_tiny_model(), tmp_path / "m.toy", "toy")
    assert "toy" not in export_parser().format_help()
    with pytest.raises(SystemExit):
        zoo_parser().parse_args(["export", "x", "--format", "toy"])
    assert "invalid choice: 'toy'" in capsys.readouterr().err
    with pytest.raises(ZooError, match="Unknown export format 'toy'; choose from onnx"):
        _entry.export_file("toy")
    (tmp_path / "m.toy").write_bytes(b"")
    with pytest.raises(ExportError, match=r"Cannot tell the format .*expected a \.onnx or "
                                          r"\.tflite file or a SavedModel directory"):
        exporting.read_metadata(tmp_path / "m.toy")
    assert list(tmp_path.iterdir()) == [tmp_path / "m.toy"]


def test_the_built_in_formats_and_the_registry_rules():
    onnx, saved, tflite = (get_format(n) for n in BUILT_IN)
    assert (onnx.suffix, onnx.default_name, onnx.directory, onnx.options) == \
        (".onnx", "model.onnx", False, ("opset",))
    assert (saved.suffix, saved.default_name, saved.directory, saved.marker) == \
        ("_saved_model", "saved_model", True, "saved_model.pb")
    assert (tflite.suffix, tflite.default_name, tflite.options) == (".tflite", "model.tflite", ())
    # names: any case, '-' for '_', aliases
    for spelling in ("savedmodel", "SavedModel", "saved_model", "saved-model", "TF_SAVED_MODEL"):
        assert get_format(spelling) is saved
    with pytest.raises(UnknownFormatError) as info:
        get_format("torchscript")
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)
    assert str(info.value).startswith("Unknown export format 'torchscript'; valid formats: "
                                      "onnx, savedmodel, tflite. Register one with")
    # a name or alias is taken once; overwrite=True replaces
    fields = dict(suffix=".toy", label="Toy", description="d", write=write_toy, run=run_toy,
                  read_metadata=read_toy)
    with pytest.raises(ValueError, match="'onnx' is already registered"):
        register_format("onnx", **fields)
    with pytest.raises(ValueError, match="'saved_model' is already taken by 'savedmodel'"):
        register_format("toy", aliases=("saved_model",), **fields)
    with pytest.raises(ValueError, match="is an alias of the export format 'savedmodel'"):
        register_format("tf_saved_model", **fields)
    with pytest.raises(ValueError, match="lower-case"):
        register_format("Toy", **fields)
    with pytest.raises(ValueError, match=r"suffix starts with '\.'"):
        ExportFormat("toy", **{**fields, "suffix": "toy"})
    with pytest.raises(ValueError, match="'module:function' name"):
        ExportFormat("toy", **{**fields, "run": "run_toy"})
    assert list_formats() == BUILT_IN
    # the built-ins name their functions, imported when first used
    assert onnx.write == "aca_keras.exporting.onnx:export_onnx"
    from aca_keras.exporting.onnx import export_onnx, run_onnx

    assert onnx.writer() is export_onnx and onnx.runner() is run_onnx


def test_the_registry_loads_no_tensorflow():
    code = ("import sys; from aca_keras.exporting.formats import list_formats; "
            "print(list_formats(), sorted(m for m in ('keras', 'tensorflow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "['onnx', 'savedmodel', 'tflite'] []"


def test_target_paths_follow_the_registry(tmp_path):
    from aca_keras.exporting.placement import target_path

    run = Source(model=None, label="run", default_dir=tmp_path / "export", default_stem="model",
                 in_run_dir=True)
    beside = Source(model=None, label="file", default_dir=tmp_path, default_stem="net",
                    in_run_dir=False)
    assert [target_path(run, None, f).name for f in BUILT_IN] == \
        ["model.onnx", "saved_model", "model.tflite"]
    assert [target_path(beside, None, f).name for f in BUILT_IN] == \
        ["net.onnx", "net_saved_model", "net.tflite"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert target_path(beside, tmp_path, "tflite") == tmp_path / "model.tflite"
        assert target_path(beside, tmp_path / "x", "savedmodel") == tmp_path / "x"
