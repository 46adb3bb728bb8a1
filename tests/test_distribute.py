"""Several devices and mixed precision.

* ``MirroredStrategy`` over two logical CPU devices computes what one device computes on the
  same global batch (search: alphas, weights, optimiser states, genotype; training: weights).
  Logical devices must be configured before TensorFlow starts, so those runs happen in a
  child process: this file is also the child script (``python tests/test_distribute.py
  mirrored OUT ORDER`` / ``... worker INDEX PORTS OUT``).
* Two ``MultiWorkerMirroredStrategy`` workers on localhost agree on the genotype (slow).
* ``mixed_bfloat16`` on the CPU: float32 alphas and softmax, bfloat16 activations, a working
  search step, and the global dtype policy restored afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]

SEARCH = dict(epochs=2, cells=3, channels=4, nodes=1, ops=["max_pool_3x3", "sep_conv_3x3"],
              batch_size=16, eval_cells=3, eval_channels=4, score_batches=1, seed=11,
              verbose=0, grad_clip=0.5)  # a small clip, so that clipping is exercised
TRAIN = dict(epochs=2, batch_size=16, grad_clip=0.1, seed=5, verbose=0)


# --------------------------------------------------------------------- shared by both sides


def _search_arrays():
    from aca_keras.data import loading as data

    bundle = data.load("digits")
    return bundle.x_train[:96], bundle.y_train[:96]


def _train_bundle():
    from aca_keras.data import loading as data

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 8, 8, 3)).astype("uint8")
    y = (np.arange(64) % 4).astype("int32")
    return data.load((x, y))


def _train_model():
    import keras

    from aca_keras.models.derived import build_model
    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

    ops = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
           "dil_conv_3x3", "dil_conv_5x5")
    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 2), EdgeSpec(0, 1, "max_pool_3x3", 4)),
                    (2,))
    keras.utils.set_random_seed(1)
    # drop path and the auxiliary head are on: the masks must match across replicas too
    return build_model(Architecture(cell, cell, 4, ops), (8, 8, 3), 4, cells=3, channels=4,
                       auxiliary=True, drop_path=0.2)


# ---------------------------------------------------------------------------- child side


def _child_mirrored(out: Path, order: int) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from aca_keras.searching.pipeline import search
    from aca_keras.training.trainer import train

    arrays = _search_arrays()
    for name, strategy in (("single", None), ("mirrored", "mirrored")):
        # the Hessian eigenvalue: off on one device for speed (test_monitor shows it leaves
        # the search as it was), left on under two replicas, where search() switches it off
        search(arrays, run_dir=out / f"search-{name}", strategy=strategy,
               **{**SEARCH, "order": order, "hessian_every": 0 if strategy is None else 1})
        if order == 1:
            train(_train_model(), _train_bundle(), run_dir=out / f"train-{name}",
                  strategy=strategy, **TRAIN)
    if order == 1:  # which BatchNorm layers synchronise (no training: cheap)
        from aca_keras import distribute as dist
        from aca_keras._internals import sublayers
        from aca_keras.layers.ops import BatchNormalization
        from aca_keras.models.supernet import SearchNetwork

        flags = {}
        mirrored = dist.get_strategy("mirrored")
        for name, sync in (("default", True), ("off", False)):
            with dist.strategy_scope(mirrored):
                network = SearchNetwork((8, 8, 1), 10, cells=3, channels=4, nodes=1,
                                        ops=SEARCH["ops"],
                                        sync_batch_norm=dist.synchronize_batch_norm(mirrored,
                                                                                    sync))
            flags[name] = [layer.synchronized for layer in sublayers(network)
                           if isinstance(layer, BatchNormalization)]
        network = SearchNetwork((8, 8, 1), 10, cells=3, channels=4, nodes=1, ops=SEARCH["ops"],
                                sync_batch_norm=dist.synchronize_batch_norm(None, True))
        flags["no strategy"] = [layer.synchronized for layer in sublayers(network)
                                if isinstance(layer, BatchNormalization)]
        (out / "batch_norm.json").write_text(json.dumps(flags))


def _child_worker(index: int, ports: list[str], out: Path) -> None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index}})
    from aca_keras.searching.pipeline import search
    from aca_keras.training.trainer import train

    search(_search_arrays(), run_dir=out / f"search-{index}", strategy="multiworker", **SEARCH)
    train(_train_model(), _train_bundle(), run_dir=out / f"train-{index}",
          strategy="multiworker", **TRAIN)


# --------------------------------------------------------------------------- parent side


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _child(*args: str, timeout: float = 900) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE), *args], env=_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: float = 900) -> None:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    assert process.returncode == 0, f"child failed ({process.returncode}):\n{output[-4000:]}"


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "__record__"}


def _assert_same_state(a: Path, b: Path, atol: float, slot_fraction: float = 0.0) -> None:
    """Every array of two checkpoints equal within ``atol``; optimiser slots (keys under
    ``optimizer/`` and ``alpha_optimizer/``) within ``slot_fraction`` of their largest value
    where that is looser."""
    first, second = _arrays(a), _arrays(b)
    assert sorted(first) == sorted(second)
    for key in first:
        tol = atol
        if key.startswith(("optimizer/", "alpha_optimizer/")) and first[key].dtype.kind == "f":
            tol = max(atol, slot_fraction * float(np.abs(first[key]).max(initial=0.0)))
        np.testing.assert_allclose(first[key], second[key], rtol=0, atol=tol, err_msg=key)


def _assert_same_search(single: Path, other: Path, atol: float = 2e-5,
                        weights_atol: float = 2e-4) -> None:
    # The replicas sum their gradients in another order than one device does, and two epochs
    # carry that float32 rounding into the state. On a 2-core AMD EPYC machine (2026-12-04)
    # the weights differed by up to 1.3e-4 and the alpha optimiser's first moment by 1.1e-3 of
    # 0.10 (the validation-loss gradient w.r.t. the alphas is a small difference of large
    # terms), while the alphas agreed within 6e-6; earlier machines held 2e-5 everywhere.
    # So: weights within ``weights_atol``, optimiser slots within 2 % of their scale (a
    # replica-averaging error, e.g. summed gradients, moves them by 100 %: Adam's update is
    # scale-free, so the alphas alone would not show it), the alphas within the tight ``atol``.
    _assert_same_state(single / "checkpoint.npz", other / "checkpoint.npz", weights_atol,
                       slot_fraction=0.02)
    lines = [json.loads((d / "alphas.jsonl").read_text().splitlines()[-1]) for d in (single, other)]
    for cell in ("normal", "reduce"):
        np.testing.assert_allclose(lines[0]["alphas"][cell], lines[1]["alphas"][cell], atol=atol)
        # the alphas really moved, so the comparison is not trivially true
        assert np.abs(np.array(lines[0]["alphas"][cell])).max() > 1e-3
    assert (single / "genotype.json").read_text() == (other / "genotype.json").read_text()


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored")
    _finish(_child("mirrored", str(out), "1"))
    return out


def test_mirrored_search_matches_one_device(mirrored_runs):
    single, mirrored = mirrored_runs / "search-single", mirrored_runs / "search-mirrored"
    _assert_same_search(single, mirrored)
    config = json.loads((mirrored / "config.json").read_text())
    assert (config["strategy"], config["replicas"]) == ("mirrored", 2)
    assert config["sync_batch_norm"] is True
    # measured on one device only: switched off under several replicas, counts still kept
    records = [json.loads(line) for line in (mirrored / "alphas.jsonl").read_text().splitlines()]
    assert config["hessian_every"] == 1
    assert all(r["hessian_eigenvalue"] is None and r["skip_edges"] is not None for r in records)
    config = json.loads((single / "config.json").read_text())
    assert (config["strategy"], config["replicas"]) == ("default", 1)


def test_batch_norm_synchronises_only_under_several_replicas(mirrored_runs):
    flags = json.loads((mirrored_runs / "batch_norm.json").read_text())
    assert flags["default"] and all(flags["default"])
    assert flags["off"] and not any(flags["off"])
    assert flags["no strategy"] and not any(flags["no strategy"])


def test_training_builds_its_model_with_the_strategys_batch_norm_sync(mirrored_runs):
    """train() passes sync_batch_norm explicitly: the trained model's config records it."""
    for name, expected in (("single", False), ("mirrored", True)):
        with zipfile.ZipFile(mirrored_runs / f"train-{name}" / "trained.keras") as archive:
            config = json.loads(archive.read("config.json"))["config"]
        assert config["sync_batch_norm"] is expected, name


