"""``aca_keras.searching.reallocate`` and ``aca-search --reallocate``: several allocations
from one searched supernet, on a tiny search."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from aca_keras.channels.allocation import list_allocators
from aca_keras.channels.importance import list_poolings, list_scorers
from aca_keras.cli import search as cli
from aca_keras.errors import RunDirError, UnknownNameError
from aca_keras.searching.pipeline import search
from aca_keras.searching.reallocate import REALLOCATION_SETTINGS, reallocate
from aca_keras.space.architecture import Architecture
from aca_keras.space.genotype import Genotype

TINY = dict(epochs=2, cells=3, channels=4, nodes=2, batch_size=16, eval_cells=3,
            eval_channels=4, score_batches=2, seed=5, verbose=0, hessian_every=0)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished tiny search on the first 192 digits, saved as an .npz so that the run
    reloads its own data set."""
    from aca_keras.data import loading as data

    bundle = data.load("digits")
    folder = tmp_path_factory.mktemp("reallocate")
    npz = folder / "digits192.npz"
    np.savez(npz, x=bundle.x_train[:192], y=bundle.y_train[:192])
    run_dir = folder / "source"
    search(str(npz), run_dir=run_dir, **TINY)
    return run_dir


def _arch(run_dir) -> Architecture:
    return Architecture.load(run_dir / "architecture.json")


def _config(run_dir) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def test_no_overrides_reproduce_the_runs_own_allocation(source, tmp_path):
    out = tmp_path / "same"
    model = reallocate(source, out, verbose=0)
    own, again = _arch(source), _arch(out)
    assert again.normal == own.normal and again.reduce == own.reduce  # ops, inputs and k_e
    assert again.normal.channels == own.normal.channels
    assert again.reduce.channels == own.reduce.channels
    for cell in ("normal", "reduce"):  # the scores were computed again, on the same batches
        assert again.scores[cell]["k"] == own.scores[cell]["k"]
        assert again.scores[cell]["mean"] == pytest.approx(own.scores[cell]["mean"], rel=1e-6)
        assert again.scores[cell]["threshold"] == pytest.approx(own.scores[cell]["threshold"])
    note = again.provenance["reallocated_from"]
    assert note["run"] == str(source.resolve()) and note["epochs_done"] == 2
    assert note["settings"] == {"scorer": "taylor", "pooling": "index",
                                "divide_weight": False, "allocator": "adaptive"}
    assert note["k"] == {"normal": list(own.normal.channels),
                         "reduce": list(own.reduce.channels)}
    assert _config(out) == _config(source)  # a plain SearchConfig document
    assert Genotype.from_json((out / "genotype.json").read_text()) == own.to_genotype()
    for name in ("model.keras", "cell_normal.png", "cell_reduce.png", "alphas.png"):
        assert (out / name).is_file(), name
    assert (out / "alphas.jsonl").read_text() == (source / "alphas.jsonl").read_text()
    assert model.architecture == again and model.run_dir == str(out)
    assert not (out / "checkpoint.npz").exists()


def test_uniform_keeps_the_adaptive_total_and_is_trainable(source, tmp_path):
    from aca_keras.training.trainer import train_run

    out = tmp_path / "uniform"
    reallocate(source, out, allocator="uniform", verbose=0)
    own, uniform = _arch(source), _arch(out)
    for cell in ("normal", "reduce"):
        k_own, k = getattr(own, cell).channels, getattr(uniform, cell).channels
        assert sum(k) == sum(k_own)  # the capacity-matched control
        assert max(k) - min(k) <= 1
        assert list(k) == sorted(k, reverse=True)  # the extra channels go to the first edges
        assert uniform.scores[cell]["budget"] == sum(k_own)
    assert uniform.provenance["allocator"] == "uniform"
    assert uniform.provenance["reallocated_from"]["settings"]["allocator"] == "adaptive"
    config = _config(out)
    assert config["allocator"] == "uniform"
    assert {k: v for k, v in config.items() if k != "allocator"} == {
        k: v for k, v in _config(source).items() if k != "allocator"}
    result = train_run(out, epochs=1, batch_size=32, verbose=0)  # aca-train's function
    assert np.isfinite(result.history["loss"][-1])
    assert (out / "trained.keras").is_file()


def test_a_reallocated_directory_is_not_resumed_as_a_search(source, tmp_path):
    out = tmp_path / "alloc"
    reallocate(source, out, allocator="uniform", verbose=0)
    before = (out / "architecture.json").read_text()
    with pytest.raises(RunDirError, match="no supernet checkpoint"):
        search(run_dir=out, resume=True, verbose=0)
    assert (out / "architecture.json").read_text() == before  # nothing overwritten


