"""Tests of aca_keras.plots: cell pictures, alpha history plots, run pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from aca_keras import plots
from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

ACA = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5")
C = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Overrides conftest's fixture: no Keras model is built here, and its per-test
    ``clear_session`` (a full garbage collection) would dominate the run time."""
    yield


def cell(channels=(16, 12, 0, 16, 5, 16, 16, 8)) -> CellSpec:
    pairs = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0),
             ("dil_conv_3x3", 2), ("max_pool_3x3", 1), ("avg_pool_3x3", 3),
             ("dil_conv_5x5", 0), ("sep_conv_3x3", 4)]
    edges = [EdgeSpec(k // 2, i, op, ch) for k, ((op, i), ch) in enumerate(zip(pairs, channels))]
    return CellSpec(tuple(edges), (2, 3, 4, 5))


def reduce_cell() -> CellSpec:
    edges = [EdgeSpec(0, 0, "max_pool_3x3", 16), EdgeSpec(0, 1, "max_pool_3x3", 3),
             EdgeSpec(1, 1, "avg_pool_3x3", 16), EdgeSpec(1, 2, "sep_conv_3x3", 0),
             EdgeSpec(2, 0, "max_pool_3x3", 16), EdgeSpec(2, 3, "dil_conv_3x3", 7),
             EdgeSpec(3, 1, "sep_conv_5x5", 16), EdgeSpec(3, 4, "max_pool_3x3", 16)]
    return CellSpec(tuple(edges), (2, 3, 4, 5))


def assert_png(path: Path, min_width: int = 300, min_height: int = 200) -> tuple[int, int]:
    """A readable PNG of non-trivial size and content; returns (width, height)."""
    from matplotlib.image import imread
    from PIL import Image

    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert width >= min_width and height >= min_height
    pixels = imread(path)
    assert pixels.shape[:2] == (height, width)
    rgb = pixels[..., :3].reshape(-1, 3)
    # Not a blank canvas: a good share of non-white pixels and several colours.
    assert np.mean(np.any(rgb < 0.9, axis=1)) > 0.01
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20
    return width, height


def write_history(path: Path, epochs: int = 3, nodes: int = 4, ops=ACA) -> dict[str, list]:
    """A hand-written alphas.jsonl with ``epochs`` records; returns the logits per epoch."""
    edges = nodes * (nodes + 3) // 2
    rng = np.random.default_rng(0)
    logits = {"normal": [], "reduce": []}
    with open(path, "w", encoding="utf-8") as handle:
        for epoch in range(1, epochs + 1):
            alphas = {c: (epoch * rng.normal(0.0, 0.3, (edges, len(ops)))).tolist()
                      for c in ("normal", "reduce")}
            for c in alphas:
                logits[c].append(alphas[c])
            genotype = {"format": "aca_keras.genotype", "version": 1,
                        "normal": [["sep_conv_3x3", 0], ["sep_conv_5x5", 1],
                                   ["dil_conv_3x3", 0], ["max_pool_3x3", 2],
                                   ["sep_conv_3x3", 1], ["avg_pool_3x3", 3],
                                   ["dil_conv_5x5", 2], ["sep_conv_3x3", 4]][: 2 * nodes],
                        "normal_concat": list(range(2, 2 + nodes)),
                        "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1],
                                   ["avg_pool_3x3", 0], ["sep_conv_3x3", 2],
                                   ["max_pool_3x3", 1], ["dil_conv_3x3", 3],
                                   ["sep_conv_5x5", 0], ["max_pool_3x3", 4]][: 2 * nodes],
                        "reduce_concat": list(range(2, 2 + nodes)), "edges_per_node": 2}
            handle.write(json.dumps({"epoch": epoch, "metrics": {"loss": 2.0 / epoch},
                                     "alphas": alphas, "genotype": genotype}) + "\n")
    return logits


def softmax(x):
    e = np.exp(np.asarray(x) - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------ labels


def test_edge_label_shows_op_and_k_over_c():
    assert plots.edge_label(EdgeSpec(0, 1, "sep_conv_3x3", 12), 16) == "sep_conv_3x3 12/16"
    assert plots.edge_label(EdgeSpec(2, 3, "dil_conv_5x5", 16), 16) == "dil_conv_5x5 16/16"
    assert plots.edge_label(EdgeSpec(1, 0, "max_pool_3x3", 1), 8) == "max_pool_3x3 1/8"
    # k_e = 0: the edge is a pure identity at stride 1, whatever operation it kept ...
    assert plots.edge_label(EdgeSpec(0, 0, "sep_conv_5x5", 0), 16) == "identity 0/16"
    assert plots.edge_label(EdgeSpec(1, 2, "sep_conv_5x5", 0), 16,
                            reduction=True) == "identity 0/16"
    # ... and a FactorizedReduce at stride 2 (from the inputs of a reduction cell)
    assert plots.edge_label(EdgeSpec(0, 0, "sep_conv_5x5", 0), 16,
                            reduction=True) == "factorized_reduce 0/16"
    assert plots.edge_label(EdgeSpec(0, 1, "skip_connect", 16), 16,
                            reduction=True) == "skip_connect 16/16"
    with pytest.raises(ValueError, match="reference_channels"):
        plots.edge_label(EdgeSpec(0, 0, "sep_conv_5x5", 0), 0)


def test_state_names():
    assert plots.state_name(0) == "c_{k-2}" and plots.state_name(1) == "c_{k-1}"
    assert plots.state_name(2) == "0" and plots.state_name(5) == "3"
    assert plots.state_name(0, tex=True) == "$c_{k-2}$"


# ----------------------------------------------------------------------------------- cells


def figure_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_cell_figure_has_every_label_and_node():
    spec = cell()
    fig = plots._cell_figure(spec, C, "normal cell", reduction=False)
    texts = figure_texts(fig)
    expected = ["sep_conv_3x3 16/16", "sep_conv_3x3 12/16", "identity 0/16",
                "dil_conv_3x3 16/16", "max_pool_3x3 5/16", "avg_pool_3x3 16/16",
                "dil_conv_5x5 16/16", "sep_conv_3x3 8/16"]
    for label in expected:
        assert texts.count(label) == expected.count(label), label
    for node in ("$c_{k-2}$", "$c_{k-1}$", "0", "1", "2", "3", "$c_{k}$"):
        assert node in texts
    assert "normal cell" in texts
    # 8 edges into nodes + 4 into the output, each one arrow.
    ax = fig.axes[0]
    arrows = [p for p in ax.patches if type(p).__name__ == "FancyArrowPatch"]
    assert len(arrows) == 12


def test_cell_layout_inputs_left_output_right():
    pos = plots._positions(cell())
    xs = {k: v[0] for k, v in pos.items()}
    assert xs[0] == xs[1] == min(xs.values())
    assert xs["out"] == max(xs.values())
    # Layered by dependency: every edge goes left to right.
    for e in cell().edges:
        assert xs[e.input] < xs[e.node + 2]
    # No two states share a position.
    assert len({tuple(v) for v in pos.values()}) == len(pos)


def test_draw_cell_writes_png(tmp_path):
    path = plots.draw_cell(cell(), C, tmp_path / "sub" / "cell.png", renderer="matplotlib")
    assert path == tmp_path / "sub" / "cell.png"
    assert_png(path)
    # No temporary file is left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["cell.png"]


def test_draw_cell_with_zero_channel_edges(tmp_path):
    all_identity = cell(channels=(0,) * 8)
    path = plots.draw_cell(all_identity, C, tmp_path / "identity.png", renderer="matplotlib",
                           title="every edge identity")
    assert_png(path)
    texts = figure_texts(plots._cell_figure(all_identity, C, "t", reduction=False))
    assert texts.count("identity 0/16") == 8


def test_draw_reduction_cell_title_and_note(tmp_path):
    path = plots.draw_cell(reduce_cell(), C, tmp_path / "r.png", reduction=True,
                           renderer="matplotlib")
    assert_png(path)
    texts = figure_texts(plots._cell_figure(reduce_cell(), C, plots._cell_title(None, True),
                                            reduction=True))
    assert "reduction cell" in texts
    assert any("stride 2" in t for t in texts)
    assert "identity 0/16" in texts and "dil_conv_3x3 7/16" in texts


def dashed_arrows(fig) -> list[str]:
    """The dashed arrows of a cell figure, in drawing order."""
    arrows = [p for p in fig.axes[0].patches if type(p).__name__ == "FancyArrowPatch"]
    return [p for p in arrows if p.get_linestyle() not in ("-", "solid")]


def test_identity_edges_are_dashed_and_the_subtitle_counts_them():
    """The hand-made reduction-cell case: k_e = 0 from input 0 is a FactorizedReduce (solid,
    labelled factorized_reduce), k_e = 0 from node 0 the identity (dashed), a stride-1
    skip_connect an identity too (dashed); kept channels by kind in the subtitle."""
    edges = (EdgeSpec(0, 0, "sep_conv_3x3", 0), EdgeSpec(0, 1, "max_pool_3x3", 16),
             EdgeSpec(1, 1, "sep_conv_5x5", 6), EdgeSpec(1, 2, "dil_conv_3x3", 0),
             EdgeSpec(2, 2, "skip_connect", 16), EdgeSpec(2, 3, "avg_pool_3x3", 4))
    spec = CellSpec(edges, (2, 3, 4))
    fig = plots._cell_figure(spec, C, "t", reduction=True)
    texts = figure_texts(fig)
    for label in ("factorized_reduce 0/16", "identity 0/16", "skip_connect 16/16",
                  "max_pool_3x3 16/16", "sep_conv_5x5 6/16", "avg_pool_3x3 4/16"):
        assert texts.count(label) == 1, label
    dashed = dashed_arrows(fig)
    assert len(dashed) == 2  # the identity and the skip_connect; not the FactorizedReduce
    assert all(p.get_edgecolor()[:3] == pytest.approx((0x8a / 255,) * 3) for p in dashed)
    subtitle = next(t for t in texts if "identity edges" in t)
    # parameter-free: max_pool 16 + skip 16 + avg_pool 4 of 48; parametric: 0 + 6 + 0 of 48
    assert ("identity edges (dashed): 2; kept channels 42/96: parameter-free 36/48, "
            "parametric 6/48") in subtitle
    # the same edges in a normal cell: the k_e = 0 edge from input 0 is an identity too
    normal = plots._cell_figure(spec, C, "t", reduction=False)
    assert len(dashed_arrows(normal)) == 3
    assert figure_texts(normal).count("identity 0/16") == 2
    source = plots.cell_to_dot(spec, C, reduction=True)
    assert '"factorized_reduce 0/16", color="#5c5c9e", fontcolor="#202020"];' in source
    assert '"identity 0/16", color="#8a8a8a", fontcolor="#202020", style=dashed];' in source
    assert '"skip_connect 16/16", color="#8a8a8a", fontcolor="#202020", style=dashed];' in source
    assert source.count("style=dashed") == 2
    assert "identity edges (dashed): 2" in source


def test_chain_cell_edges_avoid_nodes():
    """A cell whose nodes form a chain puts them on one row; edges that skip nodes must
    curve around the nodes in between."""
    edges = (EdgeSpec(0, 0, "sep_conv_3x3", 16), EdgeSpec(0, 1, "sep_conv_3x3", 16),
             EdgeSpec(1, 2, "sep_conv_3x3", 16), EdgeSpec(1, 0, "sep_conv_3x3", 16),
             EdgeSpec(2, 3, "max_pool_3x3", 16), EdgeSpec(2, 2, "sep_conv_5x5", 16),
             EdgeSpec(3, 4, "dil_conv_3x3", 16), EdgeSpec(3, 1, "avg_pool_3x3", 16))
    chain = CellSpec(edges, (2, 3, 4, 5))
    pos = plots._positions(chain)
    routed = [(e.input, e.node + 2, plots.edge_label(e, C)) for e in chain.edges]
    routed += [(s, "out", None) for s in chain.concat]
    routes = plots._route(pos, routed)
    t = np.linspace(0.06, 0.94, 61)
    for (a, b, _), (rad, _) in zip(routed, routes):
        curve = plots._bezier(np.array(pos[a]), np.array(pos[b]), rad, t)
        for key, centre in pos.items():
            if key in (a, b):
                continue
            gap = np.min(np.linalg.norm(curve - np.array(centre), axis=1))
            assert gap > plots._RADIUS, (a, b, key)


def test_dot_source_and_renderer_choice(tmp_path, monkeypatch):
    source = plots.cell_to_dot(cell(), C, reduction=True)
    assert source.startswith("digraph cell {")
    # the k_e = 0 edge leaves input 0: stride 2 in a reduction cell
    assert '"sep_conv_3x3 12/16"' in source and '"factorized_reduce 0/16"' in source
    assert '"identity 0/16"' in plots.cell_to_dot(cell(), C, reduction=False)
    assert "in0 -> n0" in source and "n2 -> n3" in source and "n3 -> out" in source
    assert "stride 2" in source and "reduction cell" in source
    with pytest.raises(ValueError, match="renderer"):
        plots.draw_cell(cell(), C, tmp_path / "x.png", renderer="svg")
    monkeypatch.setattr(plots, "graphviz_available", lambda: False)
    with pytest.raises(ImportError, match="graphviz"):
        plots.draw_cell(cell(), C, tmp_path / "x.png", renderer="graphviz")
    # "auto" falls back to matplotlib.
    assert_png(plots.draw_cell(cell(), C, tmp_path / "auto.png"))


@pytest.mark.skipif(not plots.graphviz_available(),
                    reason="graphviz Python package or dot program not installed")
def test_draw_cell_with_graphviz(tmp_path):
    assert_png(plots.draw_cell(cell(), C, tmp_path / "gv.png", renderer="graphviz"),
               min_width=200, min_height=100)


# ----------------------------------------------------------------------------- alpha history


def test_alpha_history_plot_three_epochs(tmp_path):
    history = tmp_path / "alphas.jsonl"
    logits = write_history(history, epochs=3)
    path = plots.plot_alpha_history(history, ACA, tmp_path / "alphas.png")
    assert path == tmp_path / "alphas.png"
    assert_png(path, min_width=800, min_height=800)

    records = plots.read_alpha_history(history)
    histories = {c: plots._history(records, c, len(ACA), "h") for c in ("normal", "reduce")}
    fig = plots._alpha_figure(histories, ACA, records[-1])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2 * 14
    for ax in visible:
        assert len(ax.lines) == len(ACA)
    # The lines are the softmax weights: check edge (node 1, input 2) = row 4 of the normal
    # cell, the first section; axes are row-major over a 4 x 5 grid.
    ax = fig.subfigs[0].axes[1 * 5 + 2]
    assert ax.get_title().startswith("0 \u2192 1")
    expected = softmax(np.array(logits["normal"])[:, 4, :])
    for col, line in enumerate(ax.lines):
        np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), expected[:, col], rtol=1e-12)
    # Edges kept by the last genotype carry the operation in their title.
    titles = [a.get_title() for a in fig.subfigs[0].axes if a.get_visible()]
    assert "$c_{k-2}$ \u2192 0  [sep_conv_3x3]" in titles
    assert "1 \u2192 2  [avg_pool_3x3]" in titles
    assert "2 \u2192 3  [sep_conv_3x3]" in titles
    assert sum("[" in t for t in titles) == 8
    legend_texts = [t.get_text() for t in fig.subfigs[-1].legends[0].get_texts()]
    assert legend_texts == list(ACA)


