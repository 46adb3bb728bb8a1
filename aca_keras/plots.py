"""Pictures of a search run: the derived cells and the alpha history.

* :func:`draw_cell` draws one derived cell: the inputs ``c_{k-2}``, ``c_{k-1}`` on the left,
  the intermediate nodes ``0..N-1`` layered by dependency in the middle, the output ``c_{k}``
  on the right. Every edge is labelled with its operation and ``k_e/C`` (``"sep_conv_3x3
  12/16"``). An edge with ``k_e = 0`` is its passthrough alone: at stride 1 the identity,
  labelled ``"identity 0/16"``; at stride 2 (from the inputs of a reduction cell) a
  ``FactorizedReduce``, labelled ``"factorized_reduce 0/16"``. Identity edges (those and the
  stride-1 ``skip_connect`` edges) are drawn dashed and grey. The subtitle gives the cell's
  identity edges and its kept channels by operation kind (see
  :meth:`~aca_keras.space.architecture.CellSpec.diagnostics`).
* :func:`plot_alpha_history` plots, from a run's ``alphas.jsonl``, the softmax weight of
  every operation on every edge over the epochs: **one PNG with one section per cell type**
  (normal on top, reduction below); in a section, row ``j`` holds the edges into node ``j``
  (one small plot per input state) and each plot has one line per operation.
* :func:`write_run_pictures` writes ``cell_normal.png``, ``cell_reduce.png`` and, when the
  run has an ``alphas.jsonl``, ``alphas.png`` into a run directory.

Cells are drawn with Graphviz (the ``graphviz`` Python package and its ``dot`` program) when
both are installed, else with matplotlib (a hand-made layered layout). Matplotlib is only used
through ``matplotlib.figure.Figure`` and the Agg canvas: this module never imports
``matplotlib.pyplot``, never calls ``matplotlib.use`` and never changes ``rcParams``, so
plotting leaves the process's matplotlib state (backend, open figures) as it was. It imports
neither TensorFlow nor Keras (a named operation set such as ``"aca"`` is resolved lazily).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aca_keras.io.atomic import atomic_write_bytes
from aca_keras.io.run_dir import RunDir
from aca_keras.space.genotype import nodes_for_edges, num_edges_for, softmax_rows
from aca_keras.space.op_sets import resolve_op_set

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from aca_keras.space.architecture import Architecture, CellSpec, EdgeSpec

__all__ = [
    "draw_cell",
    "edge_label",
    "graphviz_available",
    "plot_alpha_history",
    "write_run_pictures",
]

_DPI = 150

# Fixed colours for the DARTS operations (the same in the cell pictures and the alpha plots);
# other registered operations get a stable colour derived from their name.
_OP_COLOURS = {
    "none": "#9e9e9e",
    "max_pool_3x3": "#1f77b4",
    "avg_pool_3x3": "#17becf",
    "skip_connect": "#7f7f7f",
    "sep_conv_3x3": "#d62728",
    "sep_conv_5x5": "#ff7f0e",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#9467bd",
}
_EXTRA_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39",
                  "#7b4173", "#3182bd", "#e6550d", "#31a354")
_IDENTITY_COLOUR = "#8a8a8a"
_REDUCE_COLOUR = "#5c5c9e"  # a k_e = 0 edge at stride 2: FactorizedReduce


def _op_colour(op: str) -> str:
    if op in _OP_COLOURS:
        return _OP_COLOURS[op]
    return _EXTRA_COLOURS[zlib.crc32(op.encode("utf-8")) % len(_EXTRA_COLOURS)]


# ------------------------------------------------------------------------------------ labels


def edge_label(edge: EdgeSpec, reference_channels: int, *, reduction: bool = False) -> str:
    """The label of a derived edge: ``"<op> <k_e>/<C>"``; with ``k_e = 0``,
    ``"identity 0/<C>"`` at stride 1 and ``"factorized_reduce 0/<C>"`` at stride 2.

    Args:
        edge: the edge.
        reference_channels: C, the search supernet's channel count that k_e refers to.
        reduction: the edge belongs to a reduction cell (its edges from inputs 0 and 1 have
            stride 2).
    """
    if reference_channels < 1:
        raise ValueError(f"reference_channels must be >= 1, got {reference_channels}")
    op = edge.op
    if edge.channels == 0:
        op = "identity" if edge.stride(reduction) == 1 else "factorized_reduce"
    return f"{op} {edge.channels}/{reference_channels}"


def _edge_style(edge: EdgeSpec, reduction: bool) -> tuple[str, bool]:
    """``(colour, dashed)`` of an edge: identity edges grey and dashed, a stride-2 ``k_e =
    0`` edge in the FactorizedReduce colour, the others in their operation's colour."""
    if edge.is_identity(reduction):
        return _IDENTITY_COLOUR, True
    if edge.channels == 0:
        return _REDUCE_COLOUR, False
    return _op_colour(edge.op), False


