"""A new user's first hour (issue 16): small supernets, bad image folders, reruns after a
failure, zoo shadowing, classify scripts, untrained exports, CLI messages, progress lines,
quiet start-up, and zoo metrics that can be re-measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _tiny_step(cells: int, nodes: int, **compile_kwargs):
    """One eager bi-level step of a tiny supernet; returns (network, alphas before, after,
    loss)."""
    import keras

    from aca_keras.models.supernet import SearchNetwork

    rng = np.random.default_rng(cells * 10 + nodes)
    x = rng.uniform(0, 255, (8, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 8).astype("int32")
    net = SearchNetwork((8, 8, 1), 3, cells=cells, channels=4, nodes=nodes)
    net.compile(keras.optimizers.SGD(0.1), keras.optimizers.Adam(0.01), **compile_kwargs)
    before = {k: np.array(v) for k, v in net.alphas().items()}
    logs = net.train_step(((x[:4], y[:4]), (x[4:], y[4:])))
    after = net.alphas()
    return net, before, after, float(logs["loss"])


SMALL = [(c, n) for c in (1, 2, 3, 4) for n in (1, 2, 3)]
FAST = [(1, 1), (2, 2), (3, 1), (4, 1)]


def _check_small_step(cells, nodes, **compile_kwargs):
    from aca_keras.space.topology import reduction_indices

    net, before, after, loss = _tiny_step(cells, nodes, **compile_kwargs)
    assert np.isfinite(loss)
    has_normal = len(reduction_indices(cells)) < cells
    # a cell type the supernet lacks: its alphas get no gradient and stay exactly put
    assert np.array_equal(before["normal"], after["normal"]) is (not has_normal)
    assert not np.array_equal(before["reduce"], after["reduce"])


@pytest.mark.parametrize("cells,nodes", FAST)
def test_small_cells_and_nodes_train(cells, nodes):
    _check_small_step(cells, nodes)


@pytest.mark.slow
@pytest.mark.parametrize("cells,nodes", [s for s in SMALL if s not in FAST])
def test_every_small_cells_nodes_combination_trains(cells, nodes):
    _check_small_step(cells, nodes)


@pytest.mark.parametrize("kwargs", [dict(order=2), dict(beta_decay=True)])
def test_two_reduction_cells_second_order_and_beta_decay(kwargs):
    _check_small_step(2, 2, **kwargs)


# ----------------------------------------------------------------------------- helpers

REPO = Path(__file__).resolve().parents[1]


def _write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    """96 training and 40 test digits (8x8 grey) in ``tiny/train.npz``."""
    from aca_keras import data

    bundle = data.load("digits")
    path = tmp_path_factory.mktemp("data") / "tiny" / "train.npz"
    path.parent.mkdir()
    np.savez(path, x=bundle.x_train[:96], y=bundle.y_train[:96], x_test=bundle.x_test[:40],
             y_test=bundle.y_test[:40])
    return path


def _cli(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``aca_keras.cli.<module>.main(argv)`` in this process; (status, stdout, stderr)."""
    import importlib

    capsys.readouterr()
    code = importlib.import_module(f"aca_keras.cli.{module}").main(argv)
    out, err = capsys.readouterr()
    return code, out, err


SEARCH_ARGS = ["--epochs", "1", "--channels", "4", "--nodes", "2", "--batch-size", "16",
               "--eval-cells", "2", "--eval-channels", "4", "--score-batches", "1",
               "--no-auxiliary", "--seed", "1", "--hessian-every", "0"]


# --------------------------------------------------------- 2. image folders with few classes