def test_alpha_history_single_cell_and_small_supernet(tmp_path):
    history = tmp_path / "alphas.jsonl"
    write_history(history, epochs=1, nodes=2)
    path = plots.plot_alpha_history(history, ACA, tmp_path / "a.png", cells=("reduce",))
    assert_png(path, min_width=300, min_height=300)


def test_alpha_history_errors(tmp_path):
    history = tmp_path / "alphas.jsonl"
    write_history(history, epochs=2)
    with pytest.raises(ValueError, match="expected \\(num_edges, 8\\)"):
        plots.plot_alpha_history(history, ACA + ("skip_connect",), tmp_path / "x.png")
    with pytest.raises(ValueError, match="cells"):
        plots.plot_alpha_history(history, ACA, tmp_path / "x.png", cells=("both",))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no epoch"):
        plots.plot_alpha_history(empty, ACA, tmp_path / "x.png")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(history.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        plots.plot_alpha_history(broken, ACA, tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        plots.plot_alpha_history(tmp_path / "missing.jsonl", ACA, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------ run pictures


def architecture() -> Architecture:
    return Architecture(cell(), reduce_cell(), C, ACA)


def test_write_run_pictures(tmp_path):
    arch = architecture()
    written = plots.write_run_pictures(tmp_path, arch)
    assert written == [tmp_path / "cell_normal.png", tmp_path / "cell_reduce.png"]
    for path in written:
        assert_png(path)
    write_history(tmp_path / "alphas.jsonl", epochs=3)
    written = plots.write_run_pictures(tmp_path, arch)
    assert [p.name for p in written] == ["cell_normal.png", "cell_reduce.png", "alphas.png"]
    assert_png(written[-1], min_width=800, min_height=800)


def test_write_run_pictures_skips_empty_history(tmp_path):
    (tmp_path / "alphas.jsonl").write_text("")
    written = plots.write_run_pictures(tmp_path, architecture())
    assert [p.name for p in written] == ["cell_normal.png", "cell_reduce.png"]


# ----------------------------------------------------------------------- matplotlib state


def test_plotting_keeps_matplotlib_global_state(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    params = dict(matplotlib.rcParams)
    plots.draw_cell(cell(), C, tmp_path / "c.png", renderer="matplotlib")
    write_history(tmp_path / "alphas.jsonl")
    plots.plot_alpha_history(tmp_path / "alphas.jsonl", ACA, tmp_path / "a.png")
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == params


def test_import_and_use_do_not_select_a_backend(tmp_path):
    """In a fresh process with a non-Agg backend chosen, importing and using the module
    leaves that backend and never imports pyplot (no ``matplotlib.use``)."""
    script = textwrap.dedent(f"""
        import sys
        import matplotlib
        from aca_keras import plots
        from aca_keras.space.architecture import CellSpec, EdgeSpec
        cell = CellSpec((EdgeSpec(0, 0, "sep_conv_3x3", 4), EdgeSpec(0, 1, "max_pool_3x3", 0)),
                        (2,))
        plots.draw_cell(cell, 4, {str(tmp_path / "c.png")!r}, renderer="matplotlib")
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        print(matplotlib.get_backend())
    """)
    env = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "svg"
    assert_png(tmp_path / "c.png", min_width=200, min_height=150)
