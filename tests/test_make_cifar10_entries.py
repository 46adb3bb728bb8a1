"""``zoo/tools/make_cifar10_entries.py``: the stages that make the CIFAR-10 zoo entries, on a
synthetic ``.npz`` of 240 8x8 images (tiny supernet and networks, one or two epochs).

The fast tests check the split and the recipe it fixes (deterministic, disjoint, rebuildable
by ``aca_keras.data.load``; ``recipe.json`` created atomically, a changed recipe refused on
resume), the code-hash rule, the paired statistics against hand-computed values, the cards'
texts per architecture, the refusal to overwrite a foreign zoo entry, the git warnings, the
error messages and the budget projection. The slow ``test_trainings_publish_and_verify`` runs
both trainings (one stopped, refused under a changed code hash, resumed with
``--allow-code-change``), a publish whose verification fails (the zoo stays untouched) and the
real publish with a stand-in search (about a minute on one thread); the slow
``test_whole_tool_end_to_end`` runs the real search too, stopped after its first epoch and
resumed (about 2.5 minutes).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aca_keras.stats import binomial_two_sided

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "zoo" / "tools" / "make_cifar10_entries.py"

IMAGES = 240
HOLDOUT = 40
TINY_SEARCH = ["--search-images", "128", "--search-epochs", "2", "--search-cells", "3",
               "--search-channels", "4", "--search-batch-size", "32", "--hessian-every", "0",
               "--score-batches", "2"]
TINY_RECIPE = ["--cells", "3", "--channels", "4", "--epochs", "2", "--batch-size", "32",
               "--cutout", "4"]
#: Names the tests publish under (not the real ones, which the bundled zoo may hold one day).
NAMES = {"aca": "test-aca-cifar10", "darts-v2": "test-darts-v2-cifar10-trained"}
NAME_FLAGS = ["--aca-name", NAMES["aca"], "--darts-name", NAMES["darts-v2"]]
HASH_A, HASH_B = "a" * 64, "b" * 64


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


def split(tool, capsys, npz: Path, work: Path, seed: int = 1, *recipe: str) -> dict:
    code, out = run(tool, capsys, "split", "--work", work, "--data", npz, "--holdout", HOLDOUT,
                    "--seed", seed, *recipe)
    assert code == 0, out
    return json.loads((work / "split.json").read_text())


def image_set(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in np.asarray(images)}


def fake_log(tool, work: Path, stage: str, digest: str, *, done: bool = True,
             settings: dict | None = None, commit: str | None = None) -> None:
    """A stage log with one session run under the aca_keras code hash ``digest``."""
    log = tool.StageLog(tool.Work(work).stage_log(stage))
    log.data.update(settings=dict(settings or {}), done=done, accuracy=0.5)
    log.data["sessions"].append({"command": "python x", "hardware": "CPU; load 1.0",
                                 "pid": 1, "started": "2026-11-28T00:00:00", "wall_s": 2.0,
                                 "cpu_s": 1.0, "code": {"aca_keras_sha256": digest,
                                                        "git_commit": commit}})
    log.data["epochs"]["1"] = {"wall_s": 1.5, "cpu_s": 0.75, "session": 1}
    log.save()


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
    # nothing spent yet; the default plan's projection (tiny data: a few seconds) is within
    assert "budget: 0.00 CPU-hours spent + " in out and "vs the 8 CPU-hour budget" in out
    assert "not inside a git repository" in out  # a temporary folder: nothing carries it
    with pytest.raises(SystemExit) as stop:  # argparse: N >= 1
        tool.main(["train", "--arch", "aca", "--work", str(work), "--stop-after-epochs", "0"])
    assert stop.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_the_default_plan_fits_the_budget(tool):
    assert tool.SEARCH_DEFAULTS["hessian_every"] == 3
    search, how = tool.search_seconds(tool.SEARCH_DEFAULTS, (32, 32, 3))
    darts, how_train = tool.train_seconds(tool.RECIPE_DEFAULTS, 45_000, tool.REFERENCE_MACS)
    # the docstring's arithmetic: 6 x 78 x 11.1 + 3 Hessians (epochs 1, 3, 6) x 20 x 11.1 + 150
    assert "3 Hessian measurements" in how
    assert search == pytest.approx(6 * 78 * 11.1 + 3 * 20 * 11.1 + 150)
    assert search == pytest.approx(6_010, rel=0.001)
    # 6 x 468 x 3.19 + 20 s tracing
    assert darts == pytest.approx(8_980, rel=0.01) and "6 epochs x 468 steps" in how_train
    assert tool.estimated_macs(tool.RECIPE_DEFAULTS, (32, 32, 3)) == tool.REFERENCE_MACS
    assert search + darts + 1.5 * darts <= tool.BUDGET_CPU_S  # ACA up to 1.5x DARTS V2's cost
    assert tool.RECIPE_DEFAULTS["cells"] >= 8 and tool.RECIPE_DEFAULTS["channels"] >= 16
    # the default work directory is tracked by git, and not shipped by the package data
    assert tool.DEFAULT_WORK == REPO / "zoo" / "tools" / "work" / "cifar10-entries"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(tool.DEFAULT_WORK)], cwd=REPO)
    assert ignored.returncode == 1
    assert tool.display_path(tool.DEFAULT_WORK) == "zoo/tools/work/cifar10-entries"
    assert tool.display_path(REPO.parent / "shared" / "d.npz") == "../shared/d.npz"
    # anything else beside the repository (a CI clone's /tmp/pytest-of-...) stays absolute
    elsewhere = REPO.parent / "elsewhere" / "x.npz"
    assert tool.display_path(elsewhere) == str(elsewhere)


def test_the_split_fixes_one_recipe_atomically(tool, npz, tmp_path, capsys):
    work = tmp_path / "work"
    split(tool, capsys, npz, work, 4, "--epochs", "3")
    recipe = json.loads((work / "recipe.json").read_text())
    assert recipe == {**tool.RECIPE_DEFAULTS, "epochs": 3, "seed": 4}
    assert [p.name for p in work.iterdir() if p.name.endswith(".tmp")] == []
    # both trainings read it; a training flag that differs is refused
    assert tool.training_recipe(tool.Work(work), {"epochs": 3}) == recipe
    with pytest.raises(tool.ToolError, match=r"epochs=5 \(recorded 3\).*fixed .*recipe\.json"):
        tool.training_recipe(tool.Work(work), {"epochs": 5})
    code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work, "--epochs", "5")
    assert code == 2 and "epochs=5 (recorded 3)" in out and "split stage" in out
    code, out = run(tool, capsys, "split", "--work", work, "--cells", "6")
    assert code == 2 and "cells=6 (recorded 8)" in out
    # creation is exclusive: a second writer (a process that lost the race) changes nothing
    path = tmp_path / "r.json"
    assert tool.create_json_exclusive(path, {"epochs": 1}) is True
    assert tool.create_json_exclusive(path, {"epochs": 2}) is False
    assert json.loads(path.read_text()) == {"epochs": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    a = {"epochs": 3, "seed": 4, "model": {"cells": 8, "architecture": {"normal": 1}},
         "versions": {"x": "1"}}
    b = {**a, "model": {"cells": 8, "architecture": {"normal": 2}}}
    assert tool.recipe_difference(a, b) == []
    assert tool.recipe_difference(a, {**b, "epochs": 4}) == ["epochs"]


def test_a_changed_recipe_or_code_is_refused_on_resume(tool, npz, tmp_path, capsys):
    work = tmp_path / "work"
    split(tool, capsys, npz, work, 1, *TINY_RECIPE)
    recipe = json.loads((work / "recipe.json").read_text())
    current = tool.code_version()["aca_keras_sha256"]
    fake_log(tool, work, "train:darts-v2", current, done=False, settings=recipe)
    # recipe.json edited after the training started
    (work / "recipe.json").write_text(json.dumps({**recipe, "epochs": 3}))
    code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work)
    assert code == 2 and "epochs: started with 2, recipe.json now 3" in out, out
    (work / "recipe.json").write_text(json.dumps(recipe))
    # the stage's earlier session ran other aca_keras code
    fake_log(tool, work, "train:aca", HASH_A, done=False, settings=recipe, commit="c0ffee")
    log = tool.StageLog(tool.Work(work).stage_log("train:aca"))
    with pytest.raises(tool.ToolError) as refused:
        tool.check_code(log, {"aca_keras_sha256": current}, False, "train --arch aca")
    message = str(refused.value)
    assert f"session(s) 1 ran aca_keras sha256 {HASH_A} (git commit c0ffee)" in message
    assert f"this checkout has aca_keras sha256 {current}" in message
    assert "--allow-code-change to resume anyway" in message
    assert tool.check_code(log, {"aca_keras_sha256": current}, True, "x") is True
    assert tool.check_code(log, {"aca_keras_sha256": HASH_A}, False, "x") is False
    (work / "stages" / "train-darts-v2.json").unlink()
    fake_log(tool, work, "train:darts-v2", HASH_B, done=False, settings=recipe)
    code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work)
    assert code == 2 and HASH_B in out and current in out and "--allow-code-change" in out


def test_code_version_hashes_the_package_sources(tool, tmp_path, monkeypatch):
    real = tool.code_version()
    assert len(real["aca_keras_sha256"]) == 64 and real["files"] > 20
    assert tool.code_version()["aca_keras_sha256"] == real["aca_keras_sha256"]
    package = tmp_path / "aca_keras"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    monkeypatch.setattr(tool, "aca_keras_dir", lambda: package)
    first = tool.code_version()["aca_keras_sha256"]
    (package / "notes.txt").write_text("changed, still not code")
    assert tool.code_version()["aca_keras_sha256"] == first
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert tool.code_version()["aca_keras_sha256"] != first


def test_paired_statistics_by_hand(tool):
    # 10 images: ACA right on 8, DARTS V2 on 4; ACA only on images 1-5 (b = 5), DARTS V2 only
    # on image 8 (c = 1), both on 0, 6, 7, neither on 9
    aca = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    darts = [1, 0, 0, 0, 0, 0, 1, 1, 1, 0]
    stats = tool.paired_statistics(aca, darts)
    assert (stats["b"], stats["c"], stats["both_right"], stats["both_wrong"]) == (5, 1, 3, 1)
    # exact McNemar: 2 * P(X <= 1), X ~ Binomial(6, 1/2) = 2 * (1 + 6) / 64
    assert stats["p_value"] == pytest.approx(14 / 64) == pytest.approx(0.21875)
    # Wilson 95 %: 8/10 -> [0.4902, 0.9433], 4/10 -> [0.1682, 0.6873] (by hand, z = 1.96)
    assert stats["wilson95"]["aca"] == pytest.approx([0.49016, 0.94332], abs=1e-5)
    assert stats["wilson95"]["darts-v2"] == pytest.approx([0.16818, 0.68732], abs=1e-5)
    assert stats["correct"] == {"aca": 8, "darts-v2": 4}


def fake_context(tool, tmp_path: Path, *, code_change: bool = False):
    """A ``Published`` context with hand-made records (10 held-out images: the example of
    ``test_paired_statistics_by_hand``)."""
    work = tool.Work(tmp_path / "work")
    recipe = {**tool.RECIPE_DEFAULTS, "seed": 0}
    for stage, digest in (("search", HASH_A), ("train:aca", HASH_A),
                          ("train:darts-v2", HASH_B if code_change else HASH_A)):
        fake_log(tool, work.root, stage, digest,
                 settings=dict(tool.SEARCH_DEFAULTS) if stage == "search" else recipe)
    search_log = tool.StageLog(work.stage_log("search"))
    search_log.data.update(images=10_000, collapse={
        "hessian": [[1, 12.5], [8, 30.25], [16, 41.0]],
        "final": {"epoch": 16, "skip_edges": 0, "parameter_free_edges": 2,
                  "reduce_skip_edges": 0, "reduce_parameter_free_edges": 5}})
    config = {"seed": 0, "epochs": 15, "batch_size": 96, "model": {"cells": 8,
                                                                    "architecture": {}},
              "versions": {"aca_keras": "0.1.0", "machine": "x86_64"}}
    split_record = {"data": str(REPO.parent / "shared" / "data" / "cifar10-jpeg" / "train.npz"),
                    "data_display": "cifar10-jpeg/train.npz", "data_sha256": "d" * 64,
                    "test_fraction": 0.1, "rule": "the first 10 of a permutation",
                    "heldout_indices_sha256": "e" * 64, "holdout_seed": 0,
                    "heldout_split_sha256": "f" * 64, "holdout": 10, "seed": 0}
    aca = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    darts = [1, 0, 0, 0, 0, 0, 1, 1, 1, 0]
    results = {arch: {"correct": sum(h), "total": 10, "accuracy": sum(h) / 10, "macs": 40e6,
                      "params": 300_000, "trained_accuracy": sum(h) / 10}
               for arch, h in (("aca", aca), ("darts-v2", darts))}
    logs = {arch: tool.StageLog(work.stage_log(f"train:{arch}")) for arch in tool.ARCHS}
    return tool.Published(
        work=work, split=split_record, recipe=recipe, names=dict(NAMES), logs=logs,
        configs={"aca": config, "darts-v2": config}, search_log=search_log,
        search_config={"dataset": "<DataBundle>", "ops": "aca", "scorer": "taylor",
                       "pooling": "index", "allocator": "adaptive", "seed": 0, "epochs": 16,
                       "cells": 5, "channels": 8, "batch_size": 64, "order": 1,
                       "hessian_every": 8, "versions": {"aca_keras": "0.1.0"}},
        bundle=SimpleNamespace(num_test=10, num_train=90, input_shape=(32, 32, 3),
                               class_names=[str(i) for i in range(10)]),
        results=results, paired=tool.paired_statistics(aca, darts),
        codes={arch: logs[arch].code_hashes() for arch in tool.ARCHS},
        code_change_allowed=code_change)


def test_cards_state_what_saw_the_heldout_images_and_the_paired_test(tool, tmp_path):
    ctx = fake_context(tool, tmp_path)
    darts, aca = tool.entry_arguments(ctx, "darts-v2"), tool.entry_arguments(ctx, "aca")
    darts_split = darts["metrics"][0]["split"]
    assert "never seen" not in darts_split and "seen neither" not in darts_split
    assert "not seen by the training here" in darts_split
    assert "so the cell's search did see them" in darts_split
    assert "seen neither by the ACA search nor by the training" in aca["metrics"][0]["split"]
    for args in (darts, aca):
        text = json.dumps(args)
        assert "no spread is known" not in text and "<DataBundle>" not in text
        assert tool.MARKER_TAG in args["tags"]
        note = args["metrics"][0]["note"]
        assert "exact McNemar test b = 5 (ACA right, DARTS V2 wrong), c = 1" in note
        assert "p = 0.219" in note
        notes = "\n".join(args["notes"])
        assert "Wilson 95 % interval 49.02-94.33 %" in notes  # ACA, 8/10
        assert "Wilson 95 % interval 16.82-68.73 %" in notes  # DARTS V2, 4/10
        assert "b = 5, the reverse on c = 1 (both right 3, both wrong 1)" in notes
        # the unequal searches, from the darts-v2-cifar10 entry and the ACA search's log
        assert ("DARTS V2: DARTS, second order (unrolled); supernet of 8 cells, C = 16, 50 "
                "epochs, batch 64, on CIFAR-10's 50,000 training images") in notes
        assert "cost 4 GPU-days (the paper's figure), as recorded in the zoo entry" in notes
        assert "ACA here: first order; supernet of 5 cells, C = 8, 16 epochs, batch 64" in notes
        assert "on 10,000 images of this split's training part" in notes
        # both clocks: 1.0 s CPU spent in sessions, 0.75 s in completed epochs, per stage
        assert "0.00 CPU-hours (0.00 h wall) spent in 1 session(s)" in notes
        assert "--allow-code-change" not in notes
        training = args["provenance"]["training"]
        assert training["command"] == ("python zoo/tools/make_cifar10_entries.py train "
                                       f"--arch {'aca' if args is aca else 'darts-v2'} --work "
                                       f"{tmp_path / 'work'} --cells 8 --channels 16 --epochs "
                                       "6 --batch-size 96 --learning-rate 0.025 --momentum 0.9 "
                                       "--weight-decay 0.0003 --grad-clip 5.0 --cutout 16 "
                                       "--drop-path 0.2 --auxiliary-weight 0.4")
        assert training["versions"]["aca_keras_code_sha256"] == HASH_A
        assert "machine" not in training["versions"]
        assert "Spent in 1 session(s): wall time 2 s and CPU time 1 s" in training["note"]
        assert "In the 1 completed epochs: wall time 2 s and CPU time 1 s" in training["note"]
        assert "--data ../shared/data/cifar10-jpeg/train.npz --holdout 10 --seed 0" in notes
    aca_notes = "\n".join(aca["notes"])
    assert ("12.5 after epoch 1, 30.25 after epoch 8, 41 after epoch 16" in aca_notes
            and "0 skip and 2 parameter-free edge(s), the reduction cell 0 skip and 5" in aca_notes)
    assert "Collapse monitor" not in "\n".join(darts["notes"])
    search = aca["provenance"]["search"]
    assert search["settings"]["dataset"].startswith("cifar10-jpeg: the first 10,000")
    assert search["command"].startswith("python zoo/tools/make_cifar10_entries.py search --work")
    assert "--search-epochs 6" in search["command"] and "--hessian-every 3" in search["command"]
    # trainings under two code hashes, published with --allow-code-change: the cards say so
    mixed = tool.entry_arguments(fake_context(tool, tmp_path / "mixed", code_change=True), "aca")
    assert (f"Published with --allow-code-change: the training sessions ran different "
            f"aca_keras code (sha256 over aca_keras/**/*.py): ACA training {HASH_A}; DARTS V2 "
            f"training {HASH_B}") in "\n".join(mixed["notes"])


def test_publish_refuses_foreign_entries_and_mixed_code(tool, npz, tmp_path, capsys):
    work, zoo_dir = tmp_path / "work", tmp_path / "zoo"
    split(tool, capsys, npz, work)
    for arch in tool.ARCHS:
        fake_log(tool, work, f"train:{arch}", HASH_A)
    foreign = zoo_dir / NAMES["aca"] / "entry.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps({"name": NAMES["aca"], "tags": ["someone-else"]}))
    before = foreign.read_bytes()
    code, out = run(tool, capsys, "publish", "--work", work, "--zoo-dir", zoo_dir, *NAME_FLAGS)
    assert code == 2 and f"the zoo entry {foreign.parent.resolve()} was not made by" in out
    assert tool.MARKER_TAG in out
    assert foreign.read_bytes() == before and sorted(p.name for p in zoo_dir.iterdir()) == [
        NAMES["aca"]]
    (zoo_dir / NAMES["darts-v2"]).mkdir()  # a folder without entry.json is not overwritten
    foreign.write_text(json.dumps({"tags": [tool.MARKER_TAG]}))
    code, out = run(tool, capsys, "publish", "--work", work, "--zoo-dir", zoo_dir, *NAME_FLAGS)
    assert code == 2 and "holds no readable entry.json" in out
    # a private entry must not hide a bundled one
    code, out = run(tool, capsys, "publish", "--work", work, "--zoo-dir", tmp_path / "z2",
                    "--aca-name", "darts-v2-cifar10")
    assert code == 2 and "the bundled zoo" in out and "would hide it" in out
    # trainings under two code hashes: refused unless --allow-code-change
    (work / "stages" / "train-darts-v2.json").unlink()
    fake_log(tool, work, "train:darts-v2", HASH_B)
    code, out = run(tool, capsys, "publish", "--work", work, "--zoo-dir", tmp_path / "z3",
                    *NAME_FLAGS)
    assert code == 2 and f"aca {HASH_A}; darts-v2 {HASH_B}" in out
    assert "--allow-code-change" in out
    assert not (tmp_path / "z3").exists() and not (work / "zoo-staging").exists()


def test_stage_records_live_apart_from_the_run_directories(tool, tmp_path):
    work = tool.Work(tmp_path / "w")
    assert work.stage_log("search") == work.root / "stages" / "search.json"
    assert work.stage_log("train:aca") == work.root / "stages" / "train-aca.json"
    assert work.run_dir("train:darts-v2") == work.root / "train-darts-v2"
    assert work.zoo_staging == work.root / "zoo-staging"
    # a session counts from its process's start
    start = tool.process_start_time()
    assert 0 <= time.time() - start < 30 * 86400 and start <= tool._IMPORTED_AT + 1
    log = tool.StageLog(work.stage_log("search"))
    log.start_session("python x", {"aca_keras_sha256": HASH_A})
    log.epoch(1, 2.0, 1.0)
    record = json.loads(work.stage_log("search").read_text())
    assert record["sessions"][0]["code"] == {"aca_keras_sha256": HASH_A}
    assert log.epochs_wall_s == 2.0 and log.epochs_cpu_s == 1.0
    assert "in the 1 completed epoch(s): 0.00 h (0 min) wall" in log.time_words()


def test_the_library_errors_name_what_to_delete(tool, tmp_path):
    from aca_keras.errors import RunDirError

    work = tool.Work(tmp_path / "w")
    with pytest.raises(tool.ToolError) as error:
        with tool.library_errors(work, "train:aca"):
            raise RunDirError("The checkpoint x is corrupt or unreadable (bad zip).")
    message = str(error.value)
    assert f"delete the folder {work.train_dir('aca')}" in message
    assert f"keep {work.stage_log('train:aca')} (the tool's time records)" in message
    assert "restarts from epoch 1" in message


def test_status_warns_about_the_git_state_of_the_work_directory(tool, tmp_path):
    repo = tmp_path / "repo"
    (repo / "kept").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "ignored" / "work").mkdir(parents=True)
    (repo / "kept" / "split.json").write_text("{}")
    (warning,) = tool.git_warnings(repo / "ignored" / "work")
    assert "git ignores" in warning and "commit the work directory at the end" in warning
    (warning,) = tool.git_warnings(repo / "kept")
    assert "1 uncommitted change(s)" in warning
    assert "commit the work directory at the end of every session" in warning
    assert "git add kept" in warning


def test_a_stage_runs_once_and_status_sees_a_pause(tool, tmp_path):
    import os
    import signal

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
        "cells": settings["cells"], "channels": settings["channels"], "order": 1,
        "batch_size": settings["batch_size"], "hessian_every": settings["hessian_every"],
        "versions": {"aca_keras": "test"}})
    with open(Path(run_dir) / "alphas.jsonl", "w") as handle:  # the collapse monitor's record
        for epoch, value in ((1, 3.5), (2, None)):
            handle.write(json.dumps({"epoch": epoch, "hessian_eigenvalue": value,
                                     "skip_edges": 0, "parameter_free_edges": 1,
                                     "reduce_skip_edges": 0,
                                     "reduce_parameter_free_edges": 3}) + "\n")


def failing_verify(real):
    """``aca_keras.zoo.verify`` that fails every entry's evaluate check."""

    def verify(name="all", **kwargs):
        kwargs.pop("evaluate", None)
        report = real(name, **{**kwargs, "build": False})
        for entry in report.entries:
            entry.add("evaluate", False, "made to fail by the test")
        return report

    return verify


