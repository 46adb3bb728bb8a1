"""Grouped mixed edges (aca_keras.models.grouped): the edges into one node computed as one wide
operation per candidate must compute exactly what the edges compute one by one (float64),
their per-edge views must read and write the grouped storage, and supernets of either layout
must be interchangeable (weights copied edge by edge give the same logits; a checkpoint of
the other layout is refused with the way to load it)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_case import dtype_policy

from aca_keras.errors import RunDirError
from aca_keras.io.checkpoint import load_checkpoint, save_checkpoint
from aca_keras.models.grouped import (
    EdgeGroup,
    GroupedSepConv,
    channel_scales,
    group_layout,
    per_edge_weights,
)
from aca_keras.models.supernet import (
    EdgeTap,
    MixedEdge,
    SearchCell,
    SearchNetwork,
    copy_supernet_weights,
)
from aca_keras.searching.config import SearchConfig
from aca_keras.space.op_sets import DARTS_OPS

OPS = list(DARTS_OPS)  # every candidate, skip_connect (a FactorizedReduce at stride 2) too
C = 4


def _randomise(views_or_variables, rng) -> dict:
    """Random values (positive variances) for ``{name: variable or view}``; returns them."""
    values = {}
    for name, variable in views_or_variables.items():
        shape = tuple(variable.shape)
        value = (rng.uniform(0.5, 1.5, shape) if "moving_variance" in name
                 else rng.normal(size=shape))
        variable.assign(value)
        values[name] = np.asarray(value, dtype=np.asarray(variable.numpy()).dtype)
    return values


def _relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(b))))


def _pair(edges: int, stride: int, partial_k: int, rng):
    """A built EdgeGroup and as many MixedEdges holding the same values."""
    group = EdgeGroup(OPS, C, edges, stride, partial_k=partial_k)
    mixed = [MixedEdge(OPS, C, stride, partial_k=partial_k) for _ in range(edges)]
    return group, mixed


@pytest.mark.parametrize("size, stride", [(8, 1), (9, 1), (8, 2), (9, 2)])
@pytest.mark.parametrize("partial_k", [1, 2])
def test_grouped_node_equals_the_sum_of_its_edges_one_by_one(size, stride, partial_k):
    """Forward (inference and training), the moving statistics after a training pass, and
    the gradients of the inputs, the mixing weights, the edge weights and every variable."""
    rng = np.random.default_rng(size * 10 + stride + partial_k)
    edges = 3
    with dtype_policy("float64"):
        group, mixed = _pair(edges, stride, partial_k, rng)
        xs = [tf.constant(rng.normal(size=(2, size, size, C))) for _ in range(edges)]
        group.build([x.shape for x in xs])
        for edge, x in zip(mixed, xs):
            edge.build(x.shape)
        for e, edge in enumerate(mixed):
            values = _randomise(per_edge_weights(edge), rng)
            views = group.edge_weights(e)
            for name, value in values.items():
                views[name].assign(value)
        weights = tf.constant(rng.dirichlet(np.ones(len(OPS)), size=edges))
        betas = tf.constant(rng.uniform(0.2, 1.0, size=edges))
        for training in (False, True):
            for edge_weights in (None, betas):
                watched = [*xs, weights, betas]
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch(watched)
                    got = group(xs, weights, edge_weights=edge_weights, training=training)
                    want = None
                    for e, (edge, x) in enumerate(zip(mixed, xs)):
                        out = edge(x, tf.unstack(weights[e]), training=training)
                        if edge_weights is not None:
                            out = edge_weights[e] * out
                        want = out if want is None else want + out
                    loss_got = tf.reduce_sum(tf.sin(got))
                    loss_want = tf.reduce_sum(tf.sin(want))
                assert got.shape == want.shape
                assert _relative(got, want) < 1e-12
                for g, w in zip(tape.gradient(loss_got, watched),
                                tape.gradient(loss_want, watched)):
                    if w is None:  # betas unused without edge weights
                        assert g is None
                        continue
                    assert _relative(g, w) < 1e-10
                grouped_vars = group.trainable_variables
                grads = dict(zip([id(v) for v in grouped_vars],
                                 tape.gradient(loss_got, grouped_vars)))
                for e, edge in enumerate(mixed):
                    reference = per_edge_weights(edge)
                    edge_grads = tape.gradient(loss_want, [reference[n] for n in reference])
                    views = group.edge_weights(e)
                    for (name, _), expected in zip(reference.items(), edge_grads):
                        if expected is None:  # moving statistics
                            continue
                        view = views[name]
                        part = view.part(grads[id(view.variable)])
                        assert _relative(part, expected) < 1e-10, name
                # the moving statistics moved identically in a training pass
                for e, edge in enumerate(mixed):
                    views = group.edge_weights(e)
                    for name, variable in per_edge_weights(edge).items():
                        np.testing.assert_allclose(views[name].numpy(), variable.numpy(),
                                                   rtol=1e-12, atol=1e-14)


def test_prepared_channel_weights_compute_the_same_node():
    """channel_scales (what a cell prepares once for all its groups) gives the node that the
    raw weight matrix gives, with and without edge weights."""
    rng = np.random.default_rng(3)
    with dtype_policy("float64"):
        group = EdgeGroup(OPS, C, 3, 1)
        xs = [tf.constant(rng.normal(size=(2, 8, 8, C))) for _ in range(3)]
        weights = tf.constant(rng.dirichlet(np.ones(len(OPS)), size=3))
        betas = tf.constant(rng.uniform(size=3))
        for edge_weights in (None, betas):
            raw = group(xs, weights, edge_weights=edge_weights, training=False)
            scales = channel_scales(weights, OPS, C, edge_weights)
            assert len(scales) == len(group.candidates)
            prepared = group(xs, scales, training=False)
            assert _relative(prepared, raw) < 1e-14
        # edge e's channels of candidate k carry w[e, k]
        scales = channel_scales(weights, OPS, C, None, sizes=[2, 1])
        k = 1  # the first candidate after 'none'
        np.testing.assert_array_equal(scales[0][k - 1].numpy(),
                                      np.repeat(weights.numpy()[:2, k], C))
        np.testing.assert_array_equal(scales[1][k - 1].numpy(),
                                      np.repeat(weights.numpy()[2:, k], C))


def test_views_read_and_write_only_their_edges_part():
    rng = np.random.default_rng(4)
    layer = GroupedSepConv(3, C, C, 5, 1)
    layer.build((2, 8, 8, 3 * C))
    reference = MixedEdge(["sep_conv_5x5"], C, 1)
    reference.build((2, 8, 8, C))
    names = list(per_edge_weights(reference))
    views = layer.edge_weights(1, "sep_conv_5x5.")
    assert list(views) == names  # the per-edge names and order
    for name in names:
        assert views[name].shape == tuple(per_edge_weights(reference)[name].shape)
    before = {id(v): v.numpy().copy() for v in layer.weights}
    written = _randomise(views, rng)
    for name, view in views.items():
        np.testing.assert_array_equal(view.numpy(), written[name])
        whole = view.variable.numpy()
        # the other edges' parts are as they were
        for other in (0, 2):
            other_view = layer.edge_weights(other, "sep_conv_5x5.")[name]
            np.testing.assert_array_equal(other_view.part(whole),
                                          other_view.part(before[id(view.variable)]))
    # writing the grouped variable shows in the view
    kernel = layer.first.depthwise_kernel
    value = rng.normal(size=tuple(kernel.shape)).astype("float32")
    kernel.assign(value)
    np.testing.assert_array_equal(views["sep_conv_5x5.first.depthwise.kernel"].numpy(),
                                  value[:, :, C:2 * C, :])


def test_group_layout_covers_every_edge_once_with_its_stride():
    for nodes in (1, 2, 4):
        for reduction in (False, True):
            layout = group_layout(nodes, reduction)
            edges = [(node, first + i, stride) for node, first, n, stride in layout
                     for i in range(n)]
            expected = [(node, source, 2 if reduction and source < 2 else 1)
                        for node in range(nodes) for source in range(2 + node)]
            assert edges == expected


def _cell_pair(reduction: bool, rng):
    cells = {layout: SearchCell(OPS, C, reduction=reduction, reduction_prev=False, nodes=3,
                                layout=layout) for layout in ("grouped", "per_edge")}
    for cell in cells.values():
        cell.build(((2, 8, 8, 6), (2, 8, 8, 6)))
    for index in range(9):
        _randomise(cells["per_edge"].edge(index).weights(), rng)
    source, target = cells["per_edge"], cells["grouped"]
    for variable_from, variable_to in zip(
            [source.preprocess0, source.preprocess1], [target.preprocess0, target.preprocess1]):
        for v_from, v_to in zip(variable_from.weights, variable_to.weights):
            v_to.assign(v_from.numpy())
    for index in range(9):
        views_from = source.edge(index).weights()
        views_to = target.edge(index).weights()
        assert views_from.keys() == views_to.keys()
        for name, view in views_from.items():
            views_to[name].assign(view.numpy())
    return cells


@pytest.mark.parametrize("reduction", [False, True])
def test_cells_of_both_layouts_compute_the_same_and_taps_see_the_same_terms(reduction):
    rng = np.random.default_rng(5)
    with dtype_policy("float64"):
        cells = _cell_pair(reduction, rng)
        s0, s1 = (tf.constant(rng.normal(size=(2, 8, 8, 6))) for _ in range(2))
        weights = tf.constant(rng.dirichlet(np.ones(len(OPS)), size=9))
        outputs = {k: cell((s0, s1), weights, training=True) for k, cell in cells.items()}
        assert _relative(outputs["grouped"], outputs["per_edge"]) < 1e-12
        betas = tf.constant(rng.uniform(0.2, 1.0, size=9))
        for edge_weights in (None, betas):  # the fast path, and edge by edge with betas
            captured = {}
            for layout, cell in cells.items():
                taps = {4: {2: EdgeTap()}, 7: {0: EdgeTap(transform=lambda x, a, w: 2.0 * a)}}
                with tf.GradientTape() as tape:
                    out = cell((s0, s1), weights, training=False, taps=taps,
                               edge_weights=edge_weights)
                    loss = tf.reduce_sum(tf.sin(out))
                terms = [taps[4][2].captured[0][1], taps[7][0].captured[0][1]]
                captured[layout] = (out, taps, tape.gradient(loss, terms))
            out_g, taps_g, grads_g = captured["grouped"]
            out_p, taps_p, grads_p = captured["per_edge"]
            assert _relative(out_g, out_p) < 1e-12
            for g, p in zip(grads_g, grads_p):  # dL/da, what channel scoring reads
                assert g is not None and _relative(g, p) < 1e-12
            for edge, position in ((4, 2), (7, 0)):
                (x_g, a_g, w_g), = taps_g[edge][position].captured
                (x_p, a_p, w_p), = taps_p[edge][position].captured
                assert _relative(x_g, x_p) < 1e-12
                assert _relative(a_g, a_p) < 1e-12
                assert float(w_g) == float(w_p)


def _tiny(layout: str) -> SearchNetwork:
    network = SearchNetwork((8, 8, 3), 3, cells=3, channels=4, nodes=2, layout=layout)
    network.ensure_built()
    return network


def test_weights_copied_between_layouts_give_the_same_logits(tmp_path):
    rng = np.random.default_rng(6)
    old, new = _tiny("per_edge"), _tiny("grouped")
    for variable in old.weights:
        shape = tuple(variable.shape)
        variable.assign(rng.uniform(0.5, 1.5, shape) if "variance" in variable.path
                        else 0.3 * rng.normal(size=shape))
    copy_supernet_weights(old, new)
    images = rng.uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    for training in (False, True):
        np.testing.assert_allclose(new(images, training=training).numpy(),
                                   old(images, training=training).numpy(),
                                   rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="differ in"):
        copy_supernet_weights(old, SearchNetwork((8, 8, 3), 3, cells=3, channels=8, nodes=2))


def test_a_checkpoint_of_the_other_layout_is_refused_with_how_to_load_it(tmp_path):
    old, new = _tiny("per_edge"), _tiny("grouped")
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, old, {}, {"epoch": 1})
    with pytest.raises(RunDirError, match="layout='per_edge'.*copy_supernet_weights"):
        load_checkpoint(path, new, {})
    again = _tiny("per_edge")
    assert load_checkpoint(path, again, {}) == {"epoch": 1}
    for a, b in zip(old.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    save_checkpoint(path, new, {}, {"epoch": 2})
    with pytest.raises(RunDirError, match="layout='grouped'"):
        load_checkpoint(path, _tiny("per_edge"), {})


def test_configs_saved_before_the_grouped_layout_load_per_edge():
    network = _tiny("grouped")
    config = network.get_config()
    assert config["layout"] == "grouped"
    assert SearchNetwork.from_config(config).layout == "grouped"
    old = {k: v for k, v in config.items() if k != "layout"}
    assert SearchNetwork.from_config(old).layout == "per_edge"
    cell_config = {k: v for k, v in network.search_cells[0].get_config().items()
                   if k != "layout"}
    assert SearchCell.from_config(cell_config).layout == "per_edge"
    assert SearchConfig().layout == "grouped"
    assert SearchConfig.from_dict({}).layout == "per_edge"  # a run written before
    assert SearchConfig.from_dict({"layout": "grouped"}).layout == "grouped"
    with pytest.raises(ValueError, match="layout"):
        SearchConfig(layout="stacked").validate()
    with pytest.raises(ValueError, match="Unknown supernet layout"):
        SearchNetwork((8, 8, 3), 3, layout="stacked")


def test_aca_search_takes_the_layout():
    from aca_keras.cli.search import build_parser

    parser = build_parser()
    assert parser.parse_args(["--layout", "per_edge"]).layout == "per_edge"
    assert parser.parse_args([]).layout is None  # the SearchConfig default, grouped
    assert "per_edge" in " ".join(parser.format_help().split())