def test_refusals_leave_nothing_behind(source, tmp_path):
    # out_dir already holding a run (here: the source itself, and a copy of its config)
    with pytest.raises(RunDirError, match="source run directory"):
        reallocate(source, source, verbose=0)
    taken = tmp_path / "taken"
    taken.mkdir()
    shutil.copy(source / "config.json", taken / "config.json")
    with pytest.raises(RunDirError, match="already holds a run"):
        reallocate(source, taken, verbose=0)
    # a source without its checkpoint (the run directory a reallocation writes is one)
    with pytest.raises(RunDirError, match="no checkpoint.npz"):
        reallocate(taken, tmp_path / "a", verbose=0)
    with pytest.raises(RunDirError, match="no config.json"):
        reallocate(tmp_path, tmp_path / "b", verbose=0)
    with pytest.raises(RunDirError, match="not a directory"):
        reallocate(tmp_path / "missing", tmp_path / "c", verbose=0)
    # unknown names: the message lists the registered ones
    with pytest.raises(UnknownNameError, match="Unknown allocator 'otsu'.*adaptive-typed"):
        reallocate(source, tmp_path / "d", allocator="otsu", verbose=0)
    with pytest.raises(UnknownNameError, match="Unknown channel scorer 'fisher'.*refill"):
        reallocate(source, tmp_path / "e", scorer="fisher", verbose=0)
    with pytest.raises(UnknownNameError, match="pooling"):
        reallocate(source, tmp_path / "f", pooling="mean", verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    # other data than the run searched: the checkpoint's steps per epoch do not match
    from aca_keras.data import loading as data

    bundle = data.load("digits")
    with pytest.raises(RunDirError, match="steps per epoch"):
        reallocate(source, tmp_path / "g", dataset=(bundle.x_train[:96], bundle.y_train[:96]),
                   verbose=0)
    assert not (tmp_path / "g" / "config.json").exists()


def test_cli_reallocate_with_other_scoring_and_the_typed_allocator(source, tmp_path, capsys):
    out = tmp_path / "typed"
    assert cli.main(["--reallocate", str(source), "--run-dir", str(out), "--scorer", "refill",
                     "--pooling", "sorted", "--divide-weight", "--allocator", "adaptive-typed",
                     "--quiet"]) == 0
    assert f"run directory: {out}" in capsys.readouterr().out
    typed = _arch(out)
    assert {k: typed.provenance[k] for k in ("scorer", "pooling", "divide_weight",
                                             "allocator")} == {
        "scorer": "refill", "pooling": "sorted", "divide_weight": True,
        "allocator": "adaptive-typed"}
    assert typed.to_genotype() == _arch(source).to_genotype()  # the same supernet's genotype
    assert set(typed.scores["normal"]["thresholds"]) <= {"parameter_free", "parametric"}
    config = _config(out)
    assert (config["scorer"], config["pooling"], config["divide_weight"],
            config["allocator"]) == ("refill", "sorted", True, "adaptive-typed")
    # the same out_dir again, an unknown allocator: one-line errors, exit status 1
    assert cli.main(["--reallocate", str(source), "--run-dir", str(out), "--quiet"]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main(["--reallocate", str(source), "--run-dir", str(tmp_path / "x"),
                     "--allocator", "otsu", "--quiet"]) == 1
    assert "Registered allocators: adaptive" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--reallocate", "r"], "needs --run-dir"),
    (["--reallocate", "r", "--run-dir", "o", "--resume", "r"], "exclude each other"),
    (["--reallocate", "r", "--run-dir", "o", "--epochs", "3", "--seed", "1"],
     "only --scorer, --pooling, --divide-weight, --allocator .* not --epochs, --seed"),
    (["--reallocate", "r", "--run-dir", "o", "--tensorboard", "tb"], "not --tensorboard"),
])
def test_cli_reallocate_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_cli_help_names_the_registered_choices():
    assert tuple(cli.REALLOCATE_FLAGS) == REALLOCATION_SETTINGS
    # the spelled lists are the built-in registrations, in order
    assert list(cli.SCORERS) == list_scorers()[:len(cli.SCORERS)]
    assert list(cli.POOLINGS) == list_poolings()[:len(cli.POOLINGS)]
    text = " ".join(cli.build_parser().format_help().split())
    assert f"channel allocator: {', '.join(list_allocators())}" in text
    assert f"channel scorer: {', '.join(cli.SCORERS)}" in text
    assert f"combined: {', '.join(cli.POOLINGS)}" in text
