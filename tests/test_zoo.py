"""The model zoo: bundled entries, publish, load-time checks, private zoos, CLI, packaging.

Building the four 20-cell seed networks takes a few seconds each, so the full build of every
entry runs once, through ``aca-zoo verify`` (``test_cli_verify_passes_on_every_entry``). The
bundled ACA entry is small; its ONNX export runs in the default suite, the seed entries'
exports are marked slow.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from aca_keras import zoo
from aca_keras.cli.zoo import main as cli_main
from aca_keras.errors import ZooError
from aca_keras.space.architecture import Architecture
from aca_keras.space.genotype import Genotype
from aca_keras.zoo import _entry, _registry, _schema

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
ENTRY_DIRS = sorted(p.parent for p in ZOO.glob("*/entry.json"))
SEED_NAMES = ("darts-v1-cifar10", "darts-v2-cifar10", "pc-darts-cifar10", "p-darts-cifar10")
ACA_NAME = "aca-darts-cifar10-sample"

# The published genotypes (official releases), in the papers' own edge order.
PUBLISHED = {
    "darts-v1-cifar10": (
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
    "darts-v2-cifar10": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
    "pc-darts-cifar10": (
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]),
    "p-darts-cifar10": (
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)]),
}
# name: (test error %, std or None, params in M, arXiv id) as the papers report them.
PAPER_FIGURES = {
    "darts-v1-cifar10": (3.00, 0.14, 3.3, "1806.09055"),
    "darts-v2-cifar10": (2.76, 0.09, 3.3, "1806.09055"),
    "pc-darts-cifar10": (2.57, 0.07, 3.6, "1907.05737"),
    "p-darts-cifar10": (2.50, None, 3.4, "1904.12760"),
}


@pytest.fixture(autouse=True)
def _isolated_zoo_path(monkeypatch):
    """No private zoo from the environment leaks into these tests."""
    monkeypatch.delenv("ACA_ZOO_PATH", raising=False)
    yield
    _registry.clear_cache()


# ------------------------------------------------------------------------ a tiny run dir


def _tiny_architecture() -> Architecture:
    genotype = Genotype((("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_3x3", 0),
                         ("sep_conv_5x5", 2)), (2, 3),
                        (("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 1),
                         ("dil_conv_5x5", 2)), (2, 3))
    arch = Architecture.from_genotype(genotype, 4, "aca", provenance={"variant": "darts"})
    return arch.with_channels([4, 2, 0, 3], [1, 4, 2, 0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A hand-written finished run directory: architecture.json, config.json, a small trained
    model saved as trained.keras, train_config.json and train_result.json."""
    import keras

    from aca_keras.io import atomic
    from aca_keras.models.derived import build_model

    run_dir = tmp_path_factory.mktemp("zoo") / "run"
    arch = _tiny_architecture()
    arch.save(run_dir / "architecture.json")
    atomic.atomic_write_json(run_dir / "config.json", {
        "dataset": "digits", "epochs": 2, "ops": "aca", "order": 1, "cells": 3, "channels": 4,
        "nodes": 2, "seed": 7, "eval_cells": 3, "eval_channels": 6, "auxiliary": True,
        "drop_path": 0.1, "versions": {"aca_keras": "0.1.0", "keras": keras.__version__}})
    keras.utils.set_random_seed(5)
    model = build_model(arch, (8, 8, 1), 10, cells=3, channels=6, auxiliary=True,
                        drop_path=0.1, mean=[0.3], std=[0.4])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.save(run_dir / "trained.keras")
    atomic.atomic_write_json(run_dir / "train_config.json", {
        "dataset": "digits", "epochs": 3, "batch_size": 32, "learning_rate": 0.025,
        "seed": 9, "cutout": 4})
    atomic.atomic_write_json(run_dir / "train_result.json", {
        "test_accuracy": 0.4321, "epochs": 3, "params": 1, "seed": 9})
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    logits = np.asarray(model.inference_model()(images, training=False))
    return run_dir, images, logits


@pytest.fixture(scope="module")
def private_zoo(tiny_run, tmp_path_factory):
    """A private zoo with the tiny run published as ``tiny-aca`` (read-only for tests)."""
    run_dir, _, _ = tiny_run
    root = tmp_path_factory.mktemp("private") / "zoo"
    entry = zoo.publish(run_dir, "tiny-aca", zoo_dir=root, tags=["test"],
                        notes=["made by tests/test_zoo.py"], date="2024-01-02",
                        provenance={"search": {"hardware": "test machine",
                                               "wall_time_s": 1.5}})
    return root, entry


