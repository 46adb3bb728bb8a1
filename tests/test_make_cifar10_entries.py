"""``zoo/tools/make_cifar10_entries.py``: the stages that make the CIFAR-10 zoo entries, on a
synthetic ``.npz`` of 240 8x8 images (tiny supernet and networks, one or two epochs).

The fast tests check the split (deterministic, disjoint, rebuildable by ``aca_keras.data.load``),
the error messages, the budget projection and the one-recipe rule. ``test_trainings_publish_
and_verify`` runs both trainings (one stopped and resumed), publishing and verification with a
stand-in search (about 45 s on one thread); the slow ``test_whole_tool_end_to_end`` runs the real
search too, stopped after its first epoch and resumed (about 2.5 minutes).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "zoo" / "tools" / "make_cifar10_entries.py"

IMAGES = 240
HOLDOUT = 40
TINY_SEARCH = ["--search-images", "128", "--search-epochs", "2", "--search-cells", "3",
               "--search-channels", "4", "--search-batch-size", "32", "--hessian-every", "0",
               "--score-batches", "2"]
TINY_RECIPE = ["--cells", "3", "--channels", "4", "--epochs", "2", "--batch-size", "32",
               "--cutout", "4"]


@pytest.fixture(scope="module")
def tool():
    """The tool imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_cifar10_entries_under_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No private zoo from the environment, the registry's cache cleared afterwards, and the
    variables the tool sets (TensorFlow's threads) restored afterwards."""
    import os

    from aca_keras.zoo import _registry

    monkeypatch.delenv("ACA_ZOO_PATH", raising=False)
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    yield
    _registry.clear_cache()


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """240 distinct 8x8 RGB images in 10 classes (a colour per class plus noise), saved as
    ``cifar10-jpeg/train.npz`` with keys ``x`` and ``y`` like the real file."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, IMAGES).astype(np.uint8)
    colours = rng.integers(40, 216, (10, 1, 1, 3))
    x = np.clip(colours[y] + rng.normal(0, 30, (IMAGES, 8, 8, 3)), 0, 255).astype(np.uint8)
    assert len({image.tobytes() for image in x}) == IMAGES
    path = tmp_path_factory.mktemp("data") / "cifar10-jpeg" / "train.npz"
    path.parent.mkdir()
    np.savez(path, x=x, y=y)
    return path


def run(tool, capsys, *argv: str) -> tuple[int, str]:
    """``main(argv)`` in this process: its exit status and its output (stdout and stderr)."""
    code = tool.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def split(tool, capsys, npz: Path, work: Path, seed: int = 1) -> dict:
    code, out = run(tool, capsys, "split", "--work", work, "--data", npz, "--holdout", HOLDOUT,
                    "--seed", seed)
    assert code == 0, out
    return json.loads((work / "split.json").read_text())


def image_set(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in np.asarray(images)}


# ------------------------------------------------------------------------------ fast tests


def test_split_is_deterministic_disjoint_and_rebuilt_by_load(tool, npz, tmp_path, capsys):
    from aca_keras import data

    first = split(tool, capsys, npz, tmp_path / "a")
    second = split(tool, capsys, npz, tmp_path / "b")
    first.pop("created"), second.pop("created")
    assert first == second  # the same split from the same file, every time
    indices = np.load(tmp_path / "a" / "split_indices.npz")
    heldout, train = indices["heldout"], indices["train"]
    assert len(heldout) == HOLDOUT and len(train) == IMAGES - HOLDOUT
    assert not set(heldout) & set(train)
    assert sorted(set(heldout) | set(train)) == list(range(IMAGES))
    assert first["test_fraction"] == HOLDOUT / IMAGES and first["seed"] == 1
    # what aca-zoo verify --evaluate rebuilds: load(DATA, test_fraction=...)'s test part
    bundle = data.load(npz, test_fraction=first["test_fraction"])
    raw = np.load(npz)
    np.testing.assert_array_equal(bundle.x_test, raw["x"][heldout])
    np.testing.assert_array_equal(bundle.x_train, raw["x"][train])
    assert data.split_digest(bundle.x_test, bundle.y_test) == first["heldout_split_sha256"]
    assert sum(first["heldout_class_counts"]) == HOLDOUT

    code, out = run(tool, capsys, "split", "--work", tmp_path / "a")
    assert code == 0 and "already done" in out
    code, out = run(tool, capsys, "split", "--work", tmp_path / "a", "--holdout", "50")
    assert code == 2 and "holdout=50 (recorded 40)" in out and "new --work" in out


def test_errors_name_the_missing_file_and_the_stage_to_run_first(tool, npz, tmp_path,
                                                                 capsys):
    work = tmp_path / "work"
    missing = tmp_path / "nowhere" / "train.npz"
    code, out = run(tool, capsys, "split", "--work", work, "--data", missing)
    assert code == 2 and str(missing) in out and "--data PATH" in out
    for stage in (["search"], ["train", "--arch", "darts-v2"], ["publish"]):
        code, out = run(tool, capsys, *stage, "--work", work)
        assert code == 2 and "run the split stage first" in out, out
    split(tool, capsys, npz, work)
    code, out = run(tool, capsys, "train", "--arch", "aca", "--work", work)
    assert code == 2 and "run the search stage first" in out
    code, out = run(tool, capsys, "publish", "--work", work)
    assert code == 2 and "train --arch aca" in out and "train --arch darts-v2" in out
    code, out = run(tool, capsys, "search", "--work", work, "--data", missing)
    assert code == 2 and str(missing) in out
    code, out = run(tool, capsys, "status", "--work", work)
    assert code == 0 and "search:         not started" in out and "waits for the search" in out


def test_the_default_plan_fits_the_budget(tool):
    search, _ = tool.search_seconds(tool.SEARCH_DEFAULTS, (32, 32, 3))
    darts, how = tool.train_seconds(tool.RECIPE_DEFAULTS, 45_000, tool.REFERENCE_MACS)
    assert search == pytest.approx(5_350, rel=0.01)  # the docstring's arithmetic
    assert darts == pytest.approx(7_880, rel=0.01) and "15 epochs x 468 steps" in how
    assert tool.estimated_macs(tool.RECIPE_DEFAULTS, (32, 32, 3)) == tool.REFERENCE_MACS
    assert search + darts + 1.5 * darts <= 8 * 3600  # ACA up to 1.5x DARTS V2's cost
    assert tool.RECIPE_DEFAULTS["cells"] >= 8 and tool.RECIPE_DEFAULTS["channels"] >= 16


def test_both_trainings_share_one_recipe(tool, npz, tmp_path, capsys):
    work = tmp_path / "work"
    split(tool, capsys, npz, work, seed=4)
    recipe = tool.training_recipe(tool.Work(work), {"epochs": 3}, seed=4)
    assert recipe["epochs"] == 3 and recipe["seed"] == 4 and recipe["cells"] == 8
    # the second training takes the recorded recipe; another explicit value is refused
    assert tool.training_recipe(tool.Work(work), {}, seed=4) == recipe
    with pytest.raises(tool.ToolError, match=r"epochs=5 \(recorded 3\)"):
        tool.training_recipe(tool.Work(work), {"epochs": 5}, seed=4)
    a = {"epochs": 3, "seed": 4, "model": {"cells": 8, "architecture": {"normal": 1}},
         "versions": {"x": "1"}}
    b = {**a, "model": {"cells": 8, "architecture": {"normal": 2}}}
    assert tool.recipe_difference(a, b) == []
    assert tool.recipe_difference(a, {**b, "epochs": 4}) == ["epochs"]


def test_a_stage_runs_once_and_status_sees_a_pause(tool, tmp_path):
    import os
    import signal
    import subprocess
    import time

    work = tool.Work(tmp_path / "work")
    lock = work.lock("train:aca")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(  # another process running the stage: it holds the lock
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"h = open({str(lock)!r}, 'a+'); fcntl.flock(h, fcntl.LOCK_EX)\n"
         "h.seek(0); h.truncate(); h.write(str(os.getpid())); h.flush()\n"
         "print('locked', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert tool.stage_running(work, "train:aca") == "running"
        with pytest.raises(tool.ToolError, match=rf"already running .*pid {holder.pid}"):
            with tool.stage_lock(work, "train:aca"):
                pass
        holder.send_signal(signal.SIGSTOP)
        for _ in range(50):
            if tool.stage_running(work, "train:aca") == "paused":
                break
            time.sleep(0.05)
        assert tool.stage_running(work, "train:aca") == "paused"
        holder.send_signal(signal.SIGCONT)
    finally:
        holder.kill()
        holder.wait()
    assert tool.stage_running(work, "train:aca") is None
    with tool.stage_lock(work, "train:aca"):
        assert lock.read_text() == str(os.getpid())


# ---------------------------------------------------------------- trainings, publish, verify


def stand_in_search(run_dir, **settings):
    """What the search stage needs from ``aca_keras.search``: a run directory with
    ``config.json`` and ``architecture.json`` (a fixed ACA cell with reduced channels)."""
    from aca_keras.io import atomic
    from aca_keras.space.architecture import Architecture
    from aca_keras.space.genotype import Genotype

    genotype = Genotype((("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_3x3", 0),
                         ("sep_conv_5x5", 2)), (2, 3),
                        (("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 1),
                         ("dil_conv_5x5", 2)), (2, 3))
    arch = Architecture.from_genotype(genotype, 4, "aca").with_channels([4, 2, 1, 3],
                                                                        [1, 4, 2, 2])
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    arch.save(Path(run_dir) / "architecture.json")
    atomic.atomic_write_json(Path(run_dir) / "config.json", {
        "dataset": "<DataBundle>", "ops": "aca", "scorer": "taylor", "pooling": "index",
        "allocator": "adaptive", "seed": settings["seed"], "epochs": settings["epochs"],
        "cells": settings["cells"], "channels": settings["channels"],
        "versions": {"aca_keras": "test"}})


def check_trainings_and_entries(tool, npz: Path, work: Path, zoo_dir: Path, seen: dict,
                                capsys) -> None:
    """Train both (darts-v2 stopped after epoch 1 and resumed), publish, and check: the
    held-out images never reached a training, one recipe, the resume continued, both
    entries verify with evaluate, and the re-measured accuracy equals the card's."""
    from aca_keras import data, zoo

    heldout = np.load(work / "split_indices.npz")["heldout"]
    raw = np.load(npz)
    heldout_images = image_set(raw["x"][heldout])

    code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work,
                    "--stop-after-epochs", "1", *TINY_RECIPE)
    assert code == 0 and "stopped after epoch 1 of 2" in out, out
    meta_dir = work / "train-darts-v2"
    assert not json.loads((meta_dir / "stage.json").read_text())["done"]
    code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work)
    assert code == 0 and "resuming after epoch 1" in out and "epochs 2..2" in out, out
    stage = json.loads((meta_dir / "stage.json").read_text())
    assert stage["done"] and len(stage["sessions"]) == 2
    assert {k: v["session"] for k, v in stage["epochs"].items()} == {"1": 1, "2": 2}
    with open(meta_dir / "train_history.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]

    code, out = run(tool, capsys, "train", "--arch", "aca", "--work", work)
    assert code == 0, out
    code, out = run(tool, capsys, "train", "--arch", "aca", "--work", work)
    assert code == 0 and "already done" in out

    # the held-out images reach a training only as its final test part
    assert len(seen["train"]) == 3
    for bundle in seen["train"]:
        assert bundle.num_train == IMAGES - HOLDOUT
        assert not image_set(bundle.x_train) & heldout_images
        assert image_set(bundle.x_test) == heldout_images
    # one recipe, one seed, the same data: only the cell differs
    configs = {a: json.loads((work / f"train-{a}" / "train_config.json").read_text())
               for a in ("aca", "darts-v2")}
    assert tool.recipe_difference(configs["aca"], configs["darts-v2"]) == []
    assert configs["aca"]["model"]["architecture"] != configs["darts-v2"]["model"]["architecture"]
    assert configs["aca"]["epochs"] == 2 and configs["aca"]["seed"] == 1

    code, out = run(tool, capsys, "publish", "--work", work, "--zoo-dir", zoo_dir, "--date",
                    "2026-11-28")
    assert code == 0, out
    assert out.count("re-measured") == 2 and "DIFFERENT" not in out
    summary = json.loads((work / "published.json").read_text())
    assert summary["ok"] and summary["zoo_dir"] == str(zoo_dir.resolve())
    bundle = data.load(npz, test_fraction=HOLDOUT / IMAGES)
    for arch, name in (("aca", "aca-cifar10"), ("darts-v2", "darts-v2-cifar10-trained")):
        entry = zoo.info(name, zoo_dir=zoo_dir)
        assert {a.kind for a in entry.artifacts} == {"keras", "onnx"}
        metric = next(m for m in entry.metrics if m.name == "top1_accuracy")
        assert metric.evaluation["load"] == {"test_fraction": HOLDOUT / IMAGES}
        assert metric.evaluation["images"] == HOLDOUT
        assert "not CIFAR-10's test set" in metric.split
        card = (entry.path / "README.md").read_text()
        assert "not CIFAR-10 test accuracy" in card and "JPEG round trip" in card
        assert "Compared at equal recipe" in card
        assert any(m.name == "multiply_adds" and m.value > 0 for m in entry.metrics)
        training = entry.document["provenance"]["training"]
        assert training["by"] == "aca_keras" and training["wall_time_s"] > 0
        assert "TensorFlow thread" in training["hardware"]
        assert entry.dataset == "cifar10-jpeg" and entry.document["dataset"]["test_images"] == 40
        # verify with evaluate passes; the model measures exactly the card's figure again
        report = zoo.verify(name, zoo_dir=zoo_dir, evaluate=npz)
        assert report.ok, report.format()
        model = zoo.load(name, zoo_dir=zoo_dir)
        logits = model.inference_model().predict(bundle.x_test.astype("float32"), verbose=0)
        correct = int(np.sum(np.argmax(logits, axis=-1) == bundle.y_test))
        assert round(100 * correct / HOLDOUT, 2) == metric.value
        assert summary["entries"][arch]["correct"] == correct
    search = zoo.info("darts-v2-cifar10-trained", zoo_dir=zoo_dir).document["provenance"]
    assert search["search"]["by"] == "paper"
    code, out = run(tool, capsys, "status", "--work", work)
    assert code == 0 and "publish:        done" in out and out.count("done:") >= 4


def spy(monkeypatch, seen: dict) -> None:
    """Record every bundle the tool gives ``aca_keras.search`` and ``train``."""
    from aca_keras.searching import pipeline
    from aca_keras.training import trainer

    real_search, real_train = pipeline.search, trainer.train
    seen.update(search=[], train=[])

    def search(dataset, **kwargs):
        seen["search"].append(dataset)
        return seen.get("search_impl", real_search)(dataset, **kwargs)

    def train(model, dataset, **kwargs):
        seen["train"].append(dataset)
        return real_train(model, dataset, **kwargs)

    monkeypatch.setattr(pipeline, "search", search)
    monkeypatch.setattr(trainer, "train", train)


@pytest.mark.slow  # about 40 s on one thread: kept out of the default suite's budget
def test_trainings_publish_and_verify(tool, npz, tmp_path, capsys, monkeypatch):
    seen: dict = {"search_impl": lambda dataset, **kw: stand_in_search(**kw)}
    spy(monkeypatch, seen)
    work = tmp_path / "work"
    heldout = split(tool, capsys, npz, work)
    code, out = run(tool, capsys, "search", "--work", work, *TINY_SEARCH)
    assert code == 0 and "search: done" in out, out
    (data,) = seen["search"]
    assert data.num_train == 128 and data.x_test is None
    raw = np.load(npz)
    train_idx = np.load(work / "split_indices.npz")["train"]
    np.testing.assert_array_equal(data.x_train, raw["x"][train_idx[:128]])
    assert heldout["seed"] == 1
    check_trainings_and_entries(tool, npz, work, tmp_path / "zoo", seen, capsys)


@pytest.mark.slow
def test_whole_tool_end_to_end(tool, npz, tmp_path, capsys, monkeypatch):
    seen: dict = {}
    spy(monkeypatch, seen)
    work = tmp_path / "work"
    split(tool, capsys, npz, work)
    heldout = np.load(work / "split_indices.npz")["heldout"]
    code, out = run(tool, capsys, "search", "--work", work, "--stop-after-epochs", "1",
                    *TINY_SEARCH)
    assert code == 0 and "stopped after epoch 1 of 2" in out, out
    from aca_keras.io.checkpoint import read_checkpoint_meta

    assert read_checkpoint_meta(work / "search" / "checkpoint.npz")["epochs_done"] == 1
    assert not (work / "search" / "architecture.json").exists()
    code, out = run(tool, capsys, "train", "--arch", "aca", "--work", work)
    assert code == 2 and "run the search stage first" in out
    code, out = run(tool, capsys, "search", "--work", work)  # the recorded settings
    assert code == 0 and "resuming after epoch 1 of 2" in out and "search: done" in out, out
    stage = json.loads((work / "search" / "stage.json").read_text())
    assert {k: v["session"] for k, v in stage["epochs"].items()} == {"1": 1, "2": 2}
    assert stage["scorer"] and stage["allocator"] and stage["ops"]  # search()'s defaults
    assert len((work / "search" / "alphas.jsonl").read_text().splitlines()) == 2
    heldout_images = image_set(np.load(npz)["x"][heldout])
    assert len(seen["search"]) == 2
    for bundle in seen["search"]:
        assert bundle.num_train == 128 and not image_set(bundle.x_train) & heldout_images
    check_trainings_and_entries(tool, npz, work, tmp_path / "zoo", seen, capsys)
