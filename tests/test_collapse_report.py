"""The report phase of study v2 (studies/collapse.py): collapse table, paired tests, README."""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import script_module

STUDY = Path(__file__).resolve().parents[1] / "studies" / "collapse.py"


@pytest.fixture(scope="module")
def study():
    with script_module("studies", "collapse") as module:
        yield module


def _line(epoch, skip, eigen=None, acc=0.5, alpha_acc=0.4):
    return {"epoch": epoch, "metrics": {"accuracy": acc, "alpha_accuracy": alpha_acc,
                                        "loss": 1.0, "alpha_loss": 1.2},
            "hessian_eigenvalue": eigen, "skip_edges": skip, "parameter_free_edges": skip + 1,
            "mean_skip_weight": 0.3, "reduce_skip_edges": 0}


def _write_search(results: Path, key: str, lines, tail: str = "") -> None:
    run = results / "runs" / key
    run.mkdir(parents=True)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run / "alphas.jsonl").write_text(text + tail)


def _darts_lines(last: int):
    """Skip edges rise by one every 2 epochs up to 7; the Hessian every 5 epochs."""
    return [_line(e, min(7, e // 2), eigen=float(e) if e % 5 == 0 else None,
                  acc=e / 100, alpha_acc=e / 200) for e in range(1, last + 1)]


def _genotype(normal_ops=None, normal=None):
    """A 4-node genotype dict: normal-cell pairs ``normal`` (default: ``normal_ops`` on inputs
    0 and 1 of every node); the reduction cell all sep_conv_3x3 on inputs 0 and 1."""
    if normal is None:
        ops = normal_ops or ["sep_conv_3x3"] * 8
        normal = [[op, i % 2] for i, op in enumerate(ops)]
    return {"format": "aca_keras.genotype", "version": 1, "normal": normal,
            "normal_concat": [2, 3, 4, 5],
            "reduce": [["sep_conv_3x3", i % 2] for i in range(8)],
            "reduce_concat": [2, 3, 4, 5], "edges_per_node": 2}


def _record(study, method, epoch, seed, correct, **extra):
    correct = np.asarray(correct, dtype=bool)
    record = {"format": study.FORMAT, "version": 1, "kind": "train",
              "key": f"v2-train-{method}-e{epoch}-s{seed}", "method": method,
              "epoch": epoch, "seed": seed, "search": study.METHODS[method][0],
              "accuracy": float(correct.mean()),
              "correct": base64.b64encode(np.packbits(correct)).decode("ascii"),
              "test_images": int(correct.size), "k_normal": [8] * 8, "k_reduce": [8] * 8,
              "k_second_batches": None, "skip_connect_normal": 2, "params": 1234,
              "seconds": 1.0,
              "genotype": _genotype(["skip_connect"] * 2 + ["sep_conv_3x3"] * 6),
              "split": {"train": [0, 8], "test": [8, 12]},
              "recipe": {"cells": 8, "channels": 16, "epochs": 30, "batch_size": 96,
                         "cutout": 8}}
    record.update(extra)
    return record


def test_collapse_rows_pick_snapshots_last_epoch_and_latest_eigenvalue(study):
    lines = _darts_lines(37)
    rows = study.collapse_rows(lines, (25, 50, 100))
    assert [r["epoch"] for r in rows] == [25, 37]
    assert [r["snapshot"] for r in rows] == [True, False]
    assert rows[0]["hessian_eigenvalue"] == 25.0 and rows[0]["hessian_epoch"] == 25
    assert rows[1]["hessian_eigenvalue"] == 35.0 and rows[1]["hessian_epoch"] == 35
    assert rows[0]["skip_edges"] == 7 and rows[0]["parameter_free_edges"] == 8
    assert rows[1]["accuracy"] == pytest.approx(0.37)
    assert rows[1]["alpha_accuracy"] == pytest.approx(0.185)
    full = study.collapse_rows(_darts_lines(100), (25, 50, 100))
    assert [r["epoch"] for r in full] == [25, 50, 100]
    early = study.collapse_rows(_darts_lines(4), (25, 50, 100))
    assert [r["epoch"] for r in early] == [4]
    assert early[0]["hessian_eigenvalue"] is None
    half = study.collapse_first_half(lines)
    assert half["met"] and half["first_epoch"] == 8 and half["last_skip"] == 7
    assert half["held_from"] == 8
    assert not study.collapse_first_half(_darts_lines(7))["met"]
    # 5 skip edges at epoch 1 (near-uniform alphas), then fewer, then 4+ from epoch 6 on
    bumpy = [_line(e, s) for e, s in enumerate([5, 1, 2, 4, 3, 4, 4, 6], start=1)]
    half = study.collapse_first_half(bumpy)
    assert (half["met"], half["first_epoch"], half["held_from"]) == (True, 1, 6)
    dropped = study.collapse_first_half(bumpy + [_line(9, 3)])
    assert (dropped["met"], dropped["held_from"]) == (False, None)


def test_read_alphas_last_line_wins_and_skips_a_torn_line(study, tmp_path):
    lines = _darts_lines(3) + [_line(3, 5, eigen=9.0)]
    _write_search(tmp_path, "k", lines, tail='{"epoch": 4, "metr')
    read = study.read_alphas(tmp_path / "runs" / "k" / "alphas.jsonl")
    assert [line["epoch"] for line in read] == [1, 2, 3]
    assert read[-1]["skip_edges"] == 5


def test_mcnemar_matches_hand_computed_value(study):
    # 10 images only A gets right, 2 only B, 50 both, 38 neither
    a = np.array([1] * 10 + [0] * 2 + [1] * 50 + [0] * 38, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 50 + [0] * 38, dtype=bool)
    b_count, c_count, p = study.mcnemar_exact(a, b)
    assert (b_count, c_count) == (10, 2)
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2**12
    assert expected == pytest.approx(0.0386, abs=1e-4)
    assert p == pytest.approx(expected, rel=1e-9)
    assert study.mcnemar_exact(b, a)[2] == pytest.approx(expected, rel=1e-9)
    assert study.mcnemar_exact(a, a)[2] == 1.0


def test_paired_bootstrap_contains_true_difference_and_is_reproducible(study):
    rng = np.random.default_rng(5)
    n = 4000
    truth = rng.random(n) < 0.7
    a = truth.copy()
    b = truth.copy()
    flip = rng.choice(n, 300, replace=False)
    b[flip[:200]] = ~b[flip[:200]]  # B differs from A on 300 images
    a[flip[200:]] = ~a[flip[200:]]
    diff, low, high = study.paired_bootstrap(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert low < diff < high
    assert high - low < 0.03
    assert study.paired_bootstrap(a, b) == (diff, low, high)
    stacked = study.paired_bootstrap(np.stack([a, a]), np.stack([b, b]))
    assert stacked[0] == pytest.approx(diff)


def test_report_inserts_markers_once_and_replaces_them(study, tmp_path):
    config = study.CONFIGS["v2"]
    results = tmp_path / "results"
    _write_search(results, "v2-search-darts-s3-s1", _darts_lines(30))
    readme = tmp_path / "README.md"
    readme.write_text("# Studies\n\n## Study v2 (issue 18)\n\ntext\n\n---\n\n"
                      "# Study v1 (old)\n\nold tables\n")
    study.report(results, readme, config, figure=False)
    text = readme.read_text()
    assert text.count(study.REPORT_START) == 1 and text.count(study.REPORT_END) == 1
    assert text.index("text") < text.index(study.REPORT_START)
    assert text.index(study.REPORT_END) < text.index("\n---\n") < text.index("# Study v1")
    assert "| `darts-s3` s1 | 30 (last) |" in text
    _write_search(results, "v2-search-aca-s3-s1", [_line(1, 0, eigen=3.0)])
    study.report(results, readme, config, figure=False)
    again = readme.read_text()
    assert again.count(study.REPORT_START) == 1 and again.count(study.REPORT_END) == 1
    assert "| `aca-s3` s1 | 1 (last) |" in again
    assert again.endswith("old tables\n") and "text\n" in again
    study.report(results, readme, config, figure=False)
    assert readme.read_text() == again


def test_partial_results_give_the_collapse_table_and_say_what_is_missing(study, tmp_path):
    config = study.CONFIGS["v2"]
    _write_search(tmp_path, "v2-search-darts-s3-s1", _darts_lines(26))
    block = study.report(tmp_path, None, config, figure=False)
    assert "| `darts-s3` s1 | 25 (25 %) | 7 / 8 |" in block
    assert "Retraining results missing: none of the 42 training records exists yet." in block
    assert "`v2-search-aca-s3-s1`: not started" in block
    assert "snapshots not reached yet: 50, 100" in block


def test_report_with_training_records(study, tmp_path):
    config = study.CONFIGS["v2"]
    rng = np.random.default_rng(0)
    final = rng.random(1000) < 0.6
    early = final.copy()
    early[:100] = True  # the 25 % snapshot is better: collapse's second half
    taylor = final.copy()
    taylor[100:150] = True
    records = [
        _record(study, "darts-s3", 100, 1, final),
        _record(study, "darts-s3", 25, 1, early),
        _record(study, "taylor", 100, 1, taylor, k_second_batches={
            "normal": [6] * 8, "reduce": [8] * 8}),
        _record(study, "taylor", 25, 1, early),
    ]
    for record in records:
        (tmp_path / f"{record['key']}.json").write_text(json.dumps(record))
    assert study.k_stability(records[2]) == pytest.approx(1.0)
    assert study.k_stability(records[0]) is None
    block = study.report(tmp_path, None, config, figure=False)
    assert "| `darts-s3` | 100 (100 %) |" in block
    assert "| `taylor` | 100 (100 %) |" in block and "| 1.00 |" in block
    assert "Retraining results missing: 38 of 42 units" in block
    # taylor along its search: compared with its own 25 % snapshot and with DARTS at 25 %,
    # but the collapse verdict speaks of the DARTS searches only
    row = next(line for line in block.splitlines()
               if line.startswith("| `taylor` e100 vs `taylor` e25 | s1 |"))
    b, c = int(row.split("|")[8]), int(row.split("|")[9])  # after the seeds column
    assert (b, c) == (int(np.sum(taylor & ~early)), int(np.sum(early & ~taylor)))
    assert "| `taylor` e25 vs `darts-s3` e25 | s1 |" in block
    assert "* `darts-s3` e100 s1: lower than e25" in block
    assert "* `taylor` e100 s1" not in block
    row = next(line for line in block.splitlines()
               if line.startswith("| `darts-s3` e100 vs `darts-s3` e25 | s1 |"))
    b, c = int(row.split("|")[8]), int(row.split("|")[9])  # after the seeds column
    assert (b, c) == (0, int(np.sum(~final[:100])))
    assert "`taylor` e100 vs `darts-s3` e100" in block


def test_every_aca_method_is_paired_with_darts_the_default_scorer_and_the_control(study):
    config = study.CONFIGS["v2"]
    pairs = study.comparison_pairs(config)
    aca = [m for m, (kind, *_r) in study.METHODS.items() if kind == "aca-s3"]
    for method in aca:
        assert ((method, 100), ("darts-s3", 100)) in pairs
        if method not in ("taylor", "none"):
            assert ((method, 100), ("taylor", 100)) in pairs
        if method != "none":
            assert ((method, 100), ("none", 100)) in pairs
    # each comparison once, in one direction
    assert not {(b, a) for a, b in pairs} & set(pairs)
    assert (("taylor", 100), ("taylor", 100)) not in pairs
    assert (("refill-w", 100), ("refill", 100)) in pairs
    assert (("darts-s3", 100), ("darts-s3", 25)) in pairs
    # the trajectory methods against their own earlier snapshots, and ACA against DARTS there
    for method in study.TRAJECTORY_METHODS:
        snaps = config.snapshot_epochs(study.METHODS[method][0])
        assert {((method, snaps[-1]), (method, e)) for e in snaps[:-1]} <= set(pairs)
    for method in ("taylor", "refill"):
        assert ((method, 25), ("darts-s3", 25)) in pairs
        assert ((method, 50), ("darts-s3", 50)) in pairs
    # ACA at the end against DARTS stopped early (its 50 % snapshot), last
    assert pairs[-1] == study.early_stop_pair(config) == (("taylor", 100), ("darts-s3", 50))
    # 6 vs DARTS, 4 vs taylor, 5 vs none, refill-w vs refill, 4 x 2 snapshot pairs,
    # 2 x 2 ACA vs DARTS at the earlier snapshots, the early-stopped DARTS pair
    assert len(pairs) == len(set(pairs)) == 15 + 1 + 8 + 4 + 1 == 29
    # decided before the results: the collapse criterion's second half (both DARTS searches'
    # end against their 25 % and 50 % snapshots) and the defaults rule's two candidates
    assert study.preregistered_pairs(config) == [
        (("darts-s3", 100), ("darts-s3", 25)), (("darts-s3", 100), ("darts-s3", 50)),
        (("darts-full", 60), ("darts-full", 15)), (("darts-full", 60), ("darts-full", 30)),
        (("refill", 100), ("taylor", 100)), (("refill-w", 100), ("taylor", 100))]
    assert set(study.preregistered_pairs(config)) <= set(pairs)


def test_command_line_report_imports_no_tensorflow_and_draws_the_figure(tmp_path):
    import subprocess

    _write_search(tmp_path, "v2-search-darts-s3-s1", _darts_lines(12))
    code = ("import runpy, sys\n"
            f"sys.argv = ['collapse.py', 'report', '--results', {str(tmp_path)!r}, "
            "'--no-readme']\n"
            "try:\n"
            f"    runpy.run_path({str(STUDY)!r}, run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('TENSORFLOW' if 'tensorflow' in sys.modules else 'NO-TENSORFLOW')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    assert "| `darts-s3` s1 | 12 (last) |" in done.stdout
    assert done.stdout.strip().endswith("NO-TENSORFLOW")
    pytest.importorskip("matplotlib")
    assert (tmp_path / "collapse-report.png").stat().st_size > 0


def _correct(rng, n, accuracy):
    """n test images, exactly round(accuracy * n) right, in a random order."""
    right = np.zeros(n, dtype=bool)
    right[: round(accuracy * n)] = True
    return rng.permutation(right)


def _decision_records(study, accuracies):
    """Records at 100 % for ``{method: [accuracy of seed 1, 2, 3]}``, each network's right
    images drawn independently (as two retrainings disagree on many images)."""
    config = study.CONFIGS["v2"]
    end, n = config.epochs("aca-s3"), 4000
    rng = np.random.default_rng(0)
    records = {}
    for i, seed in enumerate(config.seeds):
        for method, acc in accuracies.items():
            records[(method, end, seed)] = _record(study, method, end, seed,
                                                   _correct(rng, n, acc[i]))
    return config, records


def test_defaults_decision_applies_the_written_rule(study):
    # refill-w ahead by 3 points on every seed: CI above 0, 3 of 3 ahead -> wins;
    # refill ahead on one seed only and on average about even -> does not qualify
    config, records = _decision_records(study, {
        "taylor": [0.70, 0.69, 0.71], "refill": [0.72, 0.68, 0.70],
        "refill-w": [0.73, 0.72, 0.74]})
    d = study.defaults_decision(config, records)
    assert d["final"] and d["winner"] == "refill-w"
    rw, r = d["candidates"]["refill-w"], d["candidates"]["refill"]
    assert rw["per_seed"] == pytest.approx([0.03, 0.03, 0.03])
    assert rw["difference"] == pytest.approx(0.03) and rw["ci"][0] > 0 and rw["qualifies"]
    assert r["seeds_ahead"] == 1 and not r["qualifies"]
    assert r["difference"] == pytest.approx((0.02 - 0.01 - 0.01) / 3)
    text = "\n".join(study.decision_section(config, records))
    assert "**Decision: `refill-w`** becomes the default (refill scores, sorted pooling, " \
           "op weight divided out)" in text


def test_defaults_decision_needs_two_seeds_ahead_and_a_ci_above_zero(study):
    # +6 points on one seed and -1 on the two others: mean +1.3 but ahead on 1 of 3
    config, records = _decision_records(study, {
        "taylor": [0.70, 0.70, 0.70], "refill": [0.76, 0.69, 0.69]})
    d = study.defaults_decision(config, records)
    assert d["candidates"]["refill"]["difference"] == pytest.approx(0.04 / 3)
    assert d["candidates"]["refill"]["ci"][0] > 0  # (a) holds: (b) is what rules it out
    assert d["candidates"]["refill"]["seeds_ahead"] == 1
    assert not d["candidates"]["refill"]["qualifies"]
    # refill-w has no record: the decision is not final, no winner named
    assert not d["final"] and d["winner"] is None
    assert "Not decided yet" in "\n".join(study.decision_section(config, records))
    # ahead on 2 of 3 by half a point, behind by half on the third: the CI (about +/- 1.2
    # points with 4,000 images a seed) includes 0 -> taylor stays once everything is in
    config, records = _decision_records(study, {
        "taylor": [0.70, 0.70, 0.70], "refill": [0.705, 0.705, 0.695],
        "refill-w": [0.70, 0.695, 0.70]})
    d = study.defaults_decision(config, records)
    assert d["candidates"]["refill"]["seeds_ahead"] == 2
    assert d["candidates"]["refill"]["ci"][0] < 0 < d["candidates"]["refill"]["ci"][1]
    assert d["final"] and d["winner"] == "taylor"
    assert "**Decision: `taylor`** stays the default" in \
        "\n".join(study.decision_section(config, records))


def test_defaults_decision_both_qualify_larger_wins_an_exact_tie_keeps_taylor(study):
    # both ahead on every seed, refill by 4 points and refill-w by 3: both qualify, refill wins
    config, records = _decision_records(study, {
        "taylor": [0.70, 0.70, 0.70], "refill": [0.74, 0.74, 0.74],
        "refill-w": [0.73, 0.73, 0.73]})
    d = study.defaults_decision(config, records)
    assert d["candidates"]["refill"]["qualifies"] and d["candidates"]["refill-w"]["qualifies"]
    assert d["winner"] == "refill" and not d["tie"]
    # the same 3-point lead for both: an exact tie of the mean differences -> taylor stays
    config, records = _decision_records(study, {
        "taylor": [0.70, 0.70, 0.70], "refill": [0.73, 0.73, 0.73],
        "refill-w": [0.73, 0.73, 0.73]})
    d = study.defaults_decision(config, records)
    assert d["candidates"]["refill"]["difference"] == d["candidates"]["refill-w"]["difference"]
    assert d["tie"] and d["winner"] == "taylor"
    assert "stays the default (candidates tied)" in "\n".join(
        study.decision_section(config, records))
    # an equal accuracy on a seed is not "ahead": 2 equal seeds and 1 ahead -> 1 of 3
    config, records = _decision_records(study, {
        "taylor": [0.70, 0.70, 0.70], "refill": [0.70, 0.70, 0.76]})
    c = study.defaults_decision(config, records)["candidates"]["refill"]
    assert c["per_seed"] == pytest.approx([0.0, 0.0, 0.06]) and c["seeds_ahead"] == 1
    assert not c["qualifies"]
    assert "ahead on 1 of 3 seeds: does not meet the rule." in "\n".join(
        study.decision_section(config, records))


def test_claim_lets_one_process_run_a_unit_and_releases_it(study, tmp_path):
    with study.claim(tmp_path, "v2-train-taylor-e100-s1") as mine:
        assert mine
        held = tmp_path / "claims" / "v2-train-taylor-e100-s1"
        assert held.read_text() == str(os.getpid())
    assert not held.exists()  # released after the unit


def test_claim_held_by_a_live_process_is_refused_and_a_dead_ones_is_taken_over(study, tmp_path):
    folder = tmp_path / "claims"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / "unit").write_text(str(holder.pid))
        with study.claim(tmp_path, "unit") as mine:
            assert not mine  # a live process runs it: skip
        assert (folder / "unit").read_text() == str(holder.pid)  # left untouched
    finally:
        holder.kill()
        holder.wait()
    with study.claim(tmp_path, "unit") as mine:  # its holder is gone: stale
        assert mine
        assert (folder / "unit").read_text() == str(os.getpid())
    assert not (folder / "unit").exists()


def test_claim_is_released_when_the_unit_fails(study, tmp_path):
    with pytest.raises(RuntimeError), study.claim(tmp_path, "unit") as mine:
        assert mine
        raise RuntimeError("training diverged")
    assert not (tmp_path / "claims" / "unit").exists()


@pytest.mark.slow
def test_train_processes_share_a_results_folder_through_claims(study, tmp_path,
                                                              cifar_sample_path):
    """End to end on the tiny config: a unit claimed by a live process is skipped, the others
    are retrained once, claims are released, and a second run changes nothing."""
    data = str(cifar_sample_path)
    results = tmp_path / "results"
    common = ["--config", "tiny", "--data", data, "--results", str(results)]
    assert study.main(["search", "--only", "aca-s3", *common]) == 0
    assert (results / "tiny-search-aca-s3-s1.json").is_file()
    (results / "claims").mkdir(exist_ok=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (results / "claims" / "tiny-train-none-e2-s1").write_text(str(other.pid))
        assert study.main(["train", "--only", "taylor,none", *common]) == 0
    finally:
        other.kill()
        other.wait()
    assert not (results / "tiny-train-none-e2-s1.json").exists()  # the other process's
    record = json.loads((results / "tiny-train-taylor-e2-s1.json").read_text())
    assert 0.0 <= record["accuracy"] <= 1.0 and record["test_images"] == 200
    assert sorted(p.name for p in (results / "claims").iterdir()) == ["tiny-train-none-e2-s1"]
    before = (results / "tiny-train-taylor-e2-s1.json").stat().st_mtime_ns
    # the holder is gone: its claim is stale, so this run takes the unit over
    assert study.main(["train", "--only", "taylor,none", *common]) == 0
    assert json.loads((results / "tiny-train-none-e2-s1.json").read_text())["method"] == "none"
    assert (results / "tiny-train-taylor-e2-s1.json").stat().st_mtime_ns == before
    assert list((results / "claims").iterdir()) == []


def test_identity_edges_count_skip_connect_and_zero_k_edges(study):
    # node 1's pairs listed input 2 first: k_normal follows the sorted edges (node, input):
    # (0,0) (0,1) (1,0) (1,2) (2,1) (2,3) (3,0) (3,4)
    normal = [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 2],
              ["skip_connect", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 3],
              ["skip_connect", 0], ["sep_conv_3x3", 4]]
    record = _record(study, "darts-s3", 100, 1, [True, False], genotype=_genotype(normal=normal),
                     k_normal=[8, 0, 8, 0, 3, 0, 0, 8])
    # skip edges (1,0) and (3,0); k_e = 0 on (0,1), (1,2), (2,3); (3,0) is a skip edge with
    # k_e = 0 and counts once
    assert study.identity_edges(record) == {"skip": 2, "zero_k": 3, "identity": 5, "edges": 8}
    # the package's own count of pure-identity edges agrees (no TensorFlow: space/ only)
    architecture = study.architecture_from_record(record, study.CONFIGS["v2"])
    assert architecture.effective_skip_count["normal"] == 5
    assert architecture.normal.channels == (8, 0, 8, 0, 3, 0, 0, 8)
    allocated = _record(study, "taylor", 100, 2, [True, False], genotype=_genotype(),
                        k_normal=[0, 8, 6, 0, 0, 0, 0, 1])
    assert study.identity_edges(allocated) == {"skip": 0, "zero_k": 5, "identity": 5,
                                               "edges": 8}
    plain = _record(study, "taylor", 100, 1, [True, False], genotype=_genotype(),
                    k_normal=[8, 7, 6, 8, 0, 0, 8, 0])
    assert study.identity_edges(plain)["identity"] == 3
    records = {("darts-s3", 100, 1): record, ("taylor", 100, 1): plain,
               ("taylor", 100, 2): allocated}
    text = "\n".join(study.identity_section(study.CONFIGS["v2"], records))
    assert "| `darts-s3` | 100 | 2 + 3 = 5 | — | — | 1 of 1 |" in text
    assert "| `taylor` | 100 | 0 + 3 = 3 | 0 + 5 = 5 | — | 1 of 2 |" in text
    assert ("Networks with 4+ of 8 identity edges: `darts-s3` e100 s1 (5: skip_connect, "
            "k_e = 0); `taylor` e100 s2 (5: k_e = 0).") in text
    with pytest.raises(ValueError, match="7 k_normal values for 8"):
        study.identity_edges({**plain, "k_normal": [8] * 7})


def test_seed_interval_by_hand(study):
    # per-seed differences 1, 2 and 3 points: mean 2, sd 1, t_{0.975, 2} = 4.3027,
    # half-width 4.3027 / sqrt(3) = 2.4841 points
    low, high = study.seed_interval([0.01, 0.02, 0.03])
    assert (low, high) == pytest.approx((0.02 - 0.024841377, 0.02 + 0.024841377), abs=1e-9)
    assert study.seed_interval([0.01]) is None


def _seed_records(study, accuracy_by_key, n=1000):
    """Records whose right images are nested: a network right on its first
    round(accuracy * n) images, so A - B per seed is exactly the accuracy difference."""
    records = {}
    for (method, epoch), accuracies in accuracy_by_key.items():
        for seed, accuracy in zip((1, 2, 3), accuracies):
            correct = np.arange(n) < round(accuracy * n)
            records[(method, epoch, seed)] = _record(study, method, epoch, seed, correct)
    return records


def test_pooled_rows_carry_the_between_seed_interval_and_the_early_stop(study, tmp_path):
    config = study.CONFIGS["v2"]
    records = _seed_records(study, {
        ("taylor", 100): [0.61, 0.62, 0.63],      # +1, +2, +3 points over DARTS at 100 %
        ("darts-s3", 100): [0.60, 0.60, 0.60],
        ("darts-s3", 50): [0.615, 0.62, 0.62],    # DARTS's best snapshot by its seed mean
        ("darts-s3", 25): [0.61, 0.61, 0.61]})
    for record in records.values():
        (tmp_path / f"{record['key']}.json").write_text(json.dumps(record))
    block = study.report(tmp_path, None, config, figure=False)
    row = next(line for line in block.splitlines()
               if line.startswith("| `taylor` e100 vs `darts-s3` e100 | all |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[4] == "+0.0200"
    assert cells[6] == "[-0.0048, +0.0448]"  # 2 -/+ 2.48 points
    low = float(cells[5][1:].split(",")[0])
    assert low > 0  # the bootstrap over the images excludes zero, the seeds do not
    per_seed = next(line for line in block.splitlines()
                    if line.startswith("| `taylor` e100 vs `darts-s3` e100 | s1 |"))
    assert [c.strip() for c in per_seed.split("|")[1:-1]][6] == ""
    # DARTS's own degradation: -1.5, -2, -2 points against its 50 % snapshot; between seeds
    # mean -1.8333, sd 0.2887 -> half-width 4.3027 * 0.2887 / sqrt(3) = 0.7172 points
    row = next(line for line in block.splitlines()
               if line.startswith("| `darts-s3` e100 vs `darts-s3` e50 | all |"))
    assert [c.strip() for c in row.split("|")[1:-1]][6] == "[-0.0255, -0.0112]"
    assert ("exclude zero by the between-seed t-interval: `darts-s3` e100 vs `darts-s3` e25 "
            "-0.0100 [-0.0100, -0.0100]; `darts-s3` e100 vs `darts-s3` e50 -0.0183 "
            "[-0.0255, -0.0112].") in block
    assert ("exclude zero by the bootstrap over the images but not between seeds: `taylor` "
            "e100 vs `darts-s3` e100 +0.0200 [-0.0048, +0.0448]") in block
    # the early-stopped DARTS pair is present and named an oracle
    row = next(line for line in block.splitlines()
               if line.startswith("| `taylor` e100 vs `darts-s3` e50 | all |"))
    assert [c.strip() for c in row.split("|")[1:-1]][4] == "+0.0017"
    assert ("DARTS's best snapshot by its seed-mean test accuracy is e50 (0.6183)"
            in block and "an oracle" in block)
    # 4 pairs compared, 2 of them fixed by the collapse criterion beforehand
    assert ("Comparisons: 4 pairs (12 per-seed rows, 4 pooled over seeds), with no correction "
            "for multiple comparisons. Decided before their results (2 pairs)") in block


def test_rebuild_writes_a_run_folder_for_aca_train_from_a_record(study, tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    y = np.arange(12) % 10
    data = tmp_path / "train.npz"
    np.savez(data, x=x, y=y)
    results = tmp_path / "results"
    results.mkdir()
    record = _record(study, "taylor", 100, 2, [True, False], genotype=_genotype(),
                     k_normal=[0, 8, 6, 0, 0, 0, 0, 1], k_reduce=[8, 7, 6, 5, 4, 3, 2, 1])
    (results / f"{record['key']}.json").write_text(json.dumps(record))
    run_dir = tmp_path / "run"
    assert study.main(["rebuild", record["key"], "--results", str(results), "--run-dir",
                       str(run_dir), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert f"aca-train {run_dir} --epochs 30 --batch-size 96 --cutout 8 --verbose 2" in printed
    from aca_keras.space.architecture import Architecture

    architecture = Architecture.load(run_dir / "architecture.json")
    assert architecture.normal.channels == (0, 8, 6, 0, 0, 0, 0, 1)
    assert architecture.reduce.channels == (8, 7, 6, 5, 4, 3, 2, 1)
    assert architecture.reference_channels == 8 and architecture.ops == ("none", "sep_conv_3x3")
    settings = json.loads((run_dir / "config.json").read_text())
    assert settings == {"dataset": str((run_dir / "data.npz").resolve()), "seed": 2,
                        "eval_cells": 8, "eval_channels": 16, "auxiliary": False,
                        "drop_path": 0.0, "study_record": record["key"]}
    with np.load(run_dir / "data.npz") as saved:
        assert saved["x"].shape == (8, 16, 16, 3) and saved["x_test"].shape == (4, 16, 16, 3)
        assert list(saved["y"]) == list(y[:8]) and list(saved["y_test"]) == list(y[8:])
        # 2x2 block means, rounded
        assert saved["x_test"][1, 3, 5, 2] == round(float(x[9, 6:8, 10:12, 2].mean()))
    with pytest.raises(FileNotFoundError, match="v2-train-taylor-e100-s2"):
        study.read_record(results, "v2-train-taylor-e100-s9")