def test_image_folder_with_one_class_is_refused(tmp_path, capsys):
    from aca_keras import data
    from aca_keras.errors import DataError

    rng = np.random.default_rng(0)
    for i in range(3):
        _write_png(tmp_path / "pets" / "cat" / f"{i}.png",
                   rng.integers(0, 256, (8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"1 class sub-folder \('cat'\).*at least two classes"):
        data.load(tmp_path / "pets")
    # the command line refuses it before it writes a run directory
    code, _, err = _cli("search", ["--dataset", str(tmp_path / "pets"), "--run-dir",
                                   str(tmp_path / "run")], capsys)
    assert code == 1 and "at least two classes" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_image_folder_warns_about_small_classes_and_skipped_files(tmp_path):
    from aca_keras import data

    rng = np.random.default_rng(0)
    for cls, count in (("cat", 12), ("dog", 3)):
        for i in range(count):
            _write_png(tmp_path / "pets" / cls / f"{i}.png",
                       rng.integers(0, 256, (8, 8), dtype=np.uint8))
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "pets" / "dog" / "labels.csv").write_text("not an image")
    (tmp_path / "pets" / "dog" / ".DS_Store").write_text("hidden: not counted")
    with pytest.warns(UserWarning) as caught:
        bundle = data.load(tmp_path / "pets")
    messages = [str(w.message) for w in caught]
    assert any("Skipped 2 file(s)" in m and "notes.txt" in m for m in messages), messages
    assert any("dog (3)" in m and "fewer than 10 images" in m for m in messages), messages
    assert not any("cat (" in m for m in messages)
    assert bundle.num_train == 15 and bundle.class_names == ("cat", "dog")


# --------------------------------------------------------------------- 9. data set names


def test_generic_npz_file_is_named_after_its_folder(tmp_path):
    from aca_keras import data

    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    for path in (tmp_path / "cifar10-sample" / "train.npz", tmp_path / "mine" / "faces.npz"):
        path.parent.mkdir()
        np.savez(path, x=x, y=y)
    assert data.load(tmp_path / "cifar10-sample" / "train.npz").name == "cifar10-sample"
    assert data.load(tmp_path / "mine" / "faces.npz").name == "faces"


# ------------------------------------------------------------------- 9. --help, progress


def test_search_help_states_each_default_once():
    from aca_keras.cli.search import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert ("search epochs; with --resume, the run's own count unless a larger one is given "
            "(default: 50)") in text
    assert "supernet cells (default: 8)" in text


def test_progress_lines_every_few_percent():
    import io

    from aca_keras.callbacks import ProgressLogger, format_duration

    stream = io.StringIO()
    logger = ProgressLogger(percent=25, stream=stream)
    logger.set_params({"epochs": 3, "steps": 8})
    logger.on_epoch_begin(1)
    for batch in range(8):
        logger.on_train_batch_end(batch, {"loss": 1.5 - batch / 10, "accuracy": 0.5})
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "epoch 2/3 step 2/8", "epoch 2/3 step 4/8", "epoch 2/3 step 6/8", "epoch 2/3 step 8/8"]
    assert "loss 1.4000 accuracy 0.5000" in lines[0] and "steps/s, ETA" in lines[0]
    assert format_duration(207) == "3m27s" and format_duration(7500) == "2h05m"


# --------------------------------------------------------- 3, 7, 9: the command line speaks CLI


def test_failed_run_leaves_no_run_directory_and_errors_name_flags(tmp_path, capsys):
    run = tmp_path / "run"
    for _ in range(2):  # the second attempt is not refused as "already holds a run"
        code, _, err = _cli("search", ["--dataset", str(tmp_path / "missing.npz"),
                                       "--run-dir", str(run)], capsys)
        assert code == 1 and "No such file or directory" in err
        assert "already holds a run" not in err
        assert not run.exists()
    code, _, err = _cli("search", ["--dataset", "cifar10", "--no-download", "--run-dir",
                                   str(run)], capsys)
    assert code == 1 and "--data-dir" in err and "--no-download" in err, err
    assert "--dataset digits" in err
    for python in ("data_dir=", "download=False", "load(", "resume=True"):
        assert python not in err.replace("data_dir=...", ""), err
    assert not run.exists()
    code, _, err = _cli("search", ["--cells", "0", "--run-dir", str(run)], capsys)
    assert code == 1 and err.startswith("aca-search: error: --cells must be a positive"), err