def test_mirrored_training_matches_one_device(mirrored_runs):
    single, mirrored = mirrored_runs / "train-single", mirrored_runs / "train-mirrored"
    _assert_same_state(single / "train_checkpoint" / "checkpoint.npz",
                       mirrored / "train_checkpoint" / "checkpoint.npz", atol=2e-5)
    histories = [json.loads((d / "train_result.json").read_text()) for d in (single, mirrored)]
    assert histories[0]["final"]["loss"] == pytest.approx(histories[1]["final"]["loss"], 1e-5)
    config = json.loads((mirrored / "train_config.json").read_text())
    assert (config["strategy"], config["replicas"]) == ("mirrored", 2)


@pytest.mark.slow
def test_mirrored_second_order_matches_one_device(tmp_path):
    _finish(_child("mirrored", str(tmp_path), "2"))
    _assert_same_search(tmp_path / "search-single", tmp_path / "search-mirrored")


def _free_ports(count: int) -> list[str]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_workers_agree(tmp_path):
    ports = ",".join(_free_ports(2))
    workers = [_child("worker", str(i), ports, str(tmp_path)) for i in range(2)]
    for worker in workers:
        _finish(worker, timeout=600)
    genotypes = {(tmp_path / f"search-{i}" / "genotype.json").read_text() for i in range(2)}
    assert len(genotypes) == 1
    for i in range(2):
        config = json.loads((tmp_path / f"search-{i}" / "config.json").read_text())
        assert (config["strategy"], config["replicas"]) == ("multiworker", 2)
    _assert_same_state(tmp_path / "search-0" / "checkpoint.npz",
                       tmp_path / "search-1" / "checkpoint.npz", atol=0)
    _assert_same_state(tmp_path / "train-0" / "train_checkpoint" / "checkpoint.npz",
                       tmp_path / "train-1" / "train_checkpoint" / "checkpoint.npz", atol=0)


