"""``studies/allocation.py`` (study v3, issue 35): duplicates and the allocation table on
hand-made architectures, McNemar / bootstrap / Holm wiring and the pre-registered decision
rule on hand-made records, ``record`` on a tiny trained run and ``prepare`` on a tiny search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import script_module

from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

N = 100  # images of the hand-made records


@pytest.fixture(scope="module")
def study():
    with script_module("studies", "allocation") as module:
        yield module


def _vector(b: int, c: int, base: int = 50) -> np.ndarray:
    """A candidate's correctness against the default's (the first ``base`` images right):
    ``b`` images only the candidate gets right, ``c`` only the default gets right."""
    correct = np.arange(N) < base
    correct[base:base + b] = True
    correct[:c] = False
    return correct


def _record(name: str, correct, split: str = "s" * 64) -> dict:
    correct = np.asarray(correct, bool)
    return {"format": "aca_keras.study.allocation", "version": 1, "name": name,
            "held_out_accuracy": float(correct.mean()), "test_images": int(correct.size),
            "split_sha256": split, "correct": "".join("1" if c else "0" for c in correct),
            "parameters": 1000, "multiply_adds": 2000, "epochs": 20, "train_seconds": 7200.0}


def _records(candidates: dict, reference: float = 0.9) -> dict:
    records = {"default": _record("default", _vector(0, 0)),
               "darts-v2": _record("darts-v2", np.arange(N) < round(reference * N))}
    for name, (b, c) in candidates.items():
        records[name] = _record(name, _vector(b, c))
    return records


# ---------------------------------------------------------------- statistics and the rule


def test_mcnemar_and_bootstrap_on_hand_made_vectors(study):
    default = np.arange(40) < 20  # 20 of 40 right
    candidate = (np.arange(40) < 18) | ((np.arange(40) >= 20) & (np.arange(40) < 28))
    # only the candidate: images 20..27 (b = 8); only the default: 18, 19 (c = 2)
    row = study.compare(_record("alpha", candidate, "x"), _record("default", default, "x"))
    assert (row["b_only_a"], row["c_only_b"]) == (8, 2)
    assert row["p"] == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 2 P(X <= 2), X ~ B(10, 1/2)
    assert row["difference"] == pytest.approx((26 - 20) / 40)
    # sd of the mean difference: sqrt((10/40 - 0.15^2) / 40) = 0.0754 -> about +-0.148
    assert -0.03 <= row["low"] <= 0.03 and 0.27 <= row["high"] <= 0.33
    assert study.paired_bootstrap(candidate, default) == study.paired_bootstrap(candidate,
                                                                              default)
    assert study.paired_bootstrap(default, default) == (0.0, 0.0, 0.0)
    with pytest.raises(SystemExit, match="different splits"):
        study.compare(_record("alpha", candidate, "x"), _record("default", default, "y"))


def test_holm_over_the_candidates_and_a_single_winner(study):
    # raw p: alpha b=10,c=0 -> 2/1024; typed b=6,c=0 -> 2/64; none b=c=5 -> 1
    # Holm (m = 3): alpha 3 x 0.001953 = 0.005859, typed 2 x 0.03125 = 0.0625, none 1
    decision = study.decide(_records({"alpha": (10, 0), "typed": (6, 0), "none": (5, 5)}))
    rows = {r["a"]: r for r in decision["comparisons"]}
    assert [rows[n]["p"] for n in ("alpha", "typed", "none")] == pytest.approx(
        [2 / 1024, 2 / 64, 1.0])
    assert [rows[n]["holm"] for n in ("alpha", "typed", "none")] == pytest.approx(
        [0.005859375, 0.0625, 1.0])
    assert decision["beating"] == ["alpha"]  # typed's raw p is below 0.05, its Holm p is not
    assert (decision["status"], decision["winner"]) == ("changes", "alpha")
    assert decision["missing"] == ["refill-sorted", "uniform"] and not decision["final"]


def test_no_significant_candidate_keeps_the_default(study):
    decision = study.decide(_records({n: (4, 3) for n in ("refill-sorted", "alpha", "typed",
                                                          "uniform", "none")}))
    assert decision["final"] and decision["recipe"] == "passed"
    assert (decision["status"], decision["winner"], decision["beating"]) == ("stays", None, [])
    assert "the default `taylor` / `index` / `adaptive` stays" in study.decision_text(decision)


def test_a_significantly_worse_candidate_does_not_win(study):
    decision = study.decide(_records({"alpha": (0, 10)}))
    row = decision["comparisons"][0]
    assert row["holm"] == pytest.approx(2 / 1024) and row["difference"] == pytest.approx(-0.1)
    assert (decision["status"], decision["winner"]) == ("stays", None)


def test_of_two_significant_candidates_the_more_accurate_wins(study):
    decision = study.decide(_records({"alpha": (10, 0), "none": (12, 0)}))
    # Holm (m = 2): none 2 x 2/4096, alpha max(that, 2/1024)
    assert [r["holm"] for r in decision["comparisons"]] == pytest.approx([2 / 1024, 4 / 4096])
    assert decision["beating"] == ["alpha", "none"] and decision["winner"] == "none"
    text = study.decision_text(decision)
    assert "did not help on this op set" in text
    assert "scorer / pooling / allocator taylor / index / none; 1,000 parameters" in text


def test_a_failed_recipe_check_withholds_the_decision(study):
    decision = study.decide(_records({"alpha": (10, 0)}, reference=0.87))
    assert (decision["recipe"], decision["status"], decision["winner"]) == (
        "failed", "withheld", None)
    assert decision["comparisons"][0]["beats"]  # the comparison is still reported
    text = study.report_text(_records({"alpha": (10, 0)}, reference=0.87))
    assert "**failed**: `darts-v2` 0.8700 < 0.88" in text and "No decision" in text
    assert study.decide(_records({}, reference=0.88))["recipe"] == "passed"  # at the bar


def test_duplicates_count_once_and_missing_records_are_listed(study, tmp_path):
    records = _records({"alpha": (10, 0), "typed": (6, 0)})
    records["uniform"] = _record("uniform", _vector(6, 0))  # recorded although a duplicate
    allocations = {"default": {}, "uniform": {"duplicate_of": "typed"},
                   "none": {"duplicate_of": "default"}}
    decision = study.decide(records, {n: e.get("duplicate_of") for n, e in allocations.items()})
    assert [r["a"] for r in decision["comparisons"]] == ["alpha", "typed"]  # m = 2
    assert decision["comparisons"][1]["holm"] == pytest.approx(2 / 64)  # 1 x p; beats
    assert decision["missing"] == ["refill-sorted"]
    (tmp_path / "records").mkdir()
    for name, r in records.items():
        (tmp_path / "records" / f"{name}.json").write_text(json.dumps(r))
    (tmp_path / "allocations.json").write_text(json.dumps(allocations))
    text = study.report(tmp_path)
    assert (tmp_path / "report.md").read_text() == text
    assert "| `none` | = `default` (same cells) |" in text
    assert "| `refill-sorted` | missing |" in text
    assert "Provisional: missing records: `refill-sorted`." in text
    assert "| `alpha` | +10.00 |" in text and "| `typed` | +6.00 |" in text


def test_report_command_line_loads_no_tensorflow(tmp_path):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "default.json").write_text(
        json.dumps(_record("default", _vector(0, 0))))
    code = ("import runpy, sys\n"
            f"sys.argv = ['allocation.py', 'report', '--results', {str(tmp_path)!r}]\n"
            "try:\n"
            f"    runpy.run_path({str(REPO_ROOT / 'studies' / 'allocation.py')!r}, "
            "run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "    assert not exit.code, exit.code\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| `default` | 0.5000 | 1,000 | 2,000 | 20 | 2.0 |" in done.stdout
    assert "No decision yet" not in done.stdout and "Recipe check: pending" in done.stdout
    assert (tmp_path / "report.md").read_text() == done.stdout


# ------------------------------------------------------------- duplicates and the table


def _architecture(k_normal=(4, 2, 0, 3), k_reduce=(1, 0, 4, 2)) -> Architecture:
    normal = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", k_normal[0]),
                       EdgeSpec(0, 1, "max_pool_3x3", k_normal[1]),
                       EdgeSpec(1, 0, "dil_conv_3x3", k_normal[2]),
                       EdgeSpec(1, 2, "avg_pool_3x3", k_normal[3])), (2, 3))
    reduce = CellSpec((EdgeSpec(0, 0, "sep_conv_5x5", k_reduce[0]),
                       EdgeSpec(0, 1, "max_pool_3x3", k_reduce[1]),
                       EdgeSpec(1, 0, "dil_conv_5x5", k_reduce[2]),
                       EdgeSpec(1, 2, "sep_conv_3x3", k_reduce[3])), (2, 3))
    return Architecture(normal, reduce, 4, ("none", "max_pool_3x3", "avg_pool_3x3",
                                            "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                                            "dil_conv_5x5"))


def test_duplicates_and_the_allocation_table_by_hand(study):
    archs = {"default": _architecture(), "alpha": _architecture((4, 2, 1, 3)),
             "typed": _architecture(), "uniform": _architecture((3, 2, 2, 2), (2, 2, 2, 1))}
    duplicates = study.find_duplicates(archs)  # typed built apart, equal to default
    assert duplicates == {"default": None, "alpha": None, "typed": "default", "uniform": None}
    entries = {n: study.describe(study.ALLOCATIONS[n], a,
                                 {"parameters": 1234, "multiply_adds": 5678},
                                 duplicates[n], f"alloc-{n}") for n, a in archs.items()}
    assert entries["default"]["k"] == {"normal": [4, 2, 0, 3], "reduce": [1, 0, 4, 2]}
    table = study.allocation_table(entries)
    # normal: pools 2 + 3 of 8, convs 4 + 0 of 8, one identity edge (dil_conv k_e = 0 at
    # stride 1); reduce: pools 0 of 4 (a FactorizedReduce, no identity), convs 1 + 4 + 2 of 12
    assert ("| `default` | taylor / index / adaptive | 5/8 | 4/8 | 0/4 | 7/12 | 1, 0 | 1,234 "
            "| 5,678 | yes |") in table
    assert "| `typed` | taylor / index / adaptive-typed | 5/8 | 4/8 | 0/4 | 7/12 | 1, 0 |" in table
    assert table.count("as `default` |") == 1
    assert ("| `default` | sep_conv_3x3 4, max_pool_3x3 2, dil_conv_3x3 0, avg_pool_3x3 3 | "
            "sep_conv_5x5 1, max_pool_3x3 0, dil_conv_5x5 4, sep_conv_3x3 2 |") in table
    assert "`uniform` keeps [9, 7] channels (normal, reduce), `default` [9, 7]: equal." in table


# ------------------------------------------------------------------ record (tiny run)


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """200 bundled digits (8x8, grey) as an .npz; test_fraction 0.25 holds out 50."""
    from aca_keras.data import loading as data

    bundle = data.load("digits")
    path = tmp_path_factory.mktemp("data") / "digits200.npz"
    np.savez(path, x=np.concatenate([bundle.x_train, bundle.x_test])[:200],
             y=np.concatenate([bundle.y_train, bundle.y_test])[:200])
    return path


def test_record_on_a_tiny_trained_run_and_delete_weights(study, digits_npz, tmp_path):
    from aca_keras.training.trainer import train_run

    run = tmp_path / "train-tiny"
    with pytest.raises(SystemExit, match="no finished training"):
        study.record(run, results=tmp_path / "results")
    train_run(run, architecture=_architecture(), dataset=str(digits_npz), test_fraction=0.25,
              cells=3, channels=4, epochs=1, batch_size=32, verbose=0)
    for name in ("model.keras", "checkpoint-e1.npz", "IN_PROGRESS", "cell_normal.png"):
        (run / name).write_bytes(b"x")
    result = json.loads((run / "train_result.json").read_text())
    results = tmp_path / "results"

    tampered = {**result, "test_accuracy": result["test_accuracy"] + 0.02}
    (run / "train_result.json").write_text(json.dumps(tampered))
    with pytest.raises(SystemExit, match="not recorded"):
        study.record(run, results=results, delete_weights=True)
    assert (run / "trained.keras").is_file() and not (results / "records").exists()
    (run / "train_result.json").write_text(json.dumps(result))

    before = {p.name for p in run.iterdir()}
    path = study.record(run, results=results, delete_weights=True)
    document = json.loads(path.read_text())
    assert path == results / "records" / "tiny.json" and document["name"] == "tiny"
    assert len(document["correct"]) == document["test_images"] == 50
    correct = study.decode_correct(document)
    assert document["held_out_accuracy"] == pytest.approx(correct.mean(), abs=0)
    assert document["held_out_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
    assert document["split_sha256"] == result["test_split"]["split_sha256"]
    assert document["parameters"] == result["params"] and document["epochs"] == 1
    assert document["multiply_adds"] == result["flops"]
    assert Architecture.from_dict(document["architecture"]) == _architecture()
    deleted = {"trained.keras", "model.keras", "checkpoint-e1.npz", "IN_PROGRESS",
               "train_checkpoint"}
    assert before - {p.name for p in run.iterdir()} == deleted
    assert {p.name for p in run.iterdir()} == {
        "architecture.json", "config.json", "train_config.json", "train_history.csv",
        "train_result.json", "cell_normal.png"}


# ---------------------------------------------------------------- prepare (tiny search)


@pytest.mark.slow  # 150 s on the shared 2-core machine (six reallocations, each with pictures)
def test_prepare_on_a_tiny_search(study, digits_npz, tmp_path):
    from aca_keras.searching.pipeline import search

    source = tmp_path / "search"
    search(str(digits_npz), run_dir=source, epochs=1, cells=3, channels=4, nodes=2,
           batch_size=16, eval_cells=3, eval_channels=4, score_batches=2, seed=5, verbose=0,
           hessian_every=0)
    out = tmp_path / "allocation"
    entries = study.prepare(source, out, verbose=0)
    assert list(entries) == list(study.ALLOCATIONS)
    archs = {n: Architecture.load(out / f"alloc-{n}" / "architecture.json") for n in entries}
    for name, entry in entries.items():
        settings = json.loads((out / f"alloc-{name}" / "config.json").read_text())
        assert {k: settings[k] for k in entry["settings"]} == study.ALLOCATIONS[name]
        assert entry["k"]["normal"] == list(archs[name].normal.channels)
        written = json.loads((out / f"alloc-{name}" / "architecture.json").read_text())
        assert entry["network"] == written["diagnostics"]["network"]
        assert entry["network"]["parameters"] > 0
        equal = [n for n in list(entries)[:list(entries).index(name)]
                 if archs[n].normal == archs[name].normal and archs[n].reduce == archs[name].reduce]
        assert entry["duplicate_of"] == (equal[0] if equal else None)
    assert all(k == 4 for cell in entries["none"]["k"].values() for k in cell)
    for cell in ("normal", "reduce"):  # uniform at the default's budget
        assert sum(entries["uniform"]["k"][cell]) == sum(entries["default"]["k"][cell])
    assert json.loads((out / "allocations.json").read_text()) == entries
    assert "equal." in (out / "allocations.md").read_text()
    again = study.prepare(source, out, verbose=0)  # finished directories are kept
    assert again == entries
