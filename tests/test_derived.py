"""The static derived network: ACA edges, drop path, auxiliary head, saving, counting."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from aca_keras import _internals as internals
from aca_keras.errors import ArchitectureError, RunDirError
from aca_keras.layers import ops as ops_lib
from aca_keras.models.derived import (
    DerivedNetwork,
    DropPath,
    build_model,
    count_flops,
    edge_width,
    load_model,
)
from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec
from aca_keras.space.genotype import Genotype

ACA = ops_lib.ACA_OPS
CONV_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def random_architecture(seed: int, reference_channels: int = 8, nodes: int = 2,
                        ops: tuple[str, ...] = ACA) -> Architecture:
    """A random valid architecture: two distinct inputs per node, random non-``none`` ops,
    random k_e in 0..C with both 0 and C present in each cell."""
    rng = np.random.default_rng(seed)
    choices = [op for op in ops if op != "none"]
    cells = []
    for _ in range(2):
        edges = []
        for node in range(nodes):
            for source in sorted(rng.choice(node + 2, size=2, replace=False)):
                k = int(rng.integers(0, reference_channels + 1))
                edges.append(EdgeSpec(node, int(source), str(rng.choice(choices)), k))
        edges[0] = EdgeSpec(edges[0].node, edges[0].input, edges[0].op, 0)
        edges[-1] = EdgeSpec(edges[-1].node, edges[-1].input, edges[-1].op, reference_channels)
        cells.append(CellSpec(tuple(edges), tuple(range(2, nodes + 2))))
    return Architecture(cells[0], cells[1], reference_channels, ops, name=f"random-{seed}")


def single_edge_architecture(op: str, k: int, reference_channels: int = 4,
                             reduce_op: str | None = None, reduce_k: int | None = None
                             ) -> Architecture:
    """One node; edge 0 from input 0 with (op, k), edge 1 from input 1 a max pool with k=C."""
    def cell(o, kk):
        return CellSpec((EdgeSpec(0, 0, o, kk), EdgeSpec(0, 1, "max_pool_3x3", reference_channels)),
                        (2,))
    return Architecture(cell(op, k), cell(reduce_op or op, k if reduce_k is None else reduce_k),
                        reference_channels, ops_lib.DARTS_OPS)


def _images(n: int, shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n,) + tuple(shape)).astype("float32")


def _params(layer) -> int:
    return int(sum(np.prod(w.shape) for w in layer.weights))


def test_edge_width_scales_and_rounds_half_up():
    assert edge_width(16, 16, 36) == 36 and edge_width(0, 16, 36) == 0
    assert edge_width(8, 16, 36) == 18
    assert edge_width(1, 16, 4) == 0  # 0.25
    assert edge_width(2, 16, 4) == 1  # 0.5 rounds up
    assert edge_width(6, 16, 4) == 2  # 1.5 rounds up (not to even)
    assert edge_width(3, 4, 8) == 6


@pytest.mark.parametrize("seed, shape, cells, channels", [
    (0, (8, 8, 3), 3, 4),
    (1, (16, 16, 1), 4, 6),
    (2, (8, 8, 3), 5, 8),
])
def test_random_architecture_trains_saves_and_reloads(tmp_path, seed, shape, cells, channels):
    arch = random_architecture(seed, reference_channels=8, nodes=2 + seed % 2)
    model = build_model(arch, shape, 5, cells=cells, channels=channels, drop_path=0.2)
    assert isinstance(model, DerivedNetwork)
    assert model.output_names == ["logits", "aux_logits"]
    assert model.architecture == arch
    widths = model.cell_channels()
    assert len(widths) == cells
    for i in range(cells):  # the width doubles at each reduction cell
        assert widths[i] == channels * 2 ** sum(r <= i for r in model.reduction_cells)
    for i, cell_width in enumerate(widths):
        spec = arch.reduce if i in model.reduction_cells else arch.normal
        for e, edge in enumerate(spec.edges):
            layers = model.edge_layers(i, e)
            assert layers.k == edge_width(edge.channels, 8, cell_width)
            assert layers.stride == (2 if i in model.reduction_cells and edge.input < 2 else 1)

    x = _images(4, shape, seed)
    y = np.arange(4, dtype="int32") % 5
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss={"logits": loss, "aux_logits": loss},
                  loss_weights={"logits": 1.0, "aux_logits": 0.4})
    logs = model.train_on_batch(x, {"logits": y, "aux_logits": y}, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0

    inference = model.inference_model()
    assert len(inference.outputs) == 1
    assert not any(layer.name.startswith("aux_") for layer in inference.layers)
    assert not any(isinstance(layer, DropPath) for layer in inference.layers)
    assert any(isinstance(layer, DropPath) for layer in model.layers)
    expected = inference.predict(x, verbose=0)
    logits, _ = model(x, training=False)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)

    path = tmp_path / "derived.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # no custom_objects
    assert type(reloaded) is DerivedNetwork
    assert reloaded.architecture == arch
    assert reloaded.get_config() == model.get_config()
    np.testing.assert_allclose(reloaded.inference_model().predict(x, verbose=0), expected,
                               rtol=1e-5, atol=1e-6)
    both = reloaded(x, training=False)
    np.testing.assert_allclose(np.asarray(both[1]), np.asarray(model(x, training=False)[1]),
                               rtol=1e-5, atol=1e-6)
    assert type(load_model(path)) is DerivedNetwork


def test_full_edge_is_a_plain_darts_edge_and_empty_edge_is_a_skip():
    c = 4
    for op in ("sep_conv_3x3", "dil_conv_5x5", "avg_pool_3x3", "skip_connect"):
        model = build_model(single_edge_architecture(op, c, c), (8, 8, 3), 3, cells=3,
                            channels=c, auxiliary=False)
        for cell in (0, 1):  # cell 0 normal (stride 1), cell 1 reduction (stride 2)
            edge = model.edge_layers(cell, 0)
            width = model.cell_channels()[cell]
            assert edge.k == width and edge.passthrough is None and edge.concat is None
            plain = ops_lib.create_op(op, width, width, edge.stride, affine=True)
            plain.build((None, 8, 8, width))
            assert _params(edge.op) == _params(plain)
            is_identity = op == "skip_connect" and edge.stride == 1
            assert (edge.drop_path is None) == is_identity

    model = build_model(single_edge_architecture("sep_conv_3x3", 0, c), (8, 8, 3), 3,
                        cells=3, channels=c, auxiliary=False)
    normal = model.edge_layers(0, 0)
    assert normal.op is None and normal.layers == []  # identity: no layer, no parameter
    reduce = model.edge_layers(1, 0)
    width = model.cell_channels()[1]
    assert reduce.op is None and isinstance(reduce.passthrough, ops_lib.FactorizedReduce)
    # FactorizedReduce(C): two 1x1 convs C -> C/2 (C*C weights) + BN (gamma, beta, mean, var)
    assert _params(reduce.passthrough) == width * width + 4 * width


def test_partial_edge_splits_channels():
    c = 8
    model = build_model(single_edge_architecture("dil_conv_3x3", 3, c, "sep_conv_3x3", 5),
                        (8, 8, 3), 3, cells=3, channels=c, auxiliary=False)
    normal = model.edge_layers(0, 0)
    assert normal.k == 3 and isinstance(normal.passthrough, ops_lib.ChannelSlice)
    assert (normal.passthrough.start, normal.passthrough.stop) == (3, c)
    op = ops_lib.create_op("dil_conv_3x3", c, 3, 1, affine=True)
    op.build((None, 8, 8, c))
    assert _params(normal.op) == _params(op)
    reduce = model.edge_layers(1, 0)
    width = model.cell_channels()[1]
    assert reduce.k == 10 and reduce.passthrough.channels_out == width - 10
    assert _params(reduce.passthrough) == width * (width - 10) + 4 * (width - 10)


def test_the_passthrough_is_the_last_input_channels():
    c = 4
    model = build_model(single_edge_architecture("sep_conv_3x3", 1, c), (8, 8, 3), 3, cells=3,
                        channels=c, auxiliary=False, drop_path=0.0)
    edge = model.edge_layers(0, 0)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, c)).astype("float32")
    out = np.asarray(edge.concat([edge.op(x, training=False), edge.passthrough(x)]))
    np.testing.assert_array_equal(out[..., 1:], x[..., 1:])


@pytest.mark.parametrize("op", ["sep_conv_3x3", "dil_conv_5x5"])
def test_parameter_count_grows_with_k(op):
    c = 4
    normal_counts, reduce_counts = [], []
    for k in range(c + 1):
        normal_counts.append(build_model(single_edge_architecture(op, k, c, "max_pool_3x3", c),
                                         (8, 8, 3), 3, cells=3, channels=c,
                                         auxiliary=False).count_params())
        reduce_counts.append(build_model(single_edge_architecture("max_pool_3x3", c, c, op, k),
                                         (8, 8, 3), 3, cells=3, channels=c,
                                         auxiliary=False).count_params())
    # stride 1: the passthrough is free, so every kept channel adds parameters
    assert all(a < b for a, b in zip(normal_counts, normal_counts[1:])), normal_counts
    # stride 2: the FactorizedReduce passthrough shrinks as the op grows
    assert all(a <= b for a, b in zip(reduce_counts, reduce_counts[1:])), reduce_counts
    assert reduce_counts[0] < reduce_counts[-1]


def test_drop_path_drops_whole_samples_at_the_keep_rate():
    layer = DropPath(0.3, seed=7)
    x = np.ones((4000, 2, 2, 3), dtype="float32")
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(len(x), -1)
    kept = per_sample[:, 0] > 0
    np.testing.assert_allclose(per_sample[kept], 1 / 0.7, rtol=1e-6)  # whole sample, scaled
    np.testing.assert_array_equal(per_sample[~kept], 0.0)
    assert abs(kept.mean() - 0.7) < 0.03  # binomial sd ~0.007
    assert abs(out.mean() - 1.0) < 0.05  # unbiased
    layer.set_rate(0.0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=True)), x)
    with pytest.raises(ValueError):
        layer.set_rate(1.0)
    assert layer.weights == []  # the rate is schedule state, not a parameter


def test_model_drop_path_rate_and_inference():
    arch = random_architecture(3, reference_channels=4)
    model = build_model(arch, (8, 8, 3), 3, cells=3, channels=4, drop_path=0.2)
    assert model.drop_path_layers and model.drop_path_rate == pytest.approx(0.2)
    model.set_drop_path_rate(0.5)
    assert all(layer.current_rate == pytest.approx(0.5) for layer in model.drop_path_layers)
    x = _images(2, (8, 8, 3))
    logits, _ = model(x, training=False)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model.inference_model()(x)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        model.set_drop_path_rate(-0.1)


def test_count_flops_matches_a_hand_count():
    images = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(images)  # 8*8*9*3*4 = 6912
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(h)  # 4*4*9*4 = 576
    h = ops_lib.SepConv(4, 6, 3, 1)(h)  # 576 + 4*4*4*4 + 576 + 4*4*4*6 = 1792
    h = ops_lib.FactorizedReduce(6)(h)  # 2 * (2*2*6*3) = 144
    h = ops_lib.DilConv(5, 3, stride=2, dilation=2)(h)  # at stride 1: 2*2*9*6 + 1*1*6*5 = 246
    h = keras.layers.GlobalAveragePooling2D()(h)
    logits = keras.layers.Dense(7)(h)  # 5*7 = 35
    tiny = keras.Model(images, logits)
    expected = 6912 + 576 + 1792 + 144 + 246 + 35
    assert count_flops(tiny) == expected
    assert count_flops(tiny, batch_size=3) == 3 * expected


def test_model_flops_exclude_the_auxiliary_head():
    arch = random_architecture(4, reference_channels=4)
    with_aux = build_model(arch, (8, 8, 3), 3, cells=3, channels=4, auxiliary=True)
    without = build_model(arch, (8, 8, 3), 3, cells=3, channels=4, auxiliary=False)
    assert with_aux.flops() == without.flops() > 0
    assert with_aux.count_params() > without.count_params()
    assert with_aux.inference_model().count_params() == without.count_params()
    # fewer kept channels, fewer multiply-adds
    zero = arch.with_channels([0] * len(arch.normal.edges), [0] * len(arch.reduce.edges))
    assert build_model(zero, (8, 8, 3), 3, cells=3, channels=4).flops() < without.flops()


def test_size_is_a_hand_count_without_the_auxiliary_head():
    """Every edge k_e = 0: the normal cell's edges are identities (no weights), the reduction
    cells' edges FactorizedReduce. 3 cells (normal C=4, reduction C=8, reduction C=16), one
    node, stem 12 channels, 8x8x3 images, 3 classes; BatchNorm: 4 weights per channel."""
    cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 0), EdgeSpec(0, 1, "sep_conv_3x3", 0)),
                    (2,))
    arch = Architecture(cell, cell, 4, ops_lib.DARTS_OPS)
    model = build_model(arch, (8, 8, 3), 3, cells=3, channels=4, auxiliary=True,
                        drop_path=0.0)

    def fr(c_in, c):  # FactorizedReduce(c): two 1x1 convs c_in -> c/2, BatchNorm(c)
        return 2 * c_in * (c // 2) + 4 * c

    def rcb(c_in, c):  # ReLUConvBN 1x1
        return c_in * c + 4 * c

    parameters = (3 * 3 * 3 * 12 + 4 * 12                 # stem
                  + rcb(12, 4) + rcb(12, 4)               # cell 0: edges are identities
                  + rcb(12, 8) + rcb(4, 8) + 2 * fr(8, 8)     # cell 1
                  + fr(4, 16) + rcb(8, 16) + 2 * fr(16, 16)  # cell 2 (after a reduction)
                  + 16 * 3 + 3)                           # classifier
    multiply_adds = (64 * 27 * 12                         # stem 3x3 conv on 8x8
                     + 2 * 64 * 12 * 4                    # cell 0 preprocessing
                     + 64 * 12 * 8 + 64 * 4 * 8 + 2 * 2 * 16 * 8 * 4   # cell 1
                     + 2 * 16 * 4 * 8 + 16 * 8 * 16 + 2 * 2 * 4 * 16 * 8  # cell 2
                     + 16 * 3)                            # classifier
    assert (parameters, multiply_adds) == (1895, 42288)
    assert model.size() == {"parameters": parameters, "multiply_adds": multiply_adds}
    assert model.count_params() > parameters  # the auxiliary head is left out
    assert build_model(arch, (8, 8, 3), 3, cells=3, channels=4, auxiliary=False,
                       drop_path=0.0).size() == model.size()


def test_config_and_validation():
    arch = random_architecture(5, reference_channels=4)
    model = build_model(arch, (8, 8, 3), 3, cells=3, channels=4, auxiliary=False)
    config = model.get_config()
    assert config["architecture"] == arch.to_dict() and config["nodes"] == arch.nodes
    assert config["mean"] == [0.5] * 3 and config["std"] == [0.5] * 3
    clone = DerivedNetwork.from_config(config)
    assert clone.get_config() == config and clone.architecture == arch
    with pytest.raises(ArchitectureError, match="nodes"):
        build_model(arch, (8, 8, 3), 3, cells=3, channels=4, nodes=arch.nodes + 1)
    bad = Architecture(arch.normal, CellSpec(arch.reduce.edges, (0, 2, 3)), 4, arch.ops)
    with pytest.raises(ArchitectureError, match="reduction cell"):
        build_model(bad, (8, 8, 3), 3, cells=3, channels=4)
    with pytest.raises(ValueError, match="input_shape"):
        build_model(arch, (8, 8), 3, cells=3, channels=4)


def test_load_model_errors(tmp_path):
    with pytest.raises(RunDirError, match="No model file"):
        load_model(tmp_path / "missing.keras")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(RunDirError, match="not a loadable"):
        load_model(corrupt)


def test_darts_v2_matches_the_published_network():
    """DARTS V2 at 20 cells, C = 36 on CIFAR: PyTorch DARTS counts 3,349,342 parameters
    (without the auxiliary head) and ~528 M multiply-adds. ops.py adds an affine BatchNorm
    after the pools (DARTS's evaluation pools have none): 10 max pools in the two reduction
    cells, 2 * (5 * 72 + 5 * 144) = 2,160 parameters more."""
    from aca_keras.space.genotype import Genotype

    genotype = Genotype(
        normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
                ("skip_connect", 0), ("dil_conv_3x3", 2)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
                ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2),
                ("skip_connect", 2), ("max_pool_3x3", 1)),
        reduce_concat=(2, 3, 4, 5))
    model = build_model(Architecture.from_genotype(genotype, 16, "darts"), (32, 32, 3), 10)
    inference = model.inference_model()
    trainable = sum(int(np.prod(v.shape)) for v in inference.trainable_weights)
    assert trainable == 3_349_342 + 2_160
    assert round(model.flops() / 1e6) == 528


def test_models_saved_by_0_1_0_keep_their_stride2_padding():
    """A DerivedNetwork config without ``centred_stride2`` (aca_keras 0.1.0) rebuilds with
    TF's "same" stride-2 padding, the one its weights were trained with; new models centre
    their stride-2 windows as DARTS does."""
    from aca_keras.layers import ops
    from aca_keras.models.derived import DerivedNetwork

    genotype = Genotype(normal=(("sep_conv_3x3", 0), ("max_pool_3x3", 1)), normal_concat=(2,),
                        reduce=(("sep_conv_3x3", 0), ("avg_pool_3x3", 1)), reduce_concat=(2,))
    arch = Architecture.from_genotype(genotype, 4, ("none", "max_pool_3x3", "avg_pool_3x3",
                                                    "sep_conv_3x3"))
    model = build_model(arch, (8, 8, 3), 3, cells=3, channels=4, auxiliary=False)
    config = model.get_config()
    assert config["centred_stride2"] is True
    del config["centred_stride2"]
    legacy = DerivedNetwork.from_config(config)
    assert legacy.centred_stride2 is False

    def strided(m):
        return [layer for layer in internals.sublayers(m)
                if isinstance(layer, (ops.DilConv, ops.PoolBN)) and layer.stride == 2]

    assert strided(model) and all(layer.centred for layer in strided(model))
    assert strided(legacy) and not any(layer.centred for layer in strided(legacy))
