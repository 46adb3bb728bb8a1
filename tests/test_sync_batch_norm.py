"""BatchNorm synchronisation is an explicit argument (``sync_batch_norm``), not module state.

* It reaches every BatchNorm layer of a built derived network and supernet, and survives the
  config round trip (and a ``.keras`` reload of the derived network).
* Configs saved without the key (aca_keras 0.1.0 and every model saved before the argument
  existed, zoo entries included) load, unsynchronised.
* :func:`aca_keras.distribute.synchronize_batch_norm` computes the value from a strategy (no
  global state), and the search pipeline passes it to the supernet it builds.
* A synchronised layer on one device computes exactly what an unsynchronised one does.

The runs under a real multi-replica strategy (logical CPU devices, a child process) are in
``tests/test_distribute.py``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from aca_keras import _internals as internals
from aca_keras import distribute as dist
from aca_keras.layers import ops as ops_lib
from aca_keras.models.derived import DerivedNetwork, build_model, load_model
from aca_keras.models.grouped import EdgeGroup
from aca_keras.models.supernet import MixedEdge, SearchCell, SearchNetwork
from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5")


def _batch_norms(layer) -> list[keras.layers.BatchNormalization]:
    return [sub for sub in internals.sublayers(layer)
            if isinstance(sub, keras.layers.BatchNormalization)]


def _flags(layer) -> list[bool]:
    flags = [bool(bn.synchronized) for bn in _batch_norms(layer)]
    assert flags, f"{type(layer).__name__} holds no BatchNorm layer"
    return flags


def _derived(sync: bool, auxiliary: bool = True) -> DerivedNetwork:
    # every kind of edge: a full op, a partial op with its passthrough (slice at stride 1,
    # FactorizedReduce at stride 2), k = 0; a reduction cell follows a normal one
    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 2), EdgeSpec(0, 1, "max_pool_3x3", 4),
                     EdgeSpec(1, 0, "dil_conv_3x3", 0), EdgeSpec(1, 2, "avg_pool_3x3", 3)),
                    (2, 3))
    return build_model(Architecture(cell, cell, 4, OPS), (8, 8, 3), 4, cells=3, channels=4,
                       auxiliary=auxiliary, sync_batch_norm=sync)


@pytest.mark.parametrize("sync", [True, False])
def test_the_flag_reaches_every_batch_norm_of_a_derived_network(sync, tmp_path):
    model = _derived(sync)
    # stem, both preprocessings of every cell, the ops, the FactorizedReduce passthroughs and
    # the auxiliary head
    assert len(_batch_norms(model)) > 20
    assert _flags(model) == [sync] * len(_flags(model))
    config = model.get_config()
    assert config["sync_batch_norm"] is sync
    copy = DerivedNetwork.from_config(config)
    assert copy.sync_batch_norm is sync and copy.get_config() == config
    assert _flags(copy) == _flags(model)
    model.save(tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras", compile=False)
    assert reloaded.sync_batch_norm is sync
    assert _flags(reloaded) == _flags(model)


@pytest.mark.parametrize("sync", [True, False])
def test_the_flag_reaches_every_batch_norm_of_a_supernet(sync):
    network = SearchNetwork((8, 8, 3), 4, cells=3, channels=4, nodes=2, ops="darts",
                            sync_batch_norm=sync)
    network.ensure_built()
    flags = _flags(network)
    # stem + every cell's preprocessing and every parametric candidate of every mixed edge
    assert len(flags) > 40 and flags == [sync] * len(flags)
    for cell in network.search_cells:
        assert cell.sync_batch_norm is sync and cell.get_config()["sync_batch_norm"] is sync
        assert cell.groups and all(group.sync_batch_norm is sync for group in cell.groups)
    config = network.get_config()
    assert config["sync_batch_norm"] is sync
    copy = SearchNetwork.from_config(config)
    copy.ensure_built()
    assert _flags(copy) == flags
    cell_config = network.search_cells[1].get_config()
    assert _flags(SearchCell.from_config(cell_config)) == _flags(network.search_cells[1])
    group_config = network.search_cells[1].groups[0].get_config()
    group_flags = _flags(EdgeGroup.from_config(group_config))
    assert group_flags and group_flags == [sync] * len(group_flags)
    per_edge = SearchCell.from_config({**cell_config, "layout": "per_edge"})
    assert _flags(per_edge) == [sync] * len(_flags(per_edge))
    edge_config = per_edge.edges[0].get_config()
    assert _flags(MixedEdge.from_config(edge_config)) == [sync] * len(
        _flags(MixedEdge.from_config(edge_config)))


@pytest.mark.parametrize("name", [n for n in ops_lib.list_ops()
                                  if n not in ("none", "noise")])
@pytest.mark.parametrize("stride", [1, 2])
def test_create_op_passes_the_flag_to_the_operation(name, stride):
    if name == "skip_connect" and stride == 1:
        pytest.skip("an identity: no BatchNorm")
    for sync in (True, False):
        layer = ops_lib.create_op(name, 4, 4, stride, affine=False, sync_batch_norm=sync)
        assert _flags(layer) == [sync] * len(_flags(layer))
        assert layer.get_config()["sync_batch_norm"] is sync
        assert _flags(type(layer).from_config(layer.get_config())) == _flags(layer)
    # the default: not synchronised
    assert not any(_flags(ops_lib.create_op(name, 4, 4, stride)))


def test_a_factory_without_the_keyword_still_gets_synchronised_batch_norm():
    name = "test_legacy_conv_1x1"
    ops_lib.register_op(name, overwrite=True)(
        lambda ci, co, s, a: ops_lib.ReLUConvBN(co, 1, s, a))  # aca_keras 0.1.0's signature
    try:
        assert not ops_lib.get_op_spec(name).takes_sync_batch_norm
        assert _flags(ops_lib.create_op(name, 4, 4, 1, sync_batch_norm=True)) == [True]
        assert _flags(ops_lib.create_op(name, 4, 4, 1)) == [False]
    finally:
        ops_lib.unregister_op(name)
    assert ops_lib.get_op_spec("sep_conv_3x3").takes_sync_batch_norm


def test_configs_saved_without_the_key_load_unsynchronised():
    model = _derived(True, auxiliary=False)
    config = model.get_config()
    del config["sync_batch_norm"]
    old = DerivedNetwork.from_config(config)
    assert old.sync_batch_norm is False and not any(_flags(old))

    network = SearchNetwork((8, 8, 3), 4, cells=3, channels=4, nodes=1,
                            ops=["max_pool_3x3", "sep_conv_3x3"], sync_batch_norm=True)
    config = network.get_config()
    del config["sync_batch_norm"]
    old = SearchNetwork.from_config(config)
    old.ensure_built()
    assert old.sync_batch_norm is False and not any(_flags(old))

    for layer in (ops_lib.ReLUConvBN(4, sync_batch_norm=True),
                  ops_lib.DilConv(4, 3, 2, 2, sync_batch_norm=True),
                  ops_lib.SepConv(4, 4, sync_batch_norm=True),
                  ops_lib.PoolBN("max", 4, 2, sync_batch_norm=True),
                  ops_lib.FactorizedReduce(4, sync_batch_norm=True),
                  MixedEdge(["max_pool_3x3", "sep_conv_3x3"], 4, sync_batch_norm=True),
                  SearchCell(["max_pool_3x3", "sep_conv_3x3"], 4, nodes=1,
                             sync_batch_norm=True)):
        config = layer.get_config()
        del config["sync_batch_norm"]
        old = type(layer).from_config(config)
        assert old.sync_batch_norm is False and not any(_flags(old)), type(layer).__name__


def test_the_zoo_model_saved_before_the_argument_loads_unsynchronised():
    path = next(iter(sorted((Path(__file__).resolve().parents[1] / "zoo").glob("*/model.keras"))))
    with zipfile.ZipFile(path) as archive:
        saved = json.loads(archive.read("config.json"))["config"]
    assert "sync_batch_norm" not in saved  # written before the argument existed
    model = load_model(path, compile=False)
    assert model.sync_batch_norm is False and not any(_flags(model))


class _Replicas:
    """Stands for a strategy: :func:`dist.synchronize_batch_norm` reads only this."""

    def __init__(self, replicas: int):
        self.num_replicas_in_sync = replicas


def test_synchronize_batch_norm_computes_the_value_from_the_strategy():
    assert dist.synchronize_batch_norm(None) is False
    assert dist.synchronize_batch_norm(None, True) is False
    assert dist.synchronize_batch_norm(_Replicas(1), True) is False
    assert dist.synchronize_batch_norm(_Replicas(2)) is True
    assert dist.synchronize_batch_norm(_Replicas(2), False) is False
    # no module switch is left to set
    assert not hasattr(dist, "batch_norm_sync")


def test_the_search_pipeline_builds_the_supernet_with_the_computed_value():
    from aca_keras.data import loading as data
    from aca_keras.searching.pipeline import SearchConfig, build_search_network

    rng = np.random.default_rng(0)
    bundle = data.load((rng.integers(0, 255, (16, 8, 8, 3)).astype("uint8"),
                        (np.arange(16) % 2).astype("int32")))
    config = SearchConfig(dataset="<arrays>", cells=3, channels=4, nodes=1,
                          ops=["max_pool_3x3", "sep_conv_3x3"], epochs=1, seed=0)
    cases = [(None, True, False), (_Replicas(2), True, True), (_Replicas(2), False, False)]
    for strategy, setting, expected in cases:
        config.sync_batch_norm = setting
        network = build_search_network(bundle, config, 1, strategy=strategy)
        assert network.sync_batch_norm is expected
        assert _flags(network) == [expected] * len(_flags(network))
    assert build_search_network(bundle, config, 1).sync_batch_norm is False  # no strategy


@pytest.mark.parametrize("affine", [True, False])
def test_a_synchronised_layer_on_one_device_computes_what_an_unsynchronised_one_does(affine):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(2).normal(1.0, 2.0, (4, 5, 5, 6)).astype("float32"))
    results = []
    for sync in (False, True):
        layer = ops_lib.batch_norm(affine, sync_batch_norm=sync)
        assert layer.synchronized is sync
        layer.build(x.shape)
        assert layer._fusable(x, None)  # the fused kernel, synchronised or not
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(6, dtype=tf.float32))
        results.append([y.numpy(), tape.gradient(loss, x).numpy(),
                        layer.moving_mean.numpy(), layer.moving_variance.numpy(),
                        layer(x, training=False).numpy()])
    for plain, synchronised in zip(*results):
        np.testing.assert_array_equal(plain, synchronised)