def test_translation_keeps_python_calls_and_maps_flags():
    from aca_keras.cli import cli_message
    from aca_keras.cli.search import build_parser
    from aca_keras.cli.train import build_parser as train_parser

    parser = build_parser()
    text = cli_message("x already holds a run. Resume it with resume=True (CLI: --resume), or "
                       "choose another run directory.", parser,
                       (("resume=True (CLI: --resume)", "--resume RUN_DIR"),))
    assert text == ("x already holds a run. Resume it with --resume RUN_DIR, or choose another "
                    "run directory.")
    text = cli_message("pass data_dir= (tfds.builder('c', data_dir=...).download()) and "
                       "train_fraction must be", parser)
    assert text == ("pass --data-dir (tfds.builder('c', data_dir=...).download()) and "
                    "--train-fraction must be")
    text = cli_message("Cannot resume r with epochs=10, batch_size=96: the run used "
                       "epochs=600.", train_parser())
    assert text == "Cannot resume r with --epochs 10, --batch-size 96: the run used --epochs 600."


def test_cli_start_up_is_quiet(tmp_path):
    home = tmp_path / "home"
    (home / "tensorflow_datasets" / "cifar10" / "3.0.2").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TFDS_DATA_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "aca_keras.cli.search", "--dataset", "cifar10",
         "--no-download", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aca-search: error: Cannot load data set"), \
        proc.stderr
    assert proc.stdout == ""


# ------------------------------- the command line end to end: search, export, train, zoo


@pytest.fixture(scope="module")
def searched(tiny_npz, tmp_path_factory):
    """``aca-search --cells 2`` on the tiny digits, output captured (not a terminal)."""
    import contextlib
    import io

    from aca_keras.cli import search as search_cli

    run = tmp_path_factory.mktemp("cli") / "run"
    out, err = io.StringIO(), io.StringIO()
    old = os.umask(0o022)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = search_cli.main(["--dataset", str(tiny_npz), "--cells", "2",
                                    "--run-dir", str(run), *SEARCH_ARGS])
    finally:
        os.umask(old)
    return run, code, out.getvalue(), err.getvalue()


def test_cli_search_with_two_cells_logs_progress_and_writes_a_consistent_run(searched):
    run, code, out, err = searched
    assert code == 0, err
    assert "every supernet cell is a reduction cell" in out
    progress = [line for line in out.splitlines() if line.startswith("epoch 1/1 step ")]
    assert progress and progress[-1].startswith("epoch 1/1 step 3/3 (100%) loss ")
    assert "alpha_accuracy" in progress[-1] and "steps/s" in progress[-1]
    assert "aca_keras search: tiny (8, 8, 1) x96" in out  # named after its folder, not "train"
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[1].split(",")[0] == "1"  # epochs counted from 1, as train_history.csv
    # architecture.json is written by architecture.py's own atomic save (see the report)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir()
             if p.is_file() and p.name != "architecture.json"}
    assert set(modes.values()) == {0o644}, modes


def test_corrupt_checkpoint_says_how_to_restart(searched, tiny_npz, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(searched[0], run)
    (run / "checkpoint.npz").write_bytes(b"not a zip file")
    code, _, err = _cli("search", ["--resume", str(run), "--epochs", "2"], capsys)
    assert code == 1, err
    assert f"delete the run directory {run} and start a new search" in err
    assert "--run-dir, not as a resume" in err and "run_dir" not in err


@pytest.fixture(scope="module")
def untrained_export(searched, tmp_path_factory):
    import contextlib
    import io

    from aca_keras.cli import export as export_cli

    run = searched[0]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export_cli.main([str(run), "--format", "onnx"])
    return code, out.getvalue(), err.getvalue(), run / "export" / "model.onnx"


def test_export_of_an_untrained_run_warns(untrained_export):
    code, out, err, path = untrained_export
    assert code == 0 and path.is_file(), err
    assert "aca-export: warning:" in err and "has no trained.keras" in err
    assert "untrained model.keras" in err and "aca-train RUN_DIR" in err


def _classify(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(REPO / "export" / script), *args],
                          capture_output=True, text=True, timeout=180, env=env)