def state_name(state: int, *, tex: bool = False) -> str:
    """Display name of a cell state: ``c_{k-2}``, ``c_{k-1}`` for 0 and 1, else the node."""
    if state < 2:
        sub = "k-2" if state == 0 else "k-1"
        return f"$c_{{{sub}}}$" if tex else f"c_{{{sub}}}"
    return str(state - 2)


def _cell_title(title: str | None, reduction: bool) -> str:
    if title is not None:
        return title
    return "reduction cell" if reduction else "normal cell"


# ----------------------------------------------------------------------------------- drawing


def graphviz_available() -> bool:
    """True when the ``graphviz`` Python package and the ``dot`` program are both installed."""
    return importlib.util.find_spec("graphviz") is not None and shutil.which("dot") is not None


def draw_cell(cell: CellSpec, reference_channels: int, path: str | os.PathLike, *,
              title: str | None = None, reduction: bool = False,
              renderer: str = "auto") -> Path:
    """Write a PNG picture of one derived cell.

    Args:
        cell: the cell (``architecture.normal`` or ``architecture.reduce``).
        reference_channels: C of the search supernet (the denominator of ``k_e/C``).
        path: the PNG file to write (parent folders are created; written atomically).
        title: the picture's title (default ``"normal cell"`` / ``"reduction cell"``).
        reduction: the cell is a reduction cell (its edges from the two inputs have stride 2;
            the picture says so).
        renderer: ``"auto"`` (Graphviz when :func:`graphviz_available`, else matplotlib),
            ``"matplotlib"`` or ``"graphviz"``.

    Returns:
        The path written.
    """
    if renderer not in ("auto", "matplotlib", "graphviz"):
        raise ValueError(f"renderer must be 'auto', 'matplotlib' or 'graphviz', got {renderer!r}")
    if renderer == "auto":
        renderer = "graphviz" if graphviz_available() else "matplotlib"
    if renderer == "graphviz":
        if not graphviz_available():
            raise ImportError("renderer='graphviz' needs the graphviz Python package "
                              "(pip install graphviz) and the dot program (apt install graphviz)")
        import graphviz  # optional: the graphviz package and its dot program

        source = cell_to_dot(cell, reference_channels, title=title, reduction=reduction)
        data = graphviz.Source(source).pipe(format="png")
    else:
        data = _figure_png(_cell_figure(cell, reference_channels, _cell_title(title, reduction),
                                        reduction))
    return atomic_write_bytes(path, data)


