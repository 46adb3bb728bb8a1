"""Collapse monitor for a DARTS search: R-DARTS's Hessian indicator and skip counts.

Zela et al. ("Understanding and Robustifying Differentiable Architecture Search", ICLR
2020) found that the dominant eigenvalue of the Hessian of the validation loss with respect
to the architecture weights grows before DARTS collapses into parameter-free cells. This
module measures, each search epoch:

* ``hessian_eigenvalue``: the largest eigenvalue, by the Lanczos method on Hessian-vector
  products on
  a fixed validation batch, in training mode (batch statistics, as the architecture step
  sees the loss). The products are central differences of the alpha gradient,
  ``(g(a + e v) - g(a - e v)) / 2e`` with ``e = 1e-3 / |v|`` (``1e-5`` in float64; the
  loss is far from quadratic at a step of ``1e-2`` on small batches): the traced graph is one
  forward and backward pass, so it costs little memory even on the DARTS-size supernet.
  Double back-propagation is not used: TensorFlow's second derivatives through BatchNorm
  are wrong (Keras's ``moments`` stops the gradient through the mean, which is harmless
  for first derivatives only; measured: 0.4 % off on one layer, 10 % on a tiny supernet's
  Hessian-vector product). Moving BatchNorm statistics, random-generator states and the
  alphas are restored after every product, so the search is not disturbed and every
  product sees the same noise (``noise`` op);
* ``skip_edges``, ``identity_edges``, ``parameter_free_edges``: counts in the normal cell of
  the genotype derived now (``skip_connect``; edges that are the identity; operations without
  weights, see :func:`aca_keras.space.op_sets.operation_kind`), and the same for the
  reduction cell (``reduce_skip_edges``, ``reduce_identity_edges``,
  ``reduce_parameter_free_edges``). During the search every edge keeps all its channels, so
  an identity edge is a ``skip_connect`` at stride 1: every ``skip_connect`` of the normal
  cell, those from the intermediate nodes of the reduction cell (from its inputs 0 and 1 it
  is a stride-2 ``FactorizedReduce``). After the allocation, edges with ``k_e = 0`` at
  stride 1 are identities too: :meth:`aca_keras.space.architecture.Architecture.diagnostics`
  counts them (``aca-search`` prints them after the allocation and writes them into
  ``architecture.json``);
* ``mean_skip_weight``: the mean softmax weight of ``skip_connect`` over the normal cell's
  edges (``None`` when the op set has no ``skip_connect``).

:class:`CollapseMonitor` is a Keras callback usable in any search (``search(callbacks=...)``
or ``SearchNetwork.fit``); ``search`` adds it itself (settings ``hessian_every``,
``hessian_iterations``) and writes its figures into every line of ``alphas.jsonl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aca_keras.space.architecture import edge_stride
from aca_keras.space.genotype import Genotype
from aca_keras.space.op_sets import is_parametric

#: keys the monitor adds to the epoch logs (and ``search`` to ``alphas.jsonl``)
MONITOR_KEYS = ("hessian_eigenvalue", "skip_edges", "parameter_free_edges", "mean_skip_weight",
                "reduce_skip_edges", "reduce_parameter_free_edges", "identity_edges",
                "reduce_identity_edges")


def _state_variables(network) -> list:
    """Variables a training-mode forward pass may change: BatchNorm moving statistics and
    random-generator states (everything non-trainable)."""
    return list(network.non_trainable_variables)


def hessian_vector_product_fn(network, x, y, epsilon: float | None = None):
    """``(hvp, size)``: ``hvp(v) -> H v`` for the Hessian of the loss on ``(x, y)`` with
    respect to ``network.alpha_variables`` (vectors flattened and concatenated in that
    order), by central differences of the traced alpha gradient with step ``epsilon / |v|``
    (default ``1e-3``, ``1e-5`` for float64 alphas); ``size`` is the number of alphas."""
    alphas = network.alpha_variables
    if epsilon is None:
        epsilon = 1e-5 if alphas[0].dtype == "float64" else 1e-3
    shapes = [tuple(a.shape) for a in alphas]
    sizes = [int(np.prod(s)) for s in shapes]
    return (_finite_difference_hvp(network, x, y, alphas, shapes, sizes,
                                   _state_variables(network), epsilon), int(sum(sizes)))


def alpha_gradient_fn(network, x, y):
    """A traced ``gradient(step) -> g``: the gradient of the loss on ``(x, y)`` with respect
    to the alphas (flattened) at ``alphas + step``; alphas, BatchNorm statistics and random
    states are restored afterwards."""
    alphas = network.alpha_variables
    shapes = [tuple(a.shape) for a in alphas]
    sizes = [int(np.prod(s)) for s in shapes]
    return _alpha_gradient(network, x, y, alphas, shapes, sizes, _state_variables(network))


def _alpha_gradient(network, x, y, alphas, shapes, sizes, state):
    @tf.function(reduce_retracing=True)
    def gradient(step):
        """The alpha gradient at ``alphas + step``; alphas and state restored after."""
        saved = [tf.identity(s) for s in state]
        originals = [tf.identity(a) for a in alphas]
        moved = [a.assign_add(tf.cast(tf.reshape(p, sh), a.dtype))
                 for a, p, sh in zip(alphas, tf.split(step, sizes), shapes)]
        with tf.control_dependencies(moved):
            with tf.GradientTape() as tape:
                loss = network.loss(y, network(x, training=True))
            grads = tape.gradient(loss, alphas)
            flat = tf.concat([tf.reshape(tf.zeros_like(a) if g is None else g, [-1])
                              for g, a in zip(grads, alphas)], axis=0)
        with tf.control_dependencies([flat]):
            restore = ([s.assign(v0) for s, v0 in zip(state, saved)]
                       + [a.assign(a0) for a, a0 in zip(alphas, originals)])
        with tf.control_dependencies(restore):
            return tf.identity(flat)

    return gradient


def _finite_difference_hvp(network, x, y, alphas, shapes, sizes, state, epsilon):
    gradient = _alpha_gradient(network, x, y, alphas, shapes, sizes, state)

    def hvp(v):
        h = epsilon / max(float(tf.linalg.norm(v)), 1e-30)
        step = tf.cast(v, alphas[0].dtype) * h
        return (gradient(step) - gradient(-step)) / (2.0 * h)

    return hvp


def hessian_eigenvalue(network, x, y, *, iterations: int = 20, seed: int = 0,
                       hvp=None) -> float:
    """The largest eigenvalue of the Hessian of the loss on ``(x, y)`` with respect to the
    alphas (R-DARTS's indicator), by the Lanczos method with full reorthogonalisation from a
    seeded random vector: ``iterations`` Hessian-vector products at most (exact, up to the
    products' finite-difference error, once ``iterations`` reaches the number of alphas).

    ``hvp``: a product function from :func:`hessian_vector_product_fn` for the same network
    and batch, to reuse its trace.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    network.ensure_built()
    if hvp is None:
        hvp, size = hessian_vector_product_fn(network, x, y)
    else:
        size = sum(int(np.prod(a.shape)) for a in network.alpha_variables)
    dtype = network.alpha_variables[0].dtype

    def matvec(v: np.ndarray) -> np.ndarray:
        return hvp(tf.constant(v, dtype=dtype)).numpy().astype(np.float64)

    return lanczos_largest(matvec, size, iterations, seed)


def lanczos_largest(matvec, size: int, steps: int, seed: int = 0) -> float:
    """The largest eigenvalue of the symmetric operator ``matvec`` (on vectors of ``size``)
    from ``min(steps, size)`` Lanczos steps with full reorthogonalisation: the largest
    eigenvalue of the tridiagonal matrix the steps build (a Ritz value, exact after ``size``
    steps)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=size)
    basis = [q / np.linalg.norm(q)]
    diagonal: list[float] = []
    off: list[float] = []
    for _ in range(min(steps, size)):
        w = matvec(basis[-1])
        diagonal.append(float(w @ basis[-1]))
        for vector in basis:  # full reorthogonalisation (twice is enough)
            w = w - (w @ vector) * vector
        for vector in basis:
            w = w - (w @ vector) * vector
        norm = float(np.linalg.norm(w))
        if len(diagonal) == min(steps, size) or norm <= 1e-12 * max(1.0, abs(diagonal[-1])):
            break
        off.append(norm)
        basis.append(w / norm)
    k = len(diagonal)
    tridiagonal = np.diag(diagonal) + np.diag(off[: k - 1], 1) + np.diag(off[: k - 1], -1)
    return float(np.linalg.eigvalsh(tridiagonal)[-1])


def collapse_statistics(network, genotype: Genotype | None = None) -> dict[str, Any]:
    """Skip, identity and parameter-free edge counts of the derived genotype, and the mean
    ``skip_connect`` weight of the normal cell (see the module docstring)."""
    genotype = genotype if genotype is not None else network.genotype()
    out: dict[str, Any] = {}
    for prefix, edges, reduction in (("", genotype.normal, False),
                                     ("reduce_", genotype.reduce, True)):
        out[f"{prefix}skip_edges"] = sum(op == "skip_connect" for op, _ in edges)
        # every edge keeps all its channels: an identity is a skip_connect at stride 1
        out[f"{prefix}identity_edges"] = sum(
            op == "skip_connect" and edge_stride(source, reduction) == 1 for op, source in edges)
        out[f"{prefix}parameter_free_edges"] = sum(not is_parametric(op) for op, _ in edges)
    names = list(network.op_names)
    if "skip_connect" in names:
        weights = keras.ops.convert_to_numpy(network.op_weights()[0])
        out["mean_skip_weight"] = float(weights[:, names.index("skip_connect")].mean())
    else:
        out["mean_skip_weight"] = None
    return out


class CollapseMonitor(keras.callbacks.Callback):
    """Keras callback: the collapse figures of the module docstring after every epoch.

    Args:
        network: the :class:`~aca_keras.models.supernet.SearchNetwork` being searched.
        batch: a fixed validation batch ``(x, y)`` for the Hessian.
        every: compute the Hessian eigenvalue every ``every`` epochs (and after the first);
            0 switches it off (the counts are still recorded).
        iterations: Lanczos steps (one Hessian-vector product each: two forward and backward
            passes on the batch).
        verbose: print the figures.

    The figures are added to the epoch ``logs`` (so later callbacks, ``history.csv`` and
    ``alphas.jsonl`` see them) and kept in :attr:`history`.
    """

    def __init__(self, network, batch: Sequence, every: int = 1, iterations: int = 20,
                 verbose: bool = False):
        super().__init__()
        if every < 0 or iterations < 1:
            raise ValueError(f"every must be >= 0 and iterations >= 1, got {every}, "
                             f"{iterations}")
        self.network = network
        self.x, self.y = batch
        self.every = int(every)
        self.iterations = int(iterations)
        self.verbose = verbose
        self.history: list[dict[str, Any]] = []
        self._hvp = None

    def due(self, epoch: int) -> bool:
        """Whether the eigenvalue is computed after ``epoch`` (0-based)."""
        return self.every > 0 and (epoch == 0 or (epoch + 1) % self.every == 0)

    def on_epoch_end(self, epoch, logs=None):
        record: dict[str, Any] = {"epoch": epoch + 1, "hessian_eigenvalue": None}
        if self.due(epoch):
            if self._hvp is None:  # traced once, reused every epoch
                self._hvp = hessian_vector_product_fn(self.network, self.x, self.y)[0]
            record["hessian_eigenvalue"] = hessian_eigenvalue(
                self.network, self.x, self.y, iterations=self.iterations, seed=epoch,
                hvp=self._hvp)
        record.update(collapse_statistics(self.network))
        self.history.append(record)
        if logs is not None:
            for key in MONITOR_KEYS:
                if record.get(key) is not None:
                    logs[key] = record[key]
        if self.verbose:
            shown = {k: v for k, v in record.items() if v is not None and k != "epoch"}
            print("  collapse monitor: " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in shown.items()), flush=True)