def test_classify_onnx_refuses_channel_mismatch_and_reports_resizes(untrained_export,
                                                                    tmp_path):
    onnx = str(untrained_export[3])
    rng = np.random.default_rng(0)
    photo = _write_png(tmp_path / "photo.png", rng.integers(0, 256, (32, 32, 3), np.uint8))
    grey = _write_png(tmp_path / "grey.png", rng.integers(0, 256, (16, 16), np.uint8))
    refused = _classify("classify_onnx.py", onnx, str(photo))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "a colour image (RGB), the model takes 1 channel; pass --convert" in refused.stderr
    done = _classify("classify_onnx.py", onnx, str(photo), str(grey), "--convert", "--json")
    assert done.returncode == 0, done.stderr
    assert f"{photo}: converted from RGB to L" in done.stderr
    assert f"{photo}: resized from 32x32 to 8x8" in done.stderr
    assert f"{grey}: resized from 16x16 to 8x8" in done.stderr
    results = json.loads(done.stdout)["results"]
    assert len(results[0]["preprocessing"]) == 2 and len(results[1]["preprocessing"]) == 1
    missing = _classify("classify_onnx.py", str(tmp_path / "nope.onnx"), str(grey))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == (f"classify_onnx: error: no such model file: "
                                      f"{tmp_path / 'nope.onnx'} (give the .onnx file written "
                                      "by aca-export)")


def test_classify_savedmodel_missing_model_is_one_line(tmp_path):
    grey = _write_png(tmp_path / "grey.png", np.zeros((8, 8), np.uint8))
    missing = _classify("classify_savedmodel.py", str(tmp_path / "nope"), str(grey))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "no such SavedModel directory" in missing.stderr


@pytest.fixture(scope="module")
def trained(searched, tiny_npz):
    import contextlib
    import io

    from aca_keras.cli import train as train_cli

    run = searched[0]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_cli.main([str(run), "--epochs", "1", "--batch-size", "16",
                               "--cutout", "0"])
    return run, code, out.getvalue(), err.getvalue()


def test_cli_train_logs_progress_and_names_its_flags(trained, capsys):
    run, code, out, err = trained
    assert code == 0, err
    progress = [line for line in out.splitlines() if line.startswith("epoch 1/1 step ")]
    assert progress and progress[-1].startswith("epoch 1/1 step 6/6 (100%) loss ")
    assert "accuracy" in progress[-1] and "ETA" in progress[-1]
    assert (run / "train_history.csv").read_text().splitlines()[1].startswith("1,")
    code, _, err = _cli("train", [str(run), "--epochs", "1", "--batch-size", "16"], capsys)
    assert code == 1 and "Resume it with --resume, or choose another" in err, err
    assert "resume=True" not in err


@pytest.fixture(scope="module")
def published(trained, tmp_path_factory):
    import contextlib
    import io

    from aca_keras.cli import zoo as zoo_cli

    run = trained[0]
    zoo_dir = tmp_path_factory.mktemp("zoo")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = zoo_cli.main(["publish", str(run), "--name", "tiny-digits", "--zoo-dir",
                             str(zoo_dir)])
    assert code == 0, err.getvalue()
    return zoo_dir


def test_published_entry_records_its_split_and_lists_no_paths(published, tiny_npz, capsys):
    doc = json.loads((published / "tiny-digits" / "entry.json").read_text())
    metric = doc["metrics"][0]
    assert metric["name"] == "top1_accuracy"
    assert metric["evaluation"]["data"] == "tiny/train.npz"
    assert metric["evaluation"]["images"] == 40 and metric["evaluation"]["split"] == "test"
    assert doc["dataset"]["name"] == "tiny"
    code, out, _ = _cli("zoo", ["list", "--zoo-dir", str(published)], capsys)
    row = next(line for line in out.splitlines() if line.startswith("tiny-digits"))
    assert " tiny " in row and str(tiny_npz) not in row