def cell_to_dot(cell: CellSpec, reference_channels: int, *, title: str | None = None,
                reduction: bool = False) -> str:
    """The Graphviz DOT source of :func:`draw_cell`'s picture (left to right)."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "digraph cell {",
        "  rankdir=LR; dpi=150; nodesep=0.35; ranksep=0.9;",
        f"  label={quote(_cell_title(title, reduction) + _subtitle(cell, reference_channels, reduction))};"
        " labelloc=t; fontname=Helvetica;",
        "  node [shape=circle, style=filled, fontname=Helvetica, fixedsize=true, width=0.6];",
        "  edge [fontname=Helvetica, fontsize=10];",
        '  in0 [label=<c<sub>k-2</sub>>, fillcolor="#cfe3f7"];',
        '  in1 [label=<c<sub>k-1</sub>>, fillcolor="#cfe3f7"];',
        "  { rank=same; in0; in1; }",
    ]
    for j in range(cell.nodes):
        lines.append(f'  n{j} [label="{j}", fillcolor="#f6f0c8"];')
    lines.append('  out [label=<c<sub>k</sub>>, fillcolor="#d3ecd0"];')
    for edge in cell.edges:
        source = f"in{edge.input}" if edge.input < 2 else f"n{edge.input - 2}"
        colour, dashed = _edge_style(edge, reduction)
        style = ", style=dashed" if dashed else ""
        label = quote(edge_label(edge, reference_channels, reduction=reduction))
        lines.append(f"  {source} -> n{edge.node} [label={label}"
                     f', color="{colour}", fontcolor="#202020"{style}];')
    for state in cell.concat:
        source = f"in{state}" if state < 2 else f"n{state - 2}"
        lines.append(f'  {source} -> out [color="#b0b0b0"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _subtitle(cell: CellSpec, reference_channels: int, reduction: bool) -> str:
    text = (f"\nlabel: operation k_e/C, C = {reference_channels} "
            "(k_e channels through the operation, C - k_e identity)")
    if reduction:
        text += "\nedges from c_{k-2}, c_{k-1} have stride 2"
    figures = cell.diagnostics(reference_channels, reduction)
    kinds = ", ".join(f"{kind.replace('_', '-')} {count.fraction()}"
                      for kind, count in figures.by_kind.items())
    text += (f"\nidentity edges (dashed): {figures.identity_edges}; kept channels "
             f"{figures.kept_channels}/{figures.total_channels}: {kinds}")
    return text


def _figure_png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: only when drawing

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


# Geometry of the matplotlib cell picture, in data units (1 unit = _UNIT inches).
_UNIT = 1.0
_DX = 3.4           # distance between layers
_DY = 1.25          # distance between the nodes of a layer
_RADIUS = 0.27      # node radius
_FONT = 8.0         # edge label font size (points)


def _layers(cell: CellSpec) -> dict[int, int]:
    """Layer of every state: inputs 0, a node 1 + the deepest of its inputs."""
    layer = {0: 0, 1: 0}
    for j in range(cell.nodes):
        inputs = [e.input for e in cell.edges if e.node == j]
        layer[j + 2] = 1 + max(layer[i] for i in inputs)
    return layer


def _positions(cell: CellSpec) -> dict[Any, tuple[float, float]]:
    """Centre of every state and of the output ``"out"``; layers left to right, the states
    of a layer top to bottom in index order, centred on y = 0."""
    layer = _layers(cell)
    last = max(layer.values()) + 1
    columns: dict[int, list[int]] = {}
    for state in sorted(layer):
        columns.setdefault(layer[state], []).append(state)
    pos: dict[Any, tuple[float, float]] = {}
    tallest = max(len(states) for states in columns.values())
    for col, states in columns.items():
        # The two inputs spread over about half the tallest column, so that their edges fan
        # out instead of leaving from one point.
        dy = max(_DY, 0.55 * (tallest - 1) * _DY) if col == 0 else _DY
        for k, state in enumerate(states):
            pos[state] = (col * _DX, ((len(states) - 1) / 2 - k) * dy)
    pos["out"] = (last * _DX, 0.0)
    return pos


def _bezier(p0: np.ndarray, p2: np.ndarray, rad: float, t: np.ndarray) -> np.ndarray:
    """Points of matplotlib's ``arc3`` connection (quadratic Bezier) at parameters ``t``."""
    d = p2 - p0
    control = (p0 + p2) / 2 + rad * np.array([d[1], -d[0]])
    t = t[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * control + t ** 2 * p2


def _label_box(centre: np.ndarray, text: str) -> tuple[float, float, float, float]:
    """Approximate extent ``(x0, y0, x1, y1)`` of a label centred at ``centre``."""
    points_to_units = 1.0 / (72.0 * _UNIT)
    width = (0.58 * _FONT * len(text) + 6) * points_to_units
    height = (_FONT + 6) * points_to_units
    return (centre[0] - width / 2, centre[1] - height / 2,
            centre[0] + width / 2, centre[1] + height / 2)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def _route(pos: Mapping[Any, tuple[float, float]], edges: Sequence[tuple[Any, Any, str | None]]
           ) -> list[tuple[float, np.ndarray | None]]:
    """Choose the curvature of every edge (and where its label goes).

    Greedy: edges are placed one by one; each tries a few ``arc3`` curvatures and label
    positions along the curve, and takes the one with the lowest cost: passing through a
    node that is not an endpoint (heavy), a label over a node or an earlier label, a curve
    crossing an earlier label, and a little for curvature itself (straight is preferred).
    """
    centres = {k: np.asarray(v, dtype=float) for k, v in pos.items()}
    samples = np.linspace(0.06, 0.94, 61)
    placed_boxes: list[tuple[float, float, float, float]] = []
    placed_curves: list[np.ndarray] = []
    routes: list[tuple[float, np.ndarray | None]] = []
    for a, b, text in edges:
        p0, p2 = centres[a], centres[b]
        best: tuple[float, float, np.ndarray | None, np.ndarray] | None = None
        for rad in (0.0, 0.12, -0.12, 0.24, -0.24, 0.36, -0.36, 0.5, -0.5):
            curve = _bezier(p0, p2, rad, samples)
            cost = 0.4 * abs(rad)
            for key, c in centres.items():
                if key in (a, b):
                    continue
                gap = np.min(np.linalg.norm(curve - c, axis=1))
                if gap < 1.6 * _RADIUS:
                    cost += 20.0 + 20.0 * (1.6 * _RADIUS - gap)
            if text is None:
                candidates: list[np.ndarray | None] = [None]
            else:
                candidates = [_bezier(p0, p2, rad, np.array([t]))[0] for t in (0.5, 0.4, 0.6)]
            for centre in candidates:
                extra = 0.0
                if centre is not None:
                    box = _label_box(centre, text or "")
                    area = (box[2] - box[0]) * (box[3] - box[1])
                    for other in placed_boxes:
                        extra += 8.0 * _overlap(box, other) / area
                    for c in centres.values():
                        node_box = (c[0] - _RADIUS, c[1] - _RADIUS, c[0] + _RADIUS,
                                    c[1] + _RADIUS)
                        extra += 8.0 * _overlap(box, node_box) / area
                    for other_curve in placed_curves:
                        inside = ((other_curve[:, 0] > box[0]) & (other_curve[:, 0] < box[2])
                                  & (other_curve[:, 1] > box[1]) & (other_curve[:, 1] < box[3]))
                        extra += 1.0 * float(np.count_nonzero(inside))
                    extra += 0.05 * abs(float(np.dot(centre - (p0 + p2) / 2, p2 - p0)))
                # Curves of this edge crossing earlier labels.
                for other in placed_boxes:
                    inside = ((curve[:, 0] > other[0]) & (curve[:, 0] < other[2])
                              & (curve[:, 1] > other[1]) & (curve[:, 1] < other[3]))
                    extra += 1.0 * float(np.count_nonzero(inside))
                total = cost + extra
                if best is None or total < best[0]:
                    best = (total, rad, centre, curve)
        assert best is not None
        _, rad, centre, curve = best
        routes.append((rad, centre))
        placed_curves.append(curve)
        if centre is not None:
            placed_boxes.append(_label_box(centre, text or ""))
    return routes


def _cell_figure(cell: CellSpec, reference_channels: int, title: str, reduction: bool) -> Figure:
    from matplotlib.figure import Figure  # heavy: only when drawing
    from matplotlib.patches import Circle, FancyArrowPatch

    pos = _positions(cell)
    # Edges into the nodes in DARTS order, then the output edges (no label).
    edges: list[tuple[Any, Any, str | None]] = [
        (e.input, e.node + 2, edge_label(e, reference_channels, reduction=reduction))
        for e in cell.edges]
    edges += [(state, "out", None) for state in cell.concat]
    styles = [_edge_style(e, reduction) for e in cell.edges]
    # Route the labelled edges first, longest first: they have the fewest good options.
    order = sorted(range(len(edges)), key=lambda k: (
        edges[k][2] is None, -abs(pos[edges[k][1]][0] - pos[edges[k][0]][0]), k))
    routed = _route(pos, [edges[k] for k in order])
    routes: list[tuple[float, np.ndarray | None]] = [(0.0, None)] * len(edges)
    for k, route in zip(order, routed):
        routes[k] = route

    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    label_points = [r[1] for r in routes if r[1] is not None]
    ys += [float(c[1]) for c in label_points]
    margin = 0.75
    header = 1.15 if reduction else 1.0
    x0, x1 = min(xs) - margin, max(xs) + margin
    y0, y1 = min(ys) - margin, max(ys) + margin + header
    width, height = (x1 - x0) * _UNIT, (y1 - y0) * _UNIT
    fig = Figure(figsize=(max(width, 5.0), max(height, 3.0)), dpi=_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_axis_off()

    for k, ((a, b, text), (rad, centre)) in enumerate(zip(edges, routes)):
        if text is None:
            colour, style, width_pt = "#b0b0b0", "-", 1.0
        elif styles[k][1]:  # an identity edge
            colour, style, width_pt = styles[k][0], (0, (4, 3)), 1.3
        else:
            colour, style, width_pt = styles[k][0], "-", 1.6
        shrink = _RADIUS * 72 * _UNIT + 1
        ax.add_patch(FancyArrowPatch(
            pos[a], pos[b], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=11, linewidth=width_pt, linestyle=style, color=colour,
            shrinkA=shrink, shrinkB=shrink, zorder=1))
        if centre is not None:
            ax.text(centre[0], centre[1], text, ha="center", va="center", fontsize=_FONT,
                    color="#202020", zorder=3,
                    bbox={"boxstyle": "round,pad=0.25", "facecolor": "white",
                          "edgecolor": colour, "linewidth": 0.8, "alpha": 0.92})

    for key, (x, y) in pos.items():
        if key == "out":
            face, text = "#d3ecd0", "$c_{k}$"
        elif key < 2:
            face, text = "#cfe3f7", state_name(key, tex=True)
        else:
            face, text = "#f6f0c8", state_name(key)
        ax.add_patch(Circle((x, y), _RADIUS, facecolor=face, edgecolor="#404040",
                            linewidth=1.0, zorder=4))
        ax.text(x, y, text, ha="center", va="center", fontsize=10, zorder=5)

    ax.text((x0 + x1) / 2, y1 - 0.25, title, ha="center", va="top", fontsize=12,
            fontweight="bold")
    ax.text((x0 + x1) / 2, y1 - 0.55, _subtitle(cell, reference_channels, reduction).strip()
            .replace("c_{k-2}", "$c_{k-2}$").replace("c_{k-1}", "$c_{k-1}$"),
            ha="center", va="top", fontsize=7.5, color="#505050", linespacing=1.5)
    return fig


# ----------------------------------------------------------------------------- alpha history


def read_alpha_history(alphas_jsonl_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``alphas.jsonl`` (blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object with an ``alphas`` entry (line named).
    """
    path = Path(alphas_jsonl_path)
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not valid JSON: {exc}") from None
            if not isinstance(record, dict) or not isinstance(record.get("alphas"), dict):
                raise ValueError(f"{path}:{number} has no 'alphas' object; is this a run's "
                                 f"{RunDir.ALPHAS}?")
            records.append(record)
    return records


def _history(records: Sequence[Mapping[str, Any]], cell: str, num_ops: int,
             where: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs ``(E,)`` and softmax weights ``(E, num_edges, num_ops)`` of one cell type."""
    epochs, weights = [], []
    for k, record in enumerate(records):
        if cell not in record["alphas"]:
            raise ValueError(f"{where}: record {k + 1} has no {cell!r} alphas")
        try:
            logits = np.asarray(record["alphas"][cell], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: record {k + 1}: {cell} alphas are not a numeric "
                             "matrix") from None
        if logits.ndim != 2 or logits.shape[1] != num_ops:
            raise ValueError(
                f"{where}: record {k + 1}: {cell} alphas have shape {logits.shape}, expected "
                f"(num_edges, {num_ops}) for the {num_ops} operations given")
        if weights and logits.shape != weights[0].shape:
            raise ValueError(f"{where}: record {k + 1}: {cell} alphas change shape from "
                             f"{weights[0].shape} to {logits.shape}")
        epochs.append(float(record.get("epoch", k + 1)))
        weights.append(softmax_rows(logits))
    return np.asarray(epochs), np.stack(weights)


def _kept_edges(record: Mapping[str, Any], cell: str) -> dict[tuple[int, int], str]:
    """``{(node, input): op}`` of the genotype stored in a record (empty if none)."""
    genotype = record.get("genotype")
    if not isinstance(genotype, Mapping) or not isinstance(genotype.get(cell), list):
        return {}
    per_node = genotype.get("edges_per_node", 2)
    kept: dict[tuple[int, int], str] = {}
    start, node = 0, 0
    pairs = genotype[cell]
    while start < len(pairs):
        count = min(per_node, node + 2)
        for op, source in pairs[start:start + count]:
            kept[(node, int(source))] = str(op)
        start += count
        node += 1
    return kept


def plot_alpha_history(alphas_jsonl_path: str | os.PathLike, ops: str | Sequence[str],
                       path: str | os.PathLike, *,
                       cells: Sequence[str] = ("normal", "reduce")) -> Path:
    """Plot the softmax weight of every operation on every edge over the epochs.

    One PNG with one section per cell type (``cells``, normal then reduction by default). In
    a section, row ``j`` holds one small plot per edge into node ``j`` (from ``c_{k-2}``,
    ``c_{k-1}``, then the earlier nodes), each with one line per operation; all plots share
    their axes. The edges kept by the genotype of the last record are framed in bold, with
    the chosen operation in their title.

    Args:
        alphas_jsonl_path: the run's ``alphas.jsonl`` (one JSON line per epoch with
            ``"epoch"`` and ``"alphas": {"normal": logits, "reduce": logits}``, logits of
            shape ``(num_edges, num_ops)``; ``"genotype"`` is optional).
        ops: the operation names of the alpha columns, in order, or a named set (``"aca"``).
        path: the PNG file to write (written atomically).
        cells: the cell types to plot.

    Returns:
        The path written.

    Raises:
        ValueError: an empty file, or alphas that do not match ``ops``.
    """
    names = _resolve_ops(ops)
    where = str(alphas_jsonl_path)
    records = read_alpha_history(alphas_jsonl_path)
    if not records:
        raise ValueError(f"{where} holds no epoch; there is nothing to plot")
    cells = tuple(cells)
    if not cells or any(c not in ("normal", "reduce") for c in cells):
        raise ValueError(f"cells must be a non-empty subset of ('normal', 'reduce'), got {cells}")
    histories = {c: _history(records, c, len(names), where) for c in cells}
    return atomic_write_bytes(path, _figure_png(_alpha_figure(histories, names, records[-1])))


def _resolve_ops(ops: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(ops, str):
        return resolve_op_set(ops)
    names = tuple(ops)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"ops must be a non-empty list of operation names, got {ops!r}")
    return names


def _alpha_figure(histories: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  names: Sequence[str], last: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure  # heavy: only when drawing
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    nodes = {c: nodes_for_edges(w.shape[1]) for c, (_, w) in histories.items()}
    columns = max(n + 1 for n in nodes.values())
    rows = sum(nodes.values())
    fig = Figure(figsize=(2.05 * columns + 0.6, 1.55 * rows + 1.1 * len(histories) + 0.7),
                 dpi=_DPI)
    heights = [nodes[c] + 0.55 for c in histories] + [0.45]
    parts = fig.subfigures(len(histories) + 1, 1, height_ratios=heights, squeeze=False)[:, 0]
    sections, footer = parts[:-1], parts[-1]
    top = max(float(w.max()) for _, w in histories.values())
    ymax = min(1.0, max(top * 1.08, 1.5 / len(names)))
    many = max(len(e) for e, _ in histories.values()) > 25
    for section, (cell, (epochs, weights)) in zip(sections, histories.items()):
        kept = _kept_edges(last, cell)
        n = nodes[cell]
        axes = section.subplots(n, columns, sharex=True, sharey=True, squeeze=False,
                                gridspec_kw={"hspace": 0.42, "wspace": 0.18, "left": 0.07,
                                             "right": 0.98, "bottom": 0.1, "top": 0.86})
        section.suptitle(f"{'normal' if cell == 'normal' else 'reduction'} cell: softmax(alpha) "
                         "per edge over epochs", fontsize=11, fontweight="bold")
        for node in range(n):
            for source in range(columns):
                ax = axes[node, source]
                if source >= node + 2:
                    ax.set_visible(False)
                    continue
                row = num_edges_for(node) + source
                for col, op in enumerate(names):
                    ax.plot(epochs, weights[:, row, col], color=_op_colour(op), linewidth=1.3,
                            marker=None if many else "o", markersize=2.5)
                ax.set_ylim(0.0, ymax)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(True, linewidth=0.4, alpha=0.5)
                ax.tick_params(labelsize=7)
                title = f"{state_name(source, tex=True)} \u2192 {node}"
                if (node, source) in kept:
                    title += f"  [{kept[(node, source)]}]"
                    for spine in ax.spines.values():
                        spine.set_linewidth(2.0)
                        spine.set_color(_op_colour(kept[(node, source)]))
                ax.set_title(title, fontsize=8,
                             fontweight="bold" if (node, source) in kept else "normal")
                if source == 0:
                    ax.set_ylabel("weight", fontsize=7)
                if node == n - 1 or source + 1 >= node + 3:
                    ax.set_xlabel("epoch", fontsize=7)
                    ax.tick_params(labelbottom=True)
    handles = [Line2D([], [], color=_op_colour(op), linewidth=2) for op in names]
    footer.legend(handles, list(names), loc="upper center", ncol=min(len(names), 8),
                  fontsize=8, frameon=False)
    footer.text(0.5, 0.08, "framed: edge kept by the last epoch's genotype [its operation]",
                ha="center", va="bottom", fontsize=7, color="#505050")
    return fig


def plot_collapse_monitor(alphas_jsonl_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Plot the collapse monitor's figures (:mod:`aca_keras.monitor`) over the epochs: the
    dominant Hessian eigenvalue, the skip and parameter-free edges of the derived normal cell,
    and the mean ``skip_connect`` weight. Epochs without a value are left out.

    Raises:
        ValueError: the file holds no epoch with monitor figures.
    """
    from matplotlib.figure import Figure  # heavy: only when drawing
    from matplotlib.ticker import MaxNLocator

    records = read_alpha_history(alphas_jsonl_path)

    def series(key):
        points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
        return ([e for e, _ in points], [float(v) for _, v in points])

    panels = [("hessian_eigenvalue", "dominant Hessian eigenvalue\n(val. loss w.r.t. alphas)"),
              ("skip_edges", "normal-cell edges:\nskip_connect / parameter-free"),
              ("mean_skip_weight", "mean skip_connect weight\n(normal cell)")]
    present = [(key, title) for key, title in panels if series(key)[0]]
    if not present:
        raise ValueError(f"{alphas_jsonl_path} holds no collapse-monitor figures")
    fig = Figure(figsize=(3.6 * len(present), 3.0), dpi=_DPI)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, (key, title) in zip(axes, present):
        epochs, values = series(key)
        ax.plot(epochs, values, marker="o", markersize=2.5, linewidth=1.3, color="#1f77b4",
                label=key.replace("_", " "))
        if key == "skip_edges":
            e2, v2 = series("parameter_free_edges")
            ax.plot(e2, v2, marker="s", markersize=2.5, linewidth=1.3, color="#d62728",
                    label="parameter-free edges")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7, frameon=False)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return atomic_write_bytes(path, _figure_png(fig))


# ------------------------------------------------------------------------------ run pictures


def write_run_pictures(run_dir: str | os.PathLike, architecture: Architecture) -> list[Path]:
    """Write a run's pictures into ``run_dir`` and return their paths.

    ``cell_normal.png`` and ``cell_reduce.png`` (see :func:`draw_cell`) always; ``alphas.png``
    (see :func:`plot_alpha_history`, operations ``architecture.ops``) when the run directory
    holds a non-empty ``alphas.jsonl``, and ``collapse.png`` (see
    :func:`plot_collapse_monitor`) when its lines carry the collapse monitor's figures.
    """
    run = RunDir(run_dir)
    written = [
        draw_cell(architecture.normal, architecture.reference_channels,
                  run.cell_picture("normal"), reduction=False),
        draw_cell(architecture.reduce, architecture.reference_channels,
                  run.cell_picture("reduce"), reduction=True),
    ]
    history = run.alphas
    if history.is_file() and read_alpha_history(history):
        written.append(plot_alpha_history(history, architecture.ops, run.alphas_picture))
        if any(r.get("skip_edges") is not None for r in read_alpha_history(history)):
            written.append(plot_collapse_monitor(history, run.collapse_picture))
    return written