def check_trainings_and_entries(tool, npz: Path, work: Path, zoo_dir: Path, seen: dict,
                                capsys, monkeypatch, code_change: bool = False) -> None:
    """Train both (darts-v2 stopped after epoch 1 and resumed), publish, and check: the
    held-out images never reached a training, one recipe, the resume continued, both
    entries verify with evaluate, and the re-measured accuracy equals the card's.

    With ``code_change`` the darts-v2 training resumes under another code hash (refused, then
    allowed with --allow-code-change), publishing is refused until --allow-code-change, and a
    publish whose verification fails leaves the zoo untouched."""
    from aca_keras import data, zoo

    heldout = np.load(work / "split_indices.npz")["heldout"]
    raw = np.load(npz)
    heldout_images = image_set(raw["x"][heldout])

    code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work,
                    "--stop-after-epochs", "1")
    assert code == 0 and "stopped after epoch 1 of 2" in out, out
    assert "reminder: commit the work directory" in out
    stage_path = work / "stages" / "train-darts-v2.json"
    meta_dir = work / "train-darts-v2"
    assert not json.loads(stage_path.read_text())["done"]
    assert not (meta_dir / "stage.json").exists()  # the tool's records are apart from the run
    first_code = tool.code_version()
    if code_change:
        changed = {**first_code, "aca_keras_sha256": HASH_B}
        monkeypatch.setattr(tool, "code_version", lambda: dict(changed))
        code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work)
        assert code == 2 and first_code["aca_keras_sha256"] in out and HASH_B in out, out
        assert "--allow-code-change" in out
    code, out = run(tool, capsys, "train", "--arch", "darts-v2", "--work", work,
                    *(["--allow-code-change"] if code_change else []))
    assert code == 0 and "resuming after epoch 1" in out and "epochs 2..2" in out, out
    stage = json.loads(stage_path.read_text())
    assert stage["done"] and len(stage["sessions"]) == 2
    assert {k: v["session"] for k, v in stage["epochs"].items()} == {"1": 1, "2": 2}
    assert [s["code"]["aca_keras_sha256"] for s in stage["sessions"]] == (
        [first_code["aca_keras_sha256"], HASH_B] if code_change
        else [first_code["aca_keras_sha256"]] * 2)
    assert stage["sessions"][1].get("code_change_allowed", False) is code_change
    for s in stage["sessions"]:  # counted from the process's start: at least the epochs
        assert s["wall_s"] > 0 and s["cpu_s"] > 0
    assert sum(s["cpu_s"] for s in stage["sessions"]) >= sum(
        e["cpu_s"] for e in stage["epochs"].values())
    with open(meta_dir / "train_history.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]

    code, out = run(tool, capsys, "train", "--arch", "aca", "--work", work)
    assert code == 0, out
    code, out = run(tool, capsys, "train", "--arch", "aca", "--work", work)
    assert code == 0 and "already done" in out
    aca_stage = json.loads((work / "stages" / "train-aca.json").read_text())
    assert aca_stage["macs"] > 0 and aca_stage["params"] > 0

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

    publish = ["publish", "--work", work, "--zoo-dir", zoo_dir, "--date", "2026-11-28",
               *NAME_FLAGS]
    if code_change:
        code, out = run(tool, capsys, *publish)
        assert code == 2 and "the two trainings ran different aca_keras code" in out, out
        publish.append("--allow-code-change")
        # a verification that fails in the staging zoo leaves the real zoo untouched
        zoo_dir.mkdir()
        (zoo_dir / "README.md").write_text("someone's zoo\n")
        real_verify = zoo.verify
        monkeypatch.setattr(zoo, "verify", failing_verify(real_verify))
        code, out = run(tool, capsys, *publish)
        assert code == 2 and f"the zoo {zoo_dir.resolve()} was not changed" in out, out
        assert "made to fail by the test" in out
        assert [p.name for p in zoo_dir.iterdir()] == ["README.md"]
        assert (zoo_dir / "README.md").read_text() == "someone's zoo\n"
        assert (work / "zoo-staging" / NAMES["aca"] / "entry.json").is_file()  # kept
        assert not json.loads((work / "published.json").read_text())["ok"]
        code, out = run(tool, capsys, "status", "--work", work)
        assert "publish:        FAILED checks" in out and "the zoo is unchanged" in out
        monkeypatch.setattr(zoo, "verify", real_verify)
        monkeypatch.setattr(tool, "code_version", lambda: dict(first_code))

    code, out = run(tool, capsys, *publish)
    assert code == 0, out
    assert out.count("re-measured") == 2 and "DIFFERENT" not in out
    assert not (work / "zoo-staging").exists()  # scratch, removed after a successful publish
    summary = json.loads((work / "published.json").read_text())
    assert summary["ok"] and summary["zoo_dir"] == str(zoo_dir.resolve())
    assert summary["verify_all"]["ok"] and summary["verify_all"]["entries"] == 2
    paired = summary["paired"]
    assert paired["images"] == HOLDOUT
    assert (paired["b"] + paired["c"] + paired["both_right"] + paired["both_wrong"]
            == HOLDOUT)
    assert paired["p_value"] == binomial_two_sided(paired["b"], paired["b"] + paired["c"])
    assert summary["code"]["code_change_allowed"] is code_change
    bundle = data.load(npz, test_fraction=HOLDOUT / IMAGES)
    predictions = {}
    for arch, name in NAMES.items():
        entry = zoo.info(name, zoo_dir=zoo_dir)
        assert entry.path == zoo_dir.resolve() / name
        assert {a.kind for a in entry.artifacts} == {"keras", "onnx"}
        assert tool.MARKER_TAG in entry.tags
        metric = next(m for m in entry.metrics if m.name == "top1_accuracy")
        assert metric.evaluation["load"] == {"test_fraction": HOLDOUT / IMAGES}
        assert metric.evaluation["images"] == HOLDOUT
        assert "not CIFAR-10's test set" in metric.split
        card = (entry.path / "README.md").read_text()
        assert "not CIFAR-10 test accuracy" in card and "JPEG round trip" in card
        assert "Compared at equal recipe" in card and "Unequal search budgets" in card
        assert "exact McNemar test" in card and "Wilson 95 % interval" in card
        assert f"b = {paired['b']}" in card and "no spread is known" not in card
        assert "<DataBundle>" not in card and "--stop-after-epochs" not in card
        assert ("Published with --allow-code-change" in card) is code_change
        assert any(m.name == "multiply_adds" and m.value > 0 for m in entry.metrics)
        training = entry.document["provenance"]["training"]
        assert training["by"] == "aca_keras" and training["wall_time_s"] > 0
        assert training["command"].startswith(
            f"python zoo/tools/make_cifar10_entries.py train --arch {arch} --work ")
        assert "completed epochs" in training["note"]
        ran = HASH_B if code_change and arch == "aca" else first_code["aca_keras_sha256"]
        assert ran in training["versions"]["aca_keras_code_sha256"]
        assert "TensorFlow thread" in training["hardware"]
        assert entry.dataset == "cifar10-jpeg" and entry.document["dataset"]["test_images"] == 40
        # verify with evaluate passes; the model measures exactly the card's figure again
        report = zoo.verify(name, zoo_dir=zoo_dir, evaluate=npz)
        assert report.ok, report.format()
        model = zoo.load(name, zoo_dir=zoo_dir)
        logits = model.inference_model().predict(bundle.x_test.astype("float32"), verbose=0)
        predictions[arch] = np.argmax(logits, axis=-1) == bundle.y_test
        correct = int(predictions[arch].sum())
        assert round(100 * correct / HOLDOUT, 2) == metric.value
        assert summary["entries"][arch]["correct"] == correct == paired["correct"][arch]
    assert paired["b"] == int(np.sum(predictions["aca"] & ~predictions["darts-v2"]))
    assert paired["c"] == int(np.sum(~predictions["aca"] & predictions["darts-v2"]))
    darts = zoo.info(NAMES["darts-v2"], zoo_dir=zoo_dir)
    assert darts.document["provenance"]["search"]["by"] == "paper"
    darts_split = next(m for m in darts.metrics if m.name == "top1_accuracy").split
    assert "did see them" in darts_split and "never seen" not in darts_split
    aca_card = (zoo_dir / NAMES["aca"] / "README.md").read_text()
    assert "Collapse monitor of the ACA search" in aca_card
    code, out = run(tool, capsys, "status", "--work", work)
    assert code == 0 and "publish:        done" in out and out.count("done:") >= 4
    assert "completed epoch(s)" in out and "vs the 8 CPU-hour budget" in out


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


@pytest.mark.slow  # about a minute on one thread: kept out of the default suite's budget
def test_trainings_publish_and_verify(tool, npz, tmp_path, capsys, monkeypatch):
    seen: dict = {"search_impl": lambda dataset, **kw: stand_in_search(**kw)}
    spy(monkeypatch, seen)
    work = tmp_path / "work"
    heldout = split(tool, capsys, npz, work, 1, *TINY_RECIPE)
    code, out = run(tool, capsys, "search", "--work", work, *TINY_SEARCH)
    assert code == 0 and "search: done" in out, out
    (data,) = seen["search"]
    assert data.num_train == 128 and data.x_test is None
    raw = np.load(npz)
    train_idx = np.load(work / "split_indices.npz")["train"]
    np.testing.assert_array_equal(data.x_train, raw["x"][train_idx[:128]])
    assert heldout["seed"] == 1
    stage = json.loads((work / "stages" / "search.json").read_text())
    assert stage["collapse"] == {"hessian": [[1, 3.5]], "final": {
        "epoch": 2, "skip_edges": 0, "parameter_free_edges": 1, "reduce_skip_edges": 0,
        "reduce_parameter_free_edges": 3}}
    check_trainings_and_entries(tool, npz, work, tmp_path / "zoo", seen, capsys, monkeypatch,
                                code_change=True)
    aca_card = (tmp_path / "zoo" / NAMES["aca"] / "README.md").read_text()
    assert "3.5 after epoch 1" in aca_card and "1 parameter-free edge(s)" in aca_card


@pytest.mark.slow
def test_whole_tool_end_to_end(tool, npz, tmp_path, capsys, monkeypatch):
    seen: dict = {}
    spy(monkeypatch, seen)
    work = tmp_path / "work"
    split(tool, capsys, npz, work, 1, *TINY_RECIPE)
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
    stage = json.loads((work / "stages" / "search.json").read_text())
    assert {k: v["session"] for k, v in stage["epochs"].items()} == {"1": 1, "2": 2}
    assert stage["scorer"] and stage["allocator"] and stage["ops"]  # search()'s defaults
    assert stage["collapse"]["final"]["epoch"] == 2 and stage["collapse"]["hessian"] == []
    assert not (work / "search" / "stage.json").exists()
    search_config = json.loads((work / "search" / "config.json").read_text())
    assert (search_config["eval_cells"], search_config["eval_channels"]) == (3, 4)  # recipe's
    assert len((work / "search" / "alphas.jsonl").read_text().splitlines()) == 2
    heldout_images = image_set(np.load(npz)["x"][heldout])
    assert len(seen["search"]) == 2
    for bundle in seen["search"]:
        assert bundle.num_train == 128 and not image_set(bundle.x_train) & heldout_images
    check_trainings_and_entries(tool, npz, work, tmp_path / "zoo", seen, capsys, monkeypatch)
    aca_card = (tmp_path / "zoo" / NAMES["aca"] / "README.md").read_text()
    assert "the Hessian eigenvalue was not measured (hessian_every 0)" in aca_card
