"""The robustness study script: a one-cell grid end to end, resumability, the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import script_module


@pytest.fixture(scope="module")
def study():
    with script_module("studies", "robustness") as module:
        yield module


@pytest.fixture
def sample(tmp_path) -> Path:
    """A CIFAR-shaped stand-in for the sample: 200 images 32x32x3 uint8, 10 classes."""
    rng = np.random.default_rng(0)
    y = np.arange(200) % 10
    x = rng.integers(0, 256, (200, 32, 32, 3)).astype(np.uint8)
    x[..., 0] = np.minimum(255, x[..., 0] // 2 + 12 * y[:, None, None])  # some signal
    path = tmp_path / "train.npz"
    np.savez(path, x=x, y=y.astype(np.uint8))
    return path


def test_grids_are_well_formed(study):
    full = study.GRIDS["full"]
    cells = study.grid_cells(full)
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    # the sweep: every variant x method x epochs x seed; the ablation adds 3 allocators
    sweep = len(full.variants) * len(full.methods) * len(full.epochs) * len(full.seeds)
    assert len(cells) == sweep + 3 * len(full.variants) * len(full.seeds)
    assert len(full.seeds) >= 2
    assert {c.allocator for c in cells if c.method == "darts"} == {"none"}
    assert {c.ops for c in cells if c.method == "aca"} == {"aca"}
    shorter = study.with_epochs(full, [4, 2])
    assert shorter.epochs == (2, 4) and shorter.ablation_epochs == 4
    assert len(study.grid_cells(study.GRIDS["tiny"])) == 1


def test_data_split_is_fixed_and_downscaled(study, sample):
    grid = study.GRIDS["tiny"]
    a = study.load_study_data(sample, grid)
    b = study.load_study_data(sample, grid)
    assert a.input_shape == (8, 8, 3) and a.num_test == grid.test_size
    assert a.num_train == grid.train_subset
    np.testing.assert_array_equal(a.x_test, b.x_test)
    raw = np.load(sample)["x"][:1].astype(np.float64)
    assert raw.reshape(1, 8, 4, 8, 4, 3).mean(axis=(2, 4)).shape == (1, 8, 8, 3)


def test_one_cell_grid_runs_once_and_reports(study, sample, tmp_path, monkeypatch):
    results = tmp_path / "results"
    assert study.main(["--grid", "tiny", "--data", str(sample), "--results", str(results)]) == 0
    files = sorted(results.glob("tiny-*.json"))
    assert [f.name for f in files] == ["tiny-pc_darts-aca-adaptive-e1-s0.json"]
    record = json.loads(files[0].read_text())
    assert record["variant"] == "pc_darts" and record["ops"] == "aca"
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["params"] > 0
    assert record["skip_connect"] == 0  # the aca op set has no skip_connect
    assert 0 <= record["identity_channels"] <= 4 * (len(record["k_normal"]) +
                                                   len(record["k_reduce"]))
    arch = json.loads((results / "runs" / "tiny-pc_darts-aca-e1-s0" /
                       "architecture.json").read_text())
    assert arch["provenance"]["variant"] == "pc_darts"

    # a second call finds the cell finished and reruns nothing
    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was rerun")

    monkeypatch.setattr(study, "run_cell", refuse)
    mtime = files[0].stat().st_mtime_ns
    assert study.main(["--grid", "tiny", "--data", str(sample), "--results", str(results)]) == 0
    assert files[0].stat().st_mtime_ns == mtime

    readme = tmp_path / "README.md"
    readme.write_text(f"# Study\n\nhand-written intro\n\n{study.BEGIN}\nold\n{study.END}\n\ntail\n")
    assert study.main(["--grid", "tiny", "--results", str(results), "--readme", str(readme),
                       "--report"]) == 0
    text = readme.read_text()
    assert "hand-written intro" in text and "tail" in text and "\nold\n" not in text
    assert "| pc_darts | ACA | 1 | 1 |" in text
    with open(results / "tiny-robustness.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["variant"] == "pc_darts"
    assert (results / "tiny-robustness.png").read_bytes()[:4] == b"\x89PNG"
    # the per-epoch collapse signals come from the search's alphas.jsonl
    with open(results / "tiny-trajectories.csv") as handle:
        steps = list(csv.DictReader(handle))
    assert [(r["run"], r["epoch"], r["ops"]) for r in steps] == [
        ("tiny-pc_darts-aca-e1-s0", "1", "aca")]
    genotype = json.loads((results / "runs" / "tiny-pc_darts-aca-e1-s0" /
                           "alphas.jsonl").read_text().splitlines()[0])["genotype"]
    free = sum(op in study.PARAMETER_FREE for op, _ in genotype["normal"])
    assert int(steps[0]["parameter_free_normal"]) == free
    assert steps[0]["skip_connect"] == "0" and steps[0]["skip_weight_normal"] == "nan"
    assert (results / "tiny-trajectories.png").read_bytes()[:4] == b"\x89PNG"
    assert "**Search trajectories**" in text and "| pc_darts | ACA | 1 | 1 |" in text


def test_trajectories_count_skips_and_weights(study, tmp_path):
    """Hand-made alphas.jsonl: the skip counts and the mean softmax weight of skip_connect."""
    run = tmp_path / "runs" / "g-darts-darts-e2-s0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"ops": "darts", "variant": "darts",
                                                 "seed": 1000}))
    alphas = np.zeros((2, 8))
    alphas[0, 3] = np.log(4.0)  # skip_connect is column 3 of the darts set: weight 4/11
    genotypes = [[["skip_connect", 0], ["sep_conv_3x3", 1]],
                 [["skip_connect", 0], ["avg_pool_3x3", 1]]]
    lines = [json.dumps({"epoch": e + 1, "alphas": {"normal": alphas.tolist()},
                         "genotype": {"normal": genotypes[e],
                                      "reduce": [["skip_connect", 1], ["max_pool_3x3", 0]]}})
             for e in range(2)]
    (run / "alphas.jsonl").write_text("\n".join(lines) + "\n")
    rows = study.trajectories(tmp_path, "g")
    assert [(r["epoch"], r["skip_connect"], r["skip_connect_normal"],
             r["parameter_free_normal"]) for r in rows] == [(1, 2, 1, 1), (2, 2, 1, 2)]
    expected = (4 / 11 + 1 / 8) / 2
    assert rows[0]["skip_weight_normal"] == pytest.approx(expected)
    table = study.trajectory_table(rows, [2])
    assert "| darts | DARTS (skip) | 2 | 1 | 2 | 1 | 2 | 0.244 |" in table
