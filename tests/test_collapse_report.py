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


def _record(study, method, epoch, seed, correct, **extra):
    correct = np.asarray(correct, dtype=bool)
    record = {"format": study.FORMAT, "version": 1, "kind": "train",
              "key": f"v2-train-{method}-e{epoch}-s{seed}", "method": method,
              "epoch": epoch, "seed": seed, "search": study.METHODS[method][0],
              "accuracy": float(correct.mean()),
              "correct": base64.b64encode(np.packbits(correct)).decode("ascii"),
              "test_images": int(correct.size), "k_normal": [8] * 8, "k_reduce": [8] * 8,
              "k_second_batches": None, "skip_connect_normal": 2, "params": 1234,
              "seconds": 1.0}
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
    b, c = int(row.split("|")[7]), int(row.split("|")[8])
    assert (b, c) == (int(np.sum(taylor & ~early)), int(np.sum(early & ~taylor)))
    assert "| `taylor` e25 vs `darts-s3` e25 | s1 |" in block
    assert "* `darts-s3` e100 s1: lower than e25" in block
    assert "* `taylor` e100 s1" not in block
    row = next(line for line in block.splitlines()
               if line.startswith("| `darts-s3` e100 vs `darts-s3` e25 | s1 |"))
    b, c = int(row.split("|")[7]), int(row.split("|")[8])
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
    # 6 vs DARTS, 4 vs taylor, 5 vs none, refill-w vs refill, 4 x 2 snapshot pairs,
    # 2 x 2 ACA vs DARTS at the earlier snapshots
    assert len(pairs) == len(set(pairs)) == 15 + 1 + 8 + 4 == 28


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
