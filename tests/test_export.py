"""Export for deployment: ONNX, SavedModel and TFLite parity, metadata, CLI, deploy scripts,
errors.

Exports are slow (seconds each), so the exported files are made once per module and shared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import aca_keras.exporting as exporting
from aca_keras import _internals as internals
from aca_keras import zoo
from aca_keras.cli.export import main as cli_main
from aca_keras.data import CIFAR10_CLASS_NAMES
from aca_keras.errors import ExportError, RunDirError
from aca_keras.exporting import verify as export_verify
from aca_keras.layers import ops
from aca_keras.models.derived import build_model
from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("onnx", "savedmodel", "tflite")
SUFFIX = {"onnx": "model.onnx", "savedmodel": "saved_model", "tflite": "model.tflite"}
TOL = 1e-4

# (seed, input size, channels, op set): three random architectures, one with skip_connect.
ARCH_CASES = [(0, 16, 4, "aca"), (1, 8, 6, "darts"), (2, 16, 8, "aca")]


# ---------------------------------------------------------------------------- builders


def random_architecture(seed: int, op_set: str, reference: int = 4, nodes: int = 2
                        ) -> Architecture:
    """A random valid architecture; every cell has a k_e = 0 and a k_e = C edge."""
    rng = np.random.default_rng(seed)
    names = ops.resolve_op_set(op_set)
    choices = [op for op in names if op != "none"]

    def cell() -> CellSpec:
        edges = []
        for node in range(nodes):
            for i in rng.choice(node + 2, size=2, replace=False):
                edges.append(EdgeSpec(node, int(i), str(rng.choice(choices)),
                                      int(rng.integers(0, reference + 1))))
        edges[0] = EdgeSpec(edges[0].node, edges[0].input, edges[0].op, 0)
        edges[1] = EdgeSpec(edges[1].node, edges[1].input, edges[1].op, reference)
        return CellSpec(tuple(edges), tuple(range(2, nodes + 2)))

    return Architecture(cell(), cell(), reference, names)


def randomize_batchnorm(model: keras.Model, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so that inference-mode BN is really checked."""
    rng = np.random.default_rng(seed)
    for layer in internals.sublayers(model)[1:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for w in layer.weights:
                shape = tuple(w.shape)
                if "variance" in w.path:
                    values.append(rng.uniform(0.5, 2.0, shape))
                elif "gamma" in w.path:
                    values.append(rng.uniform(0.5, 1.5, shape))
                else:
                    values.append(rng.normal(0.0, 0.3, shape))
            layer.set_weights([v.astype("float32") for v in values])


def derived_model(seed: int, size: int, channels: int, op_set: str) -> keras.Model:
    model = build_model(random_architecture(seed, op_set), (size, size, 3), 10, cells=3,
                        channels=channels, auxiliary=True, drop_path=0.2,
                        mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    randomize_batchnorm(model, seed)
    return model


def plain_model() -> keras.Model:
    """A plain functional Keras model made of the same layer kinds (not an aca_keras model)."""
    images = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Rescaling(1 / 255)(images)
    x = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.06, 0.05, 0.07])(x)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    a = ops.create_op("sep_conv_3x3", 4, 2, 2)(x)
    b = ops.create_op("max_pool_3x3", 4, 2, 2)(x)
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(5, name="logits")(x))