def _copy_zoo(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "zoo-copy"
    shutil.copytree(root, target)
    return target


# ------------------------------------------------------------------- the bundled entries


def test_bundled_zoo_is_found_and_lists_every_entry():
    assert zoo.bundled_zoo_dir().resolve() == ZOO.resolve()
    names = [e.name for e in zoo.list()]
    assert names == sorted(d.name for d in ENTRY_DIRS)
    assert set(SEED_NAMES) <= set(names) and ACA_NAME in names
    assert all(e.bundled for e in zoo.list())
    assert [e.name for e in zoo.list(has_weights=True)] == [ACA_NAME]
    assert set(e.name for e in zoo.list(dataset="cifar10")) == set(SEED_NAMES)
    assert [e.name for e in zoo.list(pattern="darts-*")] == ["darts-v1-cifar10",
                                                              "darts-v2-cifar10"]


@pytest.mark.parametrize("entry_dir", ENTRY_DIRS, ids=lambda p: p.name)
def test_every_entry_validates_against_the_schema(entry_dir):
    doc = json.loads((entry_dir / "entry.json").read_text())
    schema = json.loads((ZOO / "schema" / "entry-v1.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert _schema.validate(doc, schema) == []
    assert _entry.document_issues(doc, entry_dir.name) == []
    assert _entry.artifact_problems(zoo.info(entry_dir.name)) == []
    # the card is generated from the document and up to date
    assert (entry_dir / "README.md").read_text() == zoo.render_card(doc)
    for metric in doc["metrics"]:
        assert metric["how"] in ("paper", "measured") and metric["source"]


def test_index_is_up_to_date():
    on_disk = json.loads((ZOO / "index.json").read_text())
    assert on_disk == zoo.build_index(ZOO, write=False)
    assert [e["name"] for e in on_disk["entries"]] == sorted(d.name for d in ENTRY_DIRS)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_entries_hold_the_published_cells_and_figures(name):
    info = zoo.info(name)
    normal, reduce = PUBLISHED[name]
    published = Genotype(tuple(normal), (2, 3, 4, 5), tuple(reduce), (2, 3, 4, 5))
    arch = zoo.architecture(name)
    assert arch.to_genotype() == published
    assert arch == Architecture.from_genotype(published, 16, "darts",
                                              provenance=arch.provenance, name=arch.name)
    assert set(arch.normal.channels) == {16} and set(arch.reduce.channels) == {16}
    assert info.macro == {"cells": 20, "channels": 36, "nodes": 4, "stem_multiplier": 3,
                          "auxiliary": True, "auxiliary_weight": 0.4, "drop_path": 0.2}
    assert info.dataset == "cifar10" and info.input_shape == (32, 32, 3)
    assert not info.has_weights and info.artifacts == ()
    error, std, params_m, arxiv = PAPER_FIGURES[name]
    err = info.metric("test_error", "paper")
    assert (err.value, err.std, err.unit) == (error, std, "%")
    assert info.metric("params", "paper").value == params_m
    measured = info.metric("params", "measured").value
    assert abs(measured - params_m) < 0.2  # our build of the same network
    assert measured == round(info.params["inference_trainable"] / 1e6, 3)
    assert arxiv in info.document["citation"]["text"]
    assert info.document["provenance"]["search"]["by"] == "paper"


def test_aca_entry_is_trained_measured_and_fully_recorded():
    info = zoo.info(ACA_NAME)
    assert info.has_weights and info.artifact("onnx") is not None
    for artifact in info.artifacts:
        assert artifact.bytes < 6_000_000  # small artifacts
    arch = zoo.architecture(ACA_NAME)
    assert "skip_connect" not in arch.ops  # ACA searched without skip connections
    assert info.macro["cells"] == 8 and info.macro["channels"] == 16
    accuracy = info.metric("top1_accuracy", "measured")
    assert 10.0 < accuracy.value <= 100.0 and "held-out" in accuracy.split
    assert info.document["dataset"]["test_images"] == 932
    for stage in ("search", "training"):
        record = info.document["provenance"][stage]
        assert record["by"] == "aca_keras"
        assert record["wall_time_s"] > 0 and record["hardware"] and record["command"]
        assert isinstance(record["seed"], int) and record["versions"]["tensorflow"]
    assert any("4,660" in note for note in info.document["notes"])
    assert (ZOO / "tools" / "make_aca_cifar10_sample.py").is_file()


@pytest.mark.slow  # 31 s: every entry's ONNX parity; test_verify_* cover the checks
def test_cli_verify_passes_on_every_entry(capsys):
    """Every entry: schema, card, checksums, the model builds (or its weights load) with the
    recorded parameter counts, the ONNX artifact agrees with Keras; index up to date."""
    assert cli_main(["verify"]) == 0
    out = capsys.readouterr().out
    for entry_dir in ENTRY_DIRS:
        assert f"{entry_dir.name}: ok" in out
    assert out.count("ok   model:") == len(ENTRY_DIRS)
    assert "ok   onnx: model.onnx agrees with Keras" in out
    assert "index.json: up to date" in out
    assert f"{len(ENTRY_DIRS)}/{len(ENTRY_DIRS)} entries passed" in out


def test_load_of_an_architecture_only_entry_warns_and_builds_fresh_weights():
    with pytest.warns(zoo.NoWeightsWarning, match="freshly initialised"):
        model = zoo.load("darts-v2-cifar10")
    assert model.count_params() == zoo.info("darts-v2-cifar10").params["total"]
    assert model.class_names[0] == "airplane" and model.zoo_entry.name == "darts-v2-cifar10"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference = zoo.load("darts-v2-cifar10", weights=False, inference=True)
    assert len(inference.outputs) == 1


def test_aca_entry_loads_its_weights_and_exports_to_onnx_with_parity(tmp_path, capsys):
    import onnxruntime

    from aca_keras.exporting import read_metadata

    with warnings.catch_warnings():
        warnings.simplefilter("error", zoo.NoWeightsWarning)
        model = zoo.load(ACA_NAME)
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    fresh = zoo.load(ACA_NAME, weights=False, seed=3)
    trained_logits = np.asarray(model.inference_model()(images, training=False))
    assert not np.allclose(trained_logits, fresh.inference_model()(images, training=False))
    # one conversion (tf2onnx is the slow part): through the CLI, which delegates to
    # aca_keras.exporting.export; its file is then run here, independently of its own check
    written = tmp_path / "cli.onnx"
    assert cli_main(["export", ACA_NAME, "--output", str(written)]) == 0
    assert "verified" in capsys.readouterr().out and written.is_file()
    assert read_metadata(written)["class_names"] == list(model.class_names)
    session = onnxruntime.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(got, trained_logits, atol=1e-4, rtol=0)
    assert (got.argmax(1) == trained_logits.argmax(1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_entries_export_to_onnx_with_parity(name, tmp_path):
    from aca_keras.exporting import export

    model = zoo.load(name, weights=False, seed=0)
    result = export(model, tmp_path / f"{name}.onnx", format="onnx")
    assert result.verified and result.max_abs_diff < 1e-4


# ----------------------------------------------------------------------------- publish


def test_publish_a_run_directory_creates_a_valid_entry_with_its_card(tiny_run, private_zoo):
    run_dir, images, logits = tiny_run
    root, entry = private_zoo
    assert entry.path == root / "tiny-aca" and entry.has_weights and not entry.bundled
    doc = entry.document
    assert _entry.document_issues(doc, "tiny-aca") == []
    assert doc["macro"] == {"cells": 3, "channels": 6, "nodes": 2, "stem_multiplier": 3,
                            "auxiliary": True, "auxiliary_weight": 0.4, "drop_path": 0.1}
    assert doc["dataset"]["class_names"] == [str(i) for i in range(10)]
    assert doc["dataset"]["mean"] == pytest.approx([0.3])
    assert doc["architecture"]["normal"] == _tiny_architecture().to_dict()["normal"]
    accuracy = entry.metric("top1_accuracy", "measured")
    assert accuracy.value == 43.21 and accuracy.unit == "%"
    search = doc["provenance"]["search"]
    assert (search["by"], search["seed"], search["epochs"]) == ("aca_keras", 7, 2)
    assert (search["hardware"], search["wall_time_s"]) == ("test machine", 1.5)
    training = doc["provenance"]["training"]
    assert (training["by"], training["seed"], training["epochs"]) == ("aca_keras", 9, 3)
    card = (entry.path / "README.md").read_text()
    for text in ("## Metrics", "top1_accuracy", "43.21 %", "measured by aca_keras",
                 "## Provenance", "### Search", "### Training", "test machine",
                 "| seed | 7 |", "| seed | 9 |", "model.keras", doc["artifacts"][0]["sha256"],
                 "made by tests/test_zoo.py"):
        assert text in card, text
    index = json.loads((root / "index.json").read_text())
    assert [e["name"] for e in index["entries"]] == ["tiny-aca"]
    # the entry holds the run's weights, without optimizer state
    model = zoo.load("tiny-aca", zoo_dir=root)
    np.testing.assert_allclose(model.inference_model()(images, training=False), logits,
                               atol=1e-5)
    import keras

    stored = keras.saving.load_model(entry.artifact_path("keras"), compile=True)
    assert getattr(stored, "optimizer", None) is None
    report = zoo.verify("tiny-aca", zoo_dir=root)
    assert report.ok, report.format()


def test_publish_without_weights_and_refusals(tiny_run, tmp_path):
    run_dir, _, _ = tiny_run
    bare = tmp_path / "bare-run"
    bare.mkdir()
    for name in ("architecture.json", "config.json"):
        shutil.copy(run_dir / name, bare / name)
    with pytest.raises(ZooError, match="needs 'input_shape'"):
        zoo.publish(bare, "bare", zoo_dir=tmp_path / "z")
    entry = zoo.publish(bare, "bare", zoo_dir=tmp_path / "z",
                        dataset={"input_shape": [8, 8, 1], "num_classes": 10, "mean": [0.5],
                                 "std": [0.5]})
    assert not entry.has_weights
    assert entry.document["provenance"]["training"]["by"] == "none"
    assert entry.macro["cells"] == 3 and entry.macro["channels"] == 6  # from config.json
    with pytest.raises(ZooError, match="already exists"):
        zoo.publish(bare, "bare", zoo_dir=tmp_path / "z", dataset={"input_shape": [8, 8, 1]})
    with pytest.raises(ZooError, match="Invalid zoo entry name"):
        zoo.publish(bare, "Bad Name", zoo_dir=tmp_path / "z")
    with pytest.raises(ZooError, match="exports need trained weights"):
        zoo.publish(bare, "x", zoo_dir=tmp_path / "z", exports=["onnx"],
                    dataset={"input_shape": [8, 8, 1], "num_classes": 10, "mean": [0.5],
                             "std": [0.5]})
    with pytest.raises(ZooError, match="not a finished search run"):
        zoo.publish(tmp_path, "x", zoo_dir=tmp_path / "z")
    assert not list((tmp_path / "z").glob(".*"))  # no staging leftovers


# ------------------------------------------------------------------------- load-time checks


def test_a_tampered_artifact_is_refused(private_zoo, tmp_path):
    root = _copy_zoo(private_zoo[0], tmp_path)
    entry = zoo.info("tiny-aca", zoo_dir=root)
    weights = root / "tiny-aca" / "model.keras"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    actual = _entry.sha256_file(weights)
    with pytest.raises(ZooError) as excinfo:
        zoo.load("tiny-aca", zoo_dir=root)
    message = str(excinfo.value)
    assert str(weights) in message
    assert f"expected sha256 {entry.artifact('keras').sha256}" in message
    assert f"actual {actual}" in message
    report = zoo.verify("tiny-aca", zoo_dir=root)
    assert not report.ok and "fails its checksum" in report.failures[0]
    weights.unlink()
    with pytest.raises(ZooError, match="model.keras .keras. is missing"):
        zoo.load("tiny-aca", zoo_dir=root)


def test_a_wrong_parameter_count_is_refused(private_zoo, tmp_path):
    root = _copy_zoo(private_zoo[0], tmp_path)
    path = root / "tiny-aca" / "entry.json"
    doc = json.loads(path.read_text())
    doc["params"]["inference_trainable"] -= 1
    path.write_text(json.dumps(doc))
    with pytest.raises(ZooError, match="recorded parameter counts .*inference_trainable"):
        zoo.load("tiny-aca", zoo_dir=root)


MALFORMED = [
    (lambda d: d.pop("license"), r"/: missing required key\(s\) \['license'\]"),
    (lambda d: d.update(colour="red"), r"/colour: unknown key 'colour'"),
    (lambda d: d["macro"].update(cells="20"), r"/macro/cells: expected integer, got string"),
    (lambda d: d["metrics"][0].update(how="guess"), r"/metrics/0/how: 'guess' is not one of"),
    (lambda d: d["artifacts"][0].update(sha256="abc"), r"/artifacts/0/sha256: 'abc' does not"),
    (lambda d: d["provenance"]["search"].pop("seed"),
     r"/provenance/search: missing required key\(s\) \['seed'\]"),
    (lambda d: d.update(name="other"), r"/name: 'other' differs from the entry folder"),
    (lambda d: d["dataset"].update(class_names=["a"]), r"/dataset/class_names: 1 names"),
    (lambda d: d.update(schema_version=2), r"/schema_version: .*upgrade aca_keras"),
]


@pytest.mark.parametrize("mutate, pattern", MALFORMED)
def test_a_malformed_entry_json_is_refused_clearly(private_zoo, tmp_path, mutate, pattern):
    root = _copy_zoo(private_zoo[0], tmp_path)
    path = root / "tiny-aca" / "entry.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ZooError, match="Malformed zoo entry .*entry.json: " + pattern):
        zoo.info("tiny-aca", zoo_dir=root)
    with pytest.warns(UserWarning, match="Skipping a malformed zoo entry"):
        assert "tiny-aca" not in [e.name for e in zoo.list(zoo_dir=root)]


def test_invalid_json_and_a_bad_architecture_are_refused(private_zoo, tmp_path, capsys):
    root = _copy_zoo(private_zoo[0], tmp_path)
    path = root / "tiny-aca" / "entry.json"
    original = path.read_text()
    path.write_text(original.replace('"cells": 3', '"cells": NaN', 1))
    with pytest.raises(ZooError, match="not valid JSON: NaN"):
        zoo.load("tiny-aca", zoo_dir=root)
    assert cli_main(["verify", "tiny-aca", "--zoo-dir", str(root)]) == 1
    assert "FAIL schema" in capsys.readouterr().out
    doc = json.loads(original)
    doc["architecture"]["normal"]["edges"][0]["channels"] = 99  # k_e > reference channels
    path.write_text(json.dumps(doc))
    with pytest.raises(ZooError, match="invalid architecture: .*k_e = 99"):
        zoo.architecture("tiny-aca", zoo_dir=root)


def test_unknown_names_are_key_errors_with_suggestions():
    with pytest.raises(zoo.UnknownEntryError, match="Did you mean 'darts-v2-cifar10'"):
        zoo.load("darts-v2-cifar1")
    with pytest.raises(KeyError):
        zoo.info("nothing-like-it")
    with pytest.raises(ZooError):
        zoo.verify("nothing-like-it")


# ---------------------------------------------------------------------------- private zoos


def test_a_private_zoo_is_found_through_aca_zoo_path(private_zoo, tmp_path, monkeypatch):
    root, _ = private_zoo
    assert "tiny-aca" not in [e.name for e in zoo.list()]
    other = tmp_path / "empty-zoo"
    other.mkdir()
    monkeypatch.setenv("ACA_ZOO_PATH", os.pathsep.join([str(other), str(root)]))
    names = [e.name for e in zoo.list()]
    assert "tiny-aca" in names and set(SEED_NAMES) <= set(names)
    assert zoo.info("tiny-aca").zoo_dir == root
    assert [loc.origin for loc in zoo.search_path()][:2] == ["ACA_ZOO_PATH", "ACA_ZOO_PATH"]
    # a private entry shadows a bundled one of the same name
    shadow = _copy_zoo(root, tmp_path)
    (shadow / "tiny-aca").rename(shadow / "darts-v2-cifar10")
    doc_path = shadow / "darts-v2-cifar10" / "entry.json"
    doc = json.loads(doc_path.read_text())
    doc["name"] = "darts-v2-cifar10"
    doc_path.write_text(json.dumps(doc))
    monkeypatch.setenv("ACA_ZOO_PATH", str(shadow))
    assert zoo.info("darts-v2-cifar10").zoo_dir == shadow
    assert zoo.info("darts-v2-cifar10", zoo_dir=ZOO).bundled


def test_cli_list_and_info_show_the_entries(private_zoo, capsys):
    root, _ = private_zoo
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (*SEED_NAMES, ACA_NAME):
        assert name in out
    assert "test_error 2.76 ± 0.09 % (paper)" in out
    assert cli_main(["list", "--zoo-dir", str(root), "--with-weights", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == [ACA_NAME, "tiny-aca"]
    assert cli_main(["info", "pc-darts-cifar10"]) == 0
    out = capsys.readouterr().out
    assert "2.57 ± 0.07 %" in out and "paper's figure" in out and "1907.05737" in out
    assert cli_main(["info", "no-such-entry"]) == 1
    assert "No zoo entry named 'no-such-entry'" in capsys.readouterr().err


def test_cli_publish(tiny_run, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    assert cli_main(["publish", str(run_dir), "--name", "via-cli", "--zoo-dir",
                     str(tmp_path), "--note", "from the CLI"]) == 0
    assert "published via-cli 1.0.0" in capsys.readouterr().out
    assert zoo.info("via-cli", zoo_dir=tmp_path).document["notes"] == ["from the CLI"]
    assert cli_main(["publish", str(run_dir), "--name", "via-cli", "--zoo-dir",
                     str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err


# ------------------------------------------------------------------------------ structure


def test_importing_the_zoo_reads_nothing():
    code = ("import sys, aca_keras.zoo as z; from aca_keras.zoo import _registry as r; "
            "print(len(r._cache), 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    env = {**os.environ, "ACA_ZOO_PATH": "/nonexistent-zoo"}
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "False", "False"]


def test_schema_validation_is_strict():
    schema = {"$defs": {"n": {"type": "integer", "minimum": 1}},
              "type": "object", "additionalProperties": False, "required": ["a"],
              "properties": {"a": {"$ref": "#/$defs/n"},
                             "b": {"oneOf": [{"type": "string"}, {"type": "null"}]}}}
    assert _schema.validate({"a": 1, "b": None}, schema) == []
    assert [str(i) for i in _schema.validate({"a": 1.0}, schema)] == [
        "/a: expected integer, got number 1.0"]
    assert [str(i) for i in _schema.validate({"a": True}, schema)] == [
        "/a: expected integer, got boolean True"]
    issues = [str(i) for i in _schema.validate({"a": 0, "b": 3, "c": 1}, schema)]
    assert issues[0] == "/a: 0 is below the minimum 1"
    assert "/b: expected string, got integer 3 (matches none of the oneOf" in issues[1]
    assert issues[2].startswith("/c: unknown key 'c'")
    with pytest.raises(_schema.SchemaDocumentError, match="unsupported schema keyword"):
        _schema.validate({}, {"type": "object", "requried": ["a"]})  # a misspelt keyword
    with pytest.raises(_schema.SchemaDocumentError, match="names no definition"):
        _schema.validate({}, {"$ref": "#/$defs/missing"})


def test_pyproject_bundles_the_zoo():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts)
               for p in (REPO / "aca_keras").rglob("__init__.py")}
    assert on_disk <= packages, f"add {sorted(on_disk - packages)} to [tool.setuptools]"
    assert config["package-dir"]["aca_keras.zoo_data"] == "zoo"
    globs = config["package-data"]["aca_keras.zoo_data"]
    for path in ZOO.rglob("*"):
        rel = path.relative_to(ZOO).as_posix()
        if path.is_file() and not rel.startswith("tools/") and rel != ".gitattributes":
            assert any(re.fullmatch(g.replace(".", r"\.").replace("*", "[^/]*"), rel)
                       for g in globs), f"{rel} is not bundled by package-data"


@pytest.mark.slow
def test_a_wheel_carries_the_zoo(tmp_path):
    """Build a wheel from a copy of the sources and find every zoo file inside."""
    import zipfile

    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(src), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for entry_dir in ENTRY_DIRS:
        doc = json.loads((entry_dir / "entry.json").read_text())
        for rel in ["entry.json", "README.md", *(a["path"] for a in doc["artifacts"])]:
            assert f"aca_keras/zoo_data/{entry_dir.name}/{rel}" in names
    assert "aca_keras/zoo_data/schema/entry-v1.json" in names
    assert "aca_keras/zoo_data/index.json" in names
    assert "aca_keras/zoo/__init__.py" in names
    assert not any("zoo_data/tools" in n for n in names)


def test_entry_dataclasses_round_trip():
    info = zoo.info("darts-v2-cifar10")
    doc = copy.deepcopy(info.document)
    assert [m.to_dict() for m in info.metrics] == doc["metrics"]
    assert info.build_kwargs()["mean"] == tuple(doc["dataset"]["mean"])
    assert info.metric("test_error").formatted() == "2.76 ± 0.09 %"
    assert zoo.info("darts-v1-cifar10").metric("test_error").formatted() == "3.00 ± 0.14 %"
