"""``aca_keras.search`` end to end on tiny settings: run directory, determinism, resume."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from aca_keras.errors import RunDirError
from aca_keras.io import checkpoint as ckpt
from aca_keras.searching.pipeline import search
from aca_keras.space.architecture import Architecture
from aca_keras.space.genotype import Genotype

TINY = dict(epochs=2, cells=3, channels=4, nodes=2, batch_size=16, eval_cells=3,
            eval_channels=4, score_batches=2, seed=11, verbose=0,
            hessian_every=0)  # the Hessian eigenvalue off: test_monitor, test_reliability


@pytest.fixture(scope="module")
def arrays():
    from aca_keras.data import loading as data

    bundle = data.load("digits")
    return bundle.x_train[:192], bundle.y_train[:192]


@pytest.fixture(scope="module")
def finished_run(arrays, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search") / "run"
    model = search(arrays, run_dir=run_dir, **TINY)
    return run_dir, model


def _final_alphas(run_dir) -> dict:
    lines = (run_dir / "alphas.jsonl").read_text().strip().splitlines()
    return json.loads(lines[-1])["alphas"]


def test_run_directory_holds_everything(finished_run):
    run_dir, model = finished_run
    for name in ("config.json", "history.csv", "alphas.jsonl", "checkpoint.npz",
                 "genotype.json", "architecture.json", "model.keras", "cell_normal.png",
                 "cell_reduce.png"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 11 and config["epochs"] == 2 and config["ops"] == "aca"
    assert config["versions"]["tensorflow"]
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # counted from 1, as alphas.jsonl
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("loss", "alpha_loss"))
    records = [json.loads(line) for line in (run_dir / "alphas.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert np.array(records[0]["alphas"]["normal"]).shape == (5, 7)
    assert records[0]["alphas"] != records[1]["alphas"]  # the alphas were trained
    assert ckpt.read_checkpoint_meta(run_dir / "checkpoint.npz")["epochs_done"] == 2


def test_derived_model_carries_the_searched_architecture(finished_run):
    run_dir, model = finished_run
    genotype = Genotype.from_json((run_dir / "genotype.json").read_text())
    architecture = Architecture.load(run_dir / "architecture.json")
    assert model.architecture == architecture
    assert architecture.to_genotype() == genotype
    ops = [op for op, _ in genotype.normal + genotype.reduce]
    assert "skip_connect" not in ops and "none" not in ops
    assert all(0 <= k <= 4 for k in architecture.normal.channels + architecture.reduce.channels)
    assert architecture.provenance["allocator"] == "adaptive"
    assert architecture.provenance["scorer"] == "taylor"
    restored = keras.saving.load_model(run_dir / "model.keras")
    assert restored.architecture == architecture


@pytest.mark.slow  # 22 s; test_reliability checks reproducibility on a smaller search
def test_same_seed_gives_the_same_search(arrays, finished_run, tmp_path):
    run_dir, _ = finished_run
    search(arrays, run_dir=tmp_path / "again", **TINY)
    assert _final_alphas(tmp_path / "again") == _final_alphas(run_dir)
    assert (tmp_path / "again" / "genotype.json").read_text() == \
        (run_dir / "genotype.json").read_text()


class _Interrupt(keras.callbacks.Callback):
    """Simulates a kill in the middle of the second epoch (after epoch 1's checkpoint)."""

    def on_train_batch_begin(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() == 8:  # 6 steps per epoch here
            raise KeyboardInterrupt


# 70 s; test_reliability's test_search_killed_mid_epoch_resumes_exactly checks the same resume
# (from the epoch-1 checkpoint, after a SIGKILL) on a smaller op set with the monitor on
@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(arrays, finished_run, tmp_path):
    run_dir, _ = finished_run
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        search(arrays, run_dir=partial, callbacks=[_Interrupt()], **TINY)
    assert ckpt.read_checkpoint_meta(partial / "checkpoint.npz")["epochs_done"] == 1
    assert not (partial / "genotype.json").exists()
    search(arrays, run_dir=partial, resume=True, verbose=0)
    assert _final_alphas(partial) == _final_alphas(run_dir)
    assert len((partial / "alphas.jsonl").read_text().splitlines()) == 2
    assert len((partial / "history.csv").read_text().splitlines()) == 3


def test_bad_runs_are_refused_clearly(arrays, finished_run, tmp_path):
    run_dir, _ = finished_run
    with pytest.raises(RunDirError, match="already holds a run"):
        search(arrays, run_dir=run_dir, **TINY)
    with pytest.raises(RunDirError, match="not a directory"):
        search(arrays, run_dir=tmp_path / "missing", resume=True)
    with pytest.raises(RunDirError, match="pass the same data"):
        search("digits", run_dir=run_dir, resume=True)
    with pytest.raises(ValueError, match="order"):
        search(arrays, run_dir=tmp_path / "o", **{**TINY, "order": 3})
    with pytest.raises(ValueError, match="allocator"):
        search(arrays, run_dir=tmp_path / "a", **{**TINY, "allocator": "greedy"})
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text("{not json")
    with pytest.raises(RunDirError, match="not valid JSON"):
        search(arrays, run_dir=tmp_path / "corrupt", resume=True)


def test_a_run_written_before_the_grouped_layout_resumes_in_its_own_layout(arrays, tmp_path):
    """An old run directory (config.json without ``layout``, a per-edge checkpoint) resumes
    in the per-edge layout, as it was written, and finishes."""
    run_dir = tmp_path / "old"
    search(arrays, run_dir=run_dir, layout="per_edge", **{**TINY, "epochs": 1})
    config = json.loads((run_dir / "config.json").read_text())
    assert config["layout"] == "per_edge"
    del config["layout"]  # as aca_keras wrote it before the grouped layout
    (run_dir / "config.json").write_text(json.dumps(config))
    model = search(arrays, run_dir=run_dir, resume=True, epochs=2, verbose=0)
    assert ckpt.read_checkpoint_meta(run_dir / "checkpoint.npz")["epochs_done"] == 2
    assert json.loads((run_dir / "config.json").read_text())["layout"] == "per_edge"
    assert model.count_params() > 0