def images(n: int, size: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def run_file(fmt: str, path: Path, x: np.ndarray, output: str = "logits") -> np.ndarray:
    """Run an exported file in its own runtime, independently of aca_keras.exporting."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([output], {"images": x})[0]
    import tensorflow as tf

    if fmt == "savedmodel":
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return serve(images=tf.constant(x))[output].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    return interpreter.get_signature_runner("serving_default")(images=x)[output]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Every random architecture exported to every format: (model, {format: result})."""
    root = tmp_path_factory.mktemp("exports")
    out = []
    for k, (seed, size, channels, op_set) in enumerate(ARCH_CASES):
        keras.utils.set_random_seed(seed)
        model = derived_model(seed, size, channels, op_set)
        results = {}
        for fmt in FORMATS:
            # one export also verifies on "real" sample images (smooth gradients)
            samples = None
            if k == 2 and fmt == "tflite":
                ramp = np.linspace(0, 255, size, dtype="float32")
                samples = np.stack([np.broadcast_to(ramp[:, None, None], (size, size, 3)),
                                    np.broadcast_to(ramp[None, :, None], (size, size, 3))])
            results[fmt] = exporting.export(model, root / f"arch{k}" / SUFFIX[fmt], fmt,
                                            sample_inputs=samples)
        out.append((model, results))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as written by aca_keras.search (model.keras, config.json)."""
    path = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(3)
    model = derived_model(3, 8, 4, "aca")
    model.save(path / "model.keras")
    model.architecture.save(path / "architecture.json")
    (path / "config.json").write_text(json.dumps({"dataset": "cifar10", "cells": 3}))
    return path, model


@pytest.fixture(scope="module")
def cli_export(run_dir):
    """``aca-export RUN_DIR --batch-size 1 --probabilities`` (default output path)."""
    path, _ = run_dir
    code = cli_main([str(path), "--format", "onnx", "--batch-size", "1", "--probabilities"])
    return code, path / "export" / "model.onnx"


# ------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", range(len(ARCH_CASES)))
def test_export_matches_keras_with_a_dynamic_batch(cases, case, fmt):
    model, results = cases[case]
    result = results[fmt]
    assert result.verified and result.format == fmt and result.path.exists()
    assert result.max_abs_diff <= TOL and result.top1_agreement == 1.0
    assert result.checked_images == (7 if (case, fmt) == (2, "tflite") else 5)
    size = model.image_shape[0]
    for n in (1, 5):  # the same file runs any batch size
        x = images(n, size, seed=100 + n)
        logits, aux = model(x, training=False)  # the full model (aux head, drop path) agrees
        got = run_file(fmt, result.path, x)
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(logits), atol=TOL, rtol=0)
        assert np.ptp(got) > 1e-3  # not a constant output


def test_architectures_cover_the_edge_cases(cases):
    for model, _ in cases:
        arch = model.architecture
        for cell in (arch.normal, arch.reduce):
            assert 0 in cell.channels and arch.reference_channels in cell.channels
    assert any(e.op == "skip_connect" for m, _ in cases for e in m.architecture.normal.edges
               + m.architecture.reduce.edges)


# ---------------------------------------------------------------------------- metadata


def test_onnx_graph_names_and_metadata(cases):
    import onnx

    model, results = cases[0]
    path = results["onnx"].path
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [16, 16, 3]
    props = {p.key: p.value for p in proto.metadata_props}
    import aca_keras

    assert props["aca_keras.version"] == aca_keras.__version__
    assert props["aca_keras.output"] == "logits"
    assert json.loads(props["aca_keras.input_shape"]) == [16, 16, 3]
    assert Architecture.from_json(props["aca_keras.architecture"]) == model.architecture
    meta = exporting.read_metadata(path)
    assert meta == results["onnx"].metadata
    assert meta["architecture"] == model.architecture.to_dict()
    assert meta["model_config"]["cells"] == 3 and meta["onnx_opset"] >= 13
    assert meta["batch_size"] is None and meta["num_classes"] == 10


def test_savedmodel_and_tflite_signatures_and_metadata(cases):
    import tensorflow as tf

    model, results = cases[1]
    saved = results["savedmodel"].path
    loaded = tf.saved_model.load(str(saved))
    asset = Path(loaded.aca_keras_metadata.asset_path.numpy().decode())
    assert asset == saved / "assets" / "aca_keras.json"
    assert json.loads(asset.read_text())["architecture"] == model.architecture.to_dict()
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["images"]
    assert list(serve.structured_outputs) == ["logits"]
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, 8, 8, 3]

    tflite = results["tflite"].path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(tflite))
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["logits"]}}
    meta = exporting.read_metadata(tflite)
    assert meta["export_format"] == "tflite" and meta["input_shape"] == [8, 8, 3]
    assert Architecture.from_dict(meta["architecture"]) == model.architecture
    assert {p.name for p in tflite.parent.iterdir()} == {"model.tflite", "saved_model",
                                                         "model.onnx"}  # no leftovers


# --------------------------------------------------------------------------------- CLI


def test_cli_fixed_batch_probabilities_from_a_run_dir(run_dir, cli_export, capsys):
    import onnxruntime as ort

    code, path = cli_export
    assert code == 0 and path.is_file()
    _, model = run_dir
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 8, 8, 3]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    x = images(1, 8, seed=5)
    probs = session.run(["probabilities"], {"images": x})[0]
    expected = keras.ops.convert_to_numpy(
        keras.ops.softmax(model.inference_model()(x, training=False)))
    np.testing.assert_allclose(probs, expected, atol=TOL, rtol=0)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(Exception):  # noqa: B017  (fixed batch: 2 images are refused)
        session.run(["probabilities"], {"images": images(2, 8)})
    meta = exporting.read_metadata(path)
    assert meta["class_names"] == list(CIFAR10_CLASS_NAMES) and meta["batch_size"] == 1
    assert meta["output"] == "probabilities"


def test_cli_prints_path_difference_and_agreement(run_dir, tmp_path, capsys):
    path, _ = run_dir
    target = tmp_path / "m.tflite"
    assert cli_main([str(path / "model.keras"), "--format", "tflite", "-o", str(target),
                     "--class-names", "a,b,c,d,e,f,g,h,i,j"]) == 0
    out = capsys.readouterr().out
    assert f"exported: {target}" in out
    assert "max abs diff:" in out and "top-1 agreement: 100.0%" in out
    assert exporting.read_metadata(target)["class_names"][:3] == ["a", "b", "c"]


def test_cli_no_verify(run_dir, tmp_path, capsys):
    target = tmp_path / "sm"
    assert cli_main([str(run_dir[0]), "--format", "savedmodel", "-o", str(target),
                     "--no-verify"]) == 0
    assert "not verified" in capsys.readouterr().out
    assert (target / "saved_model.pb").is_file()
    assert exporting.read_metadata(target)["export_format"] == "savedmodel"


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], "No file or directory"),
    (["{corrupt}"], "not a valid .keras file"),
    (["{run}", "--format", "pt"], "valid formats: onnx, savedmodel, tflite"),
    (["{run}", "--format", "savedmodel", "--opset", "13"], "opset applies to ONNX"),
    (["{run}", "--output", "{file}/model.onnx"], "Cannot write the export"),
])
def test_cli_errors_are_one_clear_line(run_dir, tmp_path, capsys, argv, message):
    corrupt = tmp_path / "bad.keras"
    corrupt.write_bytes(os.urandom(2000))
    (tmp_path / "afile").write_text("x")
    subs = {"missing": str(tmp_path / "nope.keras"), "corrupt": str(corrupt),
            "run": str(run_dir[0]), "file": str(tmp_path / "afile")}
    assert cli_main([a.format(**subs) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("aca-export: error:") and message in err
    assert "\n" not in err and "Traceback" not in err


# ---------------------------------------------------------------------- deploy scripts


def _write_pngs(folder: Path, size: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(11)
    paths = []
    for i in range(3):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    big = folder / "big.png"  # another size: resized by the scripts
    Image.fromarray(rng.integers(0, 256, (size * 3, size * 2, 3), dtype=np.uint8)).save(big)
    return paths + [big]


def _script(name: str, *args: str, block_tf: bool = False) -> dict:
    script = str(REPO / "export" / name)
    if block_tf:  # prove the ONNX script needs neither TensorFlow nor Keras
        code = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None;"
                f" sys.argv = {[script, *args]!r}; runpy.run_path({script!r}, run_name='__main__')")
        argv = [sys.executable, "-c", code]
    else:
        argv = [sys.executable, script, *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_deploy_scripts_classify_png_files(cases, run_dir, cli_export, tmp_path):
    from PIL import Image

    # ONNX: the fixed-batch probabilities export with CIFAR-10 class names
    _, model = run_dir
    pngs = _write_pngs(tmp_path, 8)
    onnx_out = _script("classify_onnx.py", str(cli_export[1]), *map(str, pngs), "--json",
                       "--top-k", "3", block_tf=True)
    x = np.stack([np.asarray(Image.open(p), dtype="float32") for p in pngs[:3]])
    probs = keras.ops.convert_to_numpy(
        keras.ops.softmax(model.inference_model()(x, training=False)))
    for r, p, path in zip(onnx_out["results"], probs, pngs):
        assert r["image"] == str(path) and len(r["top_k"]) == 3
        best = int(np.argmax(p))
        assert r["top_k"][0]["class_index"] == best
        assert r["top_k"][0]["label"] == CIFAR10_CLASS_NAMES[best]
        assert r["top_k"][0]["probability"] == pytest.approx(float(p[best]), abs=TOL)
    assert len(onnx_out["results"]) == 4  # the resized image too

    # SavedModel: dynamic batch, logits output (softmax in the script), no class names
    model16, results = cases[0]
    (tmp_path / "s").mkdir()
    pngs16 = _write_pngs(tmp_path / "s", 16)
    sm_out = _script("classify_savedmodel.py", str(results["savedmodel"].path),
                     *map(str, pngs16), "--json", "--top-k", "10")
    x16 = np.stack([np.asarray(Image.open(p), dtype="float32") for p in pngs16[:3]])
    probs16 = keras.ops.convert_to_numpy(
        keras.ops.softmax(model16.inference_model()(x16, training=False)))
    for r, p in zip(sm_out["results"], probs16):
        got = np.zeros(10)
        for t in r["top_k"]:
            got[t["class_index"]] = t["probability"]
            assert t["label"] == str(t["class_index"])
        np.testing.assert_allclose(got, p, atol=TOL)
    assert sum(t["probability"] for t in sm_out["results"][3]["top_k"]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ errors


def test_unknown_format_and_bad_arguments(cases, tmp_path):
    model = cases[0][0]
    with pytest.raises(ValueError, match="valid formats: onnx, savedmodel, tflite"):
        exporting.export(model, "x.pt", "torchscript")
    with pytest.raises(ValueError, match="valid outputs: logits, probabilities"):
        exporting.export(model, "x.onnx", output="softmax")
    with pytest.raises(ValueError, match="batch_size"):
        exporting.export(model, "x.onnx", batch_size=0)
    with pytest.raises(ValueError, match="needs an output path"):
        exporting.export(model)
    with pytest.raises(ValueError, match="sample_inputs"):
        exporting.export(model, tmp_path / "x.onnx", sample_inputs=np.zeros((2, 4)))
    assert list(tmp_path.iterdir()) == []


def test_missing_sources(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="No file or directory"):
        exporting.export(tmp_path / "missing.keras", tmp_path / "m.onnx")
    with pytest.raises(RunDirError, match="neither trained.keras nor model.keras"):
        exporting.export(tmp_path, tmp_path / "m.onnx")
    # exporting sits below the zoo: a zoo name is refused, with the call that does it
    with pytest.raises(FileNotFoundError,
                       match=r"load it first: aca_keras.export\(aca_keras.zoo.load\("
                             r"'darts-v2-cifar10'\)"):
        exporting.export("darts-v2-cifar10", tmp_path / "m.onnx")
    # the command resolves zoo names, and says when a name is neither a path nor an entry
    assert cli_main(["no-such-entry", "--output", str(tmp_path / "m.onnx")]) == 1
    assert "nor a zoo entry" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_zoo_name_exports(tmp_path, monkeypatch, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # architecture-only entries warn about their weights
        result = exporting.export(zoo.load("darts-v2-cifar10"), tmp_path / "zoo.onnx")
    assert result.max_abs_diff <= TOL
    assert result.metadata["class_names"] == list(CIFAR10_CLASS_NAMES)
    assert result.metadata["source"] == "zoo:darts-v2-cifar10"
    # aca-export NAME: the entry, written as NAME.onnx in the current directory
    monkeypatch.chdir(tmp_path)
    assert cli_main(["darts-v2-cifar10"]) == 0, capsys.readouterr().err
    written = tmp_path / "darts-v2-cifar10.onnx"
    assert f"exported: {written}" in capsys.readouterr().out
    assert exporting.read_metadata(written)["source"] == "zoo:darts-v2-cifar10"


def test_corrupt_keras_file(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ExportError, match="not a valid .keras file"):
        exporting.export(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_plain_keras_model_exports_with_a_warning(tmp_path):
    model = plain_model()
    samples = images(3, 8, seed=1)  # a fixed batch of 2: the last sample batch is padded
    with pytest.warns(UserWarning, match="not an aca_keras model"):
        result = exporting.export(model, tmp_path / "plain.onnx", batch_size=2,
                                  sample_inputs=samples)
    assert result.max_abs_diff <= TOL and result.metadata["architecture"] is None
    assert result.checked_images == 2 + 3
    x = images(2, 8)
    np.testing.assert_allclose(run_file("onnx", result.path, x),
                               keras.ops.convert_to_numpy(model(x)), atol=TOL)


def test_mixed_precision_model_exports_a_float32_clone(tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = derived_model(4, 8, 4, "aca")
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.dtype_policy.name == "mixed_float16"
    with pytest.warns(UserWarning, match="float32 clone"):
        result = exporting.export(model, tmp_path / "mixed.onnx")
    assert keras.config.dtype_policy().name == previous.name  # the global policy is restored
    assert result.metadata["original_dtype_policy"] == "mixed_float16"
    assert result.max_abs_diff <= TOL
    x = images(2, 8)
    original = keras.ops.convert_to_numpy(model.inference_model()(x, training=False))
    got = run_file("onnx", result.path, x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, original.astype("float32"), atol=0.05)  # fp16 rounding


def test_unwritable_output_paths(cases, tmp_path):
    model = cases[0][0]
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="Cannot write the export"):
        exporting.export(model, blocker / "sub" / "m.onnx")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: a read-only directory is still writable")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ExportError, match="Cannot write the export"):
            exporting.export(model, locked / "m.onnx")
    finally:
        locked.chmod(0o755)


def test_existing_output_needs_overwrite(cases, tmp_path):
    model, results = cases[0]
    target = tmp_path / "m.onnx"
    shutil.copyfile(results["onnx"].path, target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        exporting.export(model, target)


@pytest.mark.parametrize("fmt", ["onnx", "savedmodel"])
def test_failed_verification_leaves_no_file(cases, tmp_path, monkeypatch, fmt):
    model, results = cases[0]
    real = export_verify.run_exported

    def perturbed(fmt_, path, batches, output):
        return [y + 1e-3 for y in real(fmt_, path, batches, output)]

    monkeypatch.setattr(export_verify, "run_exported", perturbed)
    fresh = tmp_path / "fresh"
    with pytest.raises(ExportError, match="does not match Keras"):
        exporting.export(model, fresh / SUFFIX[fmt], fmt)
    assert list(fresh.iterdir()) == []  # no partial or temporary file left

    if fmt == "onnx":  # overwrite=True keeps the old, valid file when the new one fails
        old = tmp_path / "old" / "m.onnx"
        old.parent.mkdir()
        shutil.copyfile(results["onnx"].path, old)
        before = old.read_bytes()
        with pytest.raises(ExportError):
            exporting.export(model, old, overwrite=True)
        assert old.read_bytes() == before and sorted(old.parent.iterdir()) == [old]