# --------------------------------------------------------------------- in-process tests


def test_strategy_names_and_records(monkeypatch):
    from aca_keras import distribute as dist
    from aca_keras.errors import StrategyError

    assert dist.get_strategy(None) is None and dist.get_strategy("default") is None
    assert dist.describe_strategy(None) == {"kind": "default", "replicas": 1, "workers": 1}
    with pytest.raises(StrategyError, match="Unknown strategy"):
        dist.get_strategy("ring-of-tpus")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="TF_CONFIG"):
        dist.get_strategy("multiworker")
    dist.check_global_batch(32, 4)
    with pytest.raises(StrategyError, match="multiple of 4"):
        dist.check_global_batch(30, 4)
    assert dist.precision_policy(False) == "float32"
    assert dist.precision_policy("mixed_float16") == "mixed_float16"


def test_the_worker_count_comes_from_the_cluster_resolver(monkeypatch):
    """What a multi-worker strategy's record says about its workers, from the public cluster
    resolver (``strategy.cluster_resolver``), counted as TensorFlow counts them."""
    import tensorflow as tf

    from aca_keras import distribute as dist
    from aca_keras.errors import StrategyError

    resolvers = tf.distribute.cluster_resolver
    spec = {"chief": ["a:1"], "worker": ["b:1", "c:1"], "evaluator": ["d:1"]}
    for task_type, workers in (("worker", 3), ("chief", 3), ("evaluator", 1)):
        resolver = resolvers.SimpleClusterResolver(tf.train.ClusterSpec(spec),
                                                   task_type=task_type, task_id=0)
        assert dist.cluster_workers(resolver) == workers, task_type
    # what MultiWorkerMirroredStrategy uses by default: TF_CONFIG, or one local worker
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["h1:1", "h2:1", "h3:1", "h4:1"]},
        "task": {"type": "worker", "index": 2}}))
    assert dist.cluster_workers(resolvers.TFConfigClusterResolver()) == 4
    monkeypatch.delenv("TF_CONFIG")
    assert dist.cluster_workers(resolvers.TFConfigClusterResolver()) == 1
    with pytest.raises(StrategyError, match="cluster resolver.*NoneType"):
        dist.cluster_workers(None)  # unknown is an error, never a silent 1