def test_zoo_verify_evaluate_catches_a_tampered_metric(published, tiny_npz, capsys):
    from aca_keras import zoo

    code, out, err = _cli("zoo", ["verify", "tiny-digits", "--zoo-dir", str(published),
                                  "--evaluate", str(tiny_npz)], capsys)
    assert code == 0, out + err
    assert "ok   evaluate: top1_accuracy measured" in out
    assert "inside the 3-sigma Wilson score interval" in out and "for 40 images" in out
    # tamper: claim 99.9 and regenerate the card and the index, as verify's messages suggest
    path = published / "tiny-digits" / "entry.json"
    doc = json.loads(path.read_text())
    doc["metrics"][0]["value"] = 99.9
    path.write_text(json.dumps(doc, indent=2) + "\n")
    zoo.write_card(published / "tiny-digits")
    zoo.build_index(published)
    assert zoo.verify("tiny-digits", zoo_dir=published, build=False).ok  # integrity passes
    report = zoo.verify("tiny-digits", zoo_dir=published, evaluate=tiny_npz)
    assert not report.ok
    assert any("claims 99.90%, OUTSIDE" in f for f in report.failures), report.failures
    code, out, _ = _cli("zoo", ["verify", "tiny-digits", "--zoo-dir", str(published),
                                "--evaluate", str(tiny_npz)], capsys)
    assert code == 1 and "FAIL evaluate" in out


def test_zoo_verify_evaluate_refuses_other_data(published, tmp_path):
    from aca_keras import data, zoo

    bundle = data.load("digits")
    other = tmp_path / "tiny" / "train.npz"
    other.parent.mkdir()
    np.savez(other, x=bundle.x_train[100:196], y=bundle.y_train[100:196],
             x_test=bundle.x_test[40:80], y_test=bundle.y_test[40:80])
    report = zoo.verify("tiny-digits", zoo_dir=published, evaluate=other)
    assert not report.ok
    assert any("not the file the metric was measured on" in f for f in report.failures)
    with pytest.raises(zoo.ZooError, match="give the entry's name"):
        zoo.verify("all", zoo_dir=published, evaluate=other)


def test_wilson_interval():
    from aca_keras.stats import wilson_interval

    low, high = wilson_interval(464, 932, z=3.0)  # the zoo's metric check: 3 sigmas
    assert low == pytest.approx(0.4490, abs=1e-3) and high == pytest.approx(0.5468, abs=1e-3)
    assert wilson_interval(40, 40, z=3.0)[1] == 1.0
    assert wilson_interval(0, 40, z=3.0)[0] == pytest.approx(0.0, abs=1e-12)


def test_publishing_a_bundled_name_needs_allow_shadow(trained, tmp_path, capsys):
    run = trained[0]
    code, _, err = _cli("zoo", ["publish", str(run), "--name", "darts-v2-cifar10",
                                "--zoo-dir", str(tmp_path)], capsys)
    assert code == 1 and "bundled zoo already has an entry named 'darts-v2-cifar10'" in err
    assert "--allow-shadow" in err and "shadow=True" not in err
    assert not (tmp_path / "darts-v2-cifar10").exists()
    code, _, err = _cli("zoo", ["publish", str(run), "--name", "darts-v2-cifar10",
                                "--zoo-dir", str(tmp_path), "--allow-shadow"], capsys)
    assert code == 0, err
    code, out, _ = _cli("zoo", ["list", "--zoo-dir", str(tmp_path)], capsys)
    row = next(line for line in out.splitlines() if line.startswith("darts-v2-cifar10"))
    assert row.endswith(f"{tmp_path} (hides bundled)")
    code, out, _ = _cli("zoo", ["info", "darts-v2-cifar10", "--zoo-dir", str(tmp_path)], capsys)
    assert f"  zoo: {tmp_path} (hides bundled)" in out
    code, out, _ = _cli("zoo", ["info", "darts-v1-cifar10"], capsys)
    assert "  zoo: bundled" in out