def test_cli_options():
    from aca_keras.cli.search import build_parser as search_parser
    from aca_keras.cli.train import build_parser as train_parser

    for parser in (search_parser(), train_parser()):
        options = {o for action in parser._actions for o in action.option_strings}
        assert {"--strategy", "--mixed-precision", "--no-sync-batch-norm"} <= options
    args = search_parser().parse_args(["--strategy", "mirrored", "--mixed-precision"])
    assert args.strategy == "mirrored" and args.mixed_precision
    with pytest.raises(SystemExit):
        search_parser().parse_args(["--strategy", "tpu"])


@pytest.fixture
def bfloat16_policy():
    from aca_keras import distribute as dist
    from aca_keras.errors import StrategyError

    try:
        return dist.precision_policy(True)
    except StrategyError as error:
        pytest.skip(f"no bfloat16 on this CPU: {error}")


def test_mixed_precision_dtypes_and_step(bfloat16_policy):
    import keras
    import tensorflow as tf

    from aca_keras import distribute as dist
    from aca_keras.models.supernet import SearchNetwork

    assert bfloat16_policy == "mixed_bfloat16"  # no GPU in the test environment
    before = keras.config.dtype_policy().name
    x, y = _search_arrays()
    x, y = x[:16].astype("float32"), y[:16]
    with dist.dtype_policy(bfloat16_policy):
        network = SearchNetwork(x.shape[1:], 10, cells=3, channels=4, nodes=1,
                                ops=["max_pool_3x3", "sep_conv_3x3"])
        network.compile()
        assert network.alpha_normal.dtype == "float32"
        assert network.alpha_reduce.dtype == "float32"
        assert all(w.dtype == tf.float32 for w in network.op_weights())  # softmax
        assert network.compute_dtype == "bfloat16"
        images = tf.constant(x[:2])
        stem = network.stem_bn(network.stem_conv(images), training=False)
        assert stem.dtype == tf.bfloat16  # activations
        rows = keras.ops.cast(network.op_weights()[0], "bfloat16")
        cell = network.search_cells[0]((stem, stem), rows)
        assert cell.dtype == tf.bfloat16
        assert network(images).dtype == tf.float32  # logits (and the loss) in float32
        alphas = network.alphas()
        batch = tf.data.Dataset.from_tensors(((x[:8], y[:8]), (x[8:], y[8:]))).repeat(2)
        history = network.fit(batch, epochs=1, steps_per_epoch=2, verbose=0).history
        assert np.isfinite(history["loss"][0]) and np.isfinite(history["alpha_loss"][0])
        assert np.abs(network.alphas()["normal"] - alphas["normal"]).max() > 0
        assert network.alpha_normal.dtype == "float32"
    assert keras.config.dtype_policy().name == before


def test_mixed_precision_search_and_train_restore_the_policy(bfloat16_policy, tmp_path):
    import keras

    from aca_keras import distribute as dist
    from aca_keras.searching.pipeline import search
    from aca_keras.training.trainer import train

    before = keras.config.dtype_policy().name
    search(_search_arrays(), run_dir=tmp_path / "search", mixed_precision=True,
           **{**SEARCH, "epochs": 1})
    config = json.loads((tmp_path / "search" / "config.json").read_text())
    assert config["mixed_precision"] is True and config["dtype_policy"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    result = train(_train_model(), _train_bundle(), run_dir=tmp_path / "train",
                   mixed_precision=True, **{**TRAIN, "epochs": 1})
    assert result.model.dtype_policy.name == "mixed_bfloat16"
    assert np.isfinite(result.history["loss"][0])
    saved = json.loads((tmp_path / "train" / "train_config.json").read_text())
    assert saved["dtype_policy"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    with pytest.raises(ZeroDivisionError), dist.dtype_policy("mixed_bfloat16"):
        raise ZeroDivisionError  # restored on errors too
    assert keras.config.dtype_policy().name == before


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "mirrored":
        _child_mirrored(Path(rest[0]), int(rest[1]))
    elif mode == "worker":
        _child_worker(int(rest[0]), rest[1].split(","), Path(rest[2]))
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
