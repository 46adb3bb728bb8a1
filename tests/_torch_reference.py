"""PyTorch side of the parity tests (tests/test_torch_parity.py); imported only when torch is.

* :func:`load_search_reference` imports ``../shared/bench/torch_darts_ref.py`` (the PyTorch
  DARTS search supernet used by the benchmarks).
* :func:`tf_same_padding` rewrites the stride-2 convolutions and pools of a PyTorch network to
  TensorFlow's ``padding="same"`` rule (see the parity module's docstring: for even sizes TF
  pads only after, PyTorch's ``padding=k // 2`` pads both sides).
* :class:`NetworkCIFAR`: a small DARTS evaluation network built from a genotype, written from
  the DARTS paper's description (stem, cells of preprocessed inputs and summed op pairs,
  reductions at 1/3 and 2/3 of the depth, global pooling, linear classifier). Inference only:
  no drop path, no auxiliary head.
* :func:`supernet_pairs` / :func:`derived_pairs`: every (Keras variable, PyTorch tensor, kind)
  pair of the two implementations of one network, with :func:`to_keras_layout` /
  :func:`to_torch_layout` for the kinds (conv kernels HWIO vs OIHW, depthwise kernels
  HW(C,1) vs (C,1,H,W), dense kernels (in, out) vs (out, in), vectors).
* :func:`unrolled_hypergradient`: DARTS's second-order architecture gradient (paper, eq. 7-8:
  a virtual SGD step, then a central finite-difference Hessian-vector product), and
  :func:`exact_hypergradient`, the same quantity with an exact second derivative.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------------ the reference


def load_search_reference(path: Path):
    """The module ``torch_darts_ref.py`` at ``path`` (imported once, under a private name)."""
    name = "_aca_torch_darts_ref"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's ``padding="same"``: (before, after) along one axis."""
    effective = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class SamePadded(nn.Module):
    """Wraps a stride-2 ``Conv2d``/``MaxPool2d``/``AvgPool2d`` (its own padding set to 0) and
    pads its input as TensorFlow's ``padding="same"`` does; average pools exclude the padding
    from their counts (as ``count_include_pad=False`` and TF do)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.inner = module
        kernel = module.kernel_size
        self.kernel = kernel if isinstance(kernel, int) else kernel[0]
        stride = module.stride
        self.stride = stride if isinstance(stride, int) else stride[0]
        dilation = getattr(module, "dilation", 1)
        self.dilation = dilation if isinstance(dilation, int) else dilation[0]
        module.padding = 0 if not isinstance(module, nn.Conv2d) else (0, 0)

    def forward(self, x):
        top, bottom = _same_pads(x.shape[2], self.kernel, self.stride, self.dilation)
        left, right = _same_pads(x.shape[3], self.kernel, self.stride, self.dilation)
        pads = (left, right, top, bottom)
        if isinstance(self.inner, nn.MaxPool2d):
            return self.inner(F.pad(x, pads, value=-math.inf))
        if isinstance(self.inner, nn.AvgPool2d):
            total = F.avg_pool2d(F.pad(x, pads), self.kernel, self.stride, 0)
            count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pads), self.kernel,
                                 self.stride, 0)
            return total / count
        return self.inner(F.pad(x, pads))


def tf_same_padding(net: nn.Module) -> int:
    """Replace, in place, every stride-2 convolution or pool with non-zero padding by a
    :class:`SamePadded` copy; returns how many were replaced. Dilated convolutions are left
    alone: aca_keras runs them at stride 1 and subsamples, which is PyTorch's alignment."""
    replaced = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                continue
            stride = child.stride if isinstance(child.stride, int) else child.stride[0]
            padding = child.padding if isinstance(child.padding, int) else child.padding[0]
            dilation = getattr(child, "dilation", 1)
            dilation = dilation if isinstance(dilation, int) else dilation[0]
            if stride == 2 and padding > 0 and dilation == 1:
                setattr(parent, name, SamePadded(child))
                replaced += 1
    return replaced


# ------------------------------------------------------------------ the evaluation network


class _ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out))


class _DilConv(nn.Sequential):
    """ReLU, depthwise conv (optionally dilated), pointwise conv, BatchNorm."""

    def __init__(self, c_in, c_out, kernel, stride, dilation):
        padding = dilation * (kernel // 2)
        super().__init__(nn.ReLU(),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation, groups=c_in,
                                   bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class _SepConv(nn.Sequential):
    """Two DilConvs with dilation 1; only the first one strides."""

    def __init__(self, c_in, c_out, kernel, stride):
        super().__init__(_DilConv(c_in, c_in, kernel, stride, 1),
                         _DilConv(c_in, c_out, kernel, 1, 1))


class _FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs on the even and the odd pixel grid, concat, BatchNorm."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


class _PoolBN(nn.Sequential):
    def __init__(self, kind, c, stride):
        pool = (nn.MaxPool2d(3, stride, 1) if kind == "max"
                else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
        super().__init__(pool, nn.BatchNorm2d(c))


def make_eval_op(name: str, c: int, stride: int) -> nn.Module:
    """An evaluation-network operation (affine BatchNorms) on ``c`` channels."""
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else _FactorizedReduce(c, c)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return _PoolBN(name[:3], c, stride)
    kernel = int(name[-1])
    if name.startswith("sep_conv"):
        return _SepConv(c, c, kernel, stride)
    if name.startswith("dil_conv"):
        return _DilConv(c, c, kernel, stride, 2)
    raise ValueError(f"no evaluation op {name!r}")


class _EvalCell(nn.Module):
    def __init__(self, edges, concat, nodes, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.pre0 = _FactorizedReduce(c_pp, c) if reduction_prev else _ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = _ReLUConvBN(c_p, c, 1, 1, 0)
        self.edges = list(edges)  # (node, input, op) triples
        self.concat = tuple(concat)
        self.nodes = nodes
        self.ops = nn.ModuleList(make_eval_op(op, c, 2 if reduction and i < 2 else 1)
                                 for _, i, op in self.edges)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(self.nodes):
            total = None
            for (n, i, _), op in zip(self.edges, self.ops):
                if n == node:
                    out = op(states[i])
                    total = out if total is None else total + out
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class NetworkCIFAR(nn.Module):
    """DARTS's evaluation network for a genotype (inference only).

    ``cells`` is a pair of (edges, concat, nodes) for the normal and reduction cells, edges as
    ``(node, input, op)``. Stem: 3x3 conv to ``stem_multiplier * C`` and BatchNorm; cells at
    ``layers // 3`` and ``2 * layers // 3`` reduce and double the width; global average pool;
    linear classifier.
    """

    def __init__(self, normal, reduce, c, classes, layers, stem_multiplier=3):
        super().__init__()
        c_stem = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem))
        c_pp, c_p, c_cur = c_stem, c_stem, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_cur *= 2
            edges, concat, nodes = reduce if reduction else normal
            self.cells.append(_EvalCell(edges, concat, nodes, c_pp, c_p, c_cur, reduction,
                                        reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, len(concat) * c_cur
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


# ------------------------------------------------------------------------- weight mapping

CONV, DEPTHWISE, DENSE, VECTOR = "conv", "depthwise", "dense", "vector"


def to_keras_layout(array: np.ndarray, kind: str) -> np.ndarray:
    """A PyTorch tensor's values in the layout of the matching Keras variable."""
    if kind == CONV:  # (out, in, kh, kw) -> (kh, kw, in, out)
        return np.transpose(array, (2, 3, 1, 0))
    if kind == DEPTHWISE:  # (c, 1, kh, kw) -> (kh, kw, c, 1)
        return np.transpose(array, (2, 3, 0, 1))
    if kind == DENSE:  # (out, in) -> (in, out)
        return array.T
    return array


def to_torch_layout(array: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of :func:`to_keras_layout`."""
    if kind == CONV:
        return np.transpose(array, (3, 2, 0, 1))
    if kind == DEPTHWISE:
        return np.transpose(array, (2, 3, 0, 1))
    if kind == DENSE:
        return array.T
    return array


def _unwrap(module):
    return module.inner if isinstance(module, SamePadded) else module


def _bn_pairs(keras_bn, torch_bn, where):
    """BatchNorm: gamma/beta (affine only), then the moving statistics."""
    pairs = []
    if keras_bn.scale:
        pairs.append((keras_bn.gamma, torch_bn.weight, VECTOR, f"{where}.gamma"))
        pairs.append((keras_bn.beta, torch_bn.bias, VECTOR, f"{where}.beta"))
    pairs.append((keras_bn.moving_mean, torch_bn.running_mean, VECTOR, f"{where}.moving_mean"))
    pairs.append((keras_bn.moving_variance, torch_bn.running_var, VECTOR,
                  f"{where}.moving_variance"))
    return pairs


def _conv(keras_conv, torch_conv, where, kind=CONV):
    return [(keras_conv.kernel, _unwrap(torch_conv).weight, kind, f"{where}.kernel")]


def _dil_pairs(keras_op, torch_seq, where):
    # torch: ReLU, depthwise, pointwise, BN; keras: .depthwise, .pointwise, .bn
    return (_conv(keras_op.depthwise, torch_seq[1], f"{where}.depthwise", DEPTHWISE)
            + _conv(keras_op.pointwise, torch_seq[2], f"{where}.pointwise")
            + _bn_pairs(keras_op.bn, torch_seq[3], f"{where}.bn"))


def _factorized_pairs(keras_op, torch_op, where):
    return (_conv(keras_op.conv_a, torch_op.conv1, f"{where}.conv_a")
            + _conv(keras_op.conv_b, torch_op.conv2, f"{where}.conv_b")
            + _bn_pairs(keras_op.bn, torch_op.bn, f"{where}.bn"))


def _relu_conv_bn_pairs(keras_op, torch_seq, where):
    return (_conv(keras_op.conv, torch_seq[1], f"{where}.conv")
            + _bn_pairs(keras_op.bn, torch_seq[2], f"{where}.bn"))


def _preprocess_pairs(keras_op, torch_op, where):
    from aca_keras.layers import ops as ops_lib

    if isinstance(keras_op, ops_lib.FactorizedReduce):
        return _factorized_pairs(keras_op, torch_op, where)
    return _relu_conv_bn_pairs(keras_op, torch_op, where)


def op_pairs(name: str, keras_op, torch_op, where: str):
    """The pairs of one operation (reference op module or :func:`make_eval_op` module)."""
    if name == "skip_connect":
        if isinstance(torch_op, nn.Identity):
            return []
        return _factorized_pairs(keras_op, torch_op, where)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return _bn_pairs(keras_op.bn, torch_op[1], f"{where}.bn")
    if name.startswith("sep_conv"):
        return (_dil_pairs(keras_op.first, torch_op[0], f"{where}.first")
                + _dil_pairs(keras_op.second, torch_op[1], f"{where}.second"))
    if name.startswith("dil_conv"):
        return _dil_pairs(keras_op, torch_op, where)
    raise ValueError(f"no mapping for op {name!r}")


def _as_layers(weights, prefix):
    """The variables ``{"<op>.first.depthwise.kernel": v, ...}`` of one operation (see
    ``SearchCell.edge``) as nested attributes (``.first.depthwise.kernel``), the shape the
    pair builders read; a BatchNorm node gets ``scale`` (whether it has gamma)."""
    root = types.SimpleNamespace()
    for key, variable in weights.items():
        if not key.startswith(prefix):
            continue
        *path, leaf = key[len(prefix):].split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                setattr(node, part, types.SimpleNamespace(scale=False))
            node = getattr(node, part)
        setattr(node, leaf, variable)
        if leaf == "gamma":
            node.scale = True
    return root


def supernet_pairs(keras_net, torch_net):
    """(keras variable, torch tensor, kind, name) for every weight, BatchNorm statistic and
    the alphas of an aca_keras ``SearchNetwork`` and a ``torch_darts_ref.Network``."""
    pairs = _conv(keras_net.stem_conv, torch_net.stem[0], "stem.conv")
    pairs += _bn_pairs(keras_net.stem_bn, torch_net.stem[1], "stem.bn")
    for c, (kcell, tcell) in enumerate(zip(keras_net.search_cells, torch_net.cells)):
        pairs += _preprocess_pairs(kcell.preprocess0, tcell.pre0, f"cell{c}.pre0")
        pairs += _preprocess_pairs(kcell.preprocess1, tcell.pre1, f"cell{c}.pre1")
        for e, tedge in enumerate(tcell.edges):
            kedge = kcell.edge(e)  # either layout: the edge's variables or views of them
            weights = kedge.weights()
            for i in kedge.op_indices:
                name = kedge.ops[i]
                kop = _as_layers(weights, f"{name}.")
                pairs += op_pairs(name, kop, tedge.ops[i], f"cell{c}.edge{e}.{name}")
    pairs.append((keras_net.classifier.kernel, torch_net.head.weight, DENSE, "head.kernel"))
    pairs.append((keras_net.classifier.bias, torch_net.head.bias, VECTOR, "head.bias"))
    pairs.append((keras_net.alpha_normal, torch_net.alpha_normal, VECTOR, "alpha_normal"))
    pairs.append((keras_net.alpha_reduce, torch_net.alpha_reduce, VECTOR, "alpha_reduce"))
    return pairs


def derived_pairs(keras_model, torch_net):
    """The pairs of an aca_keras ``DerivedNetwork`` (every k_e = C) and a
    :class:`NetworkCIFAR` of the same genotype."""
    wiring = keras_model._wiring
    pairs = _conv(wiring.stem_conv, torch_net.stem[0], "stem.conv")
    pairs += _bn_pairs(wiring.stem_bn, torch_net.stem[1], "stem.bn")
    for c, (kcell, tcell) in enumerate(zip(wiring.cells, torch_net.cells)):
        pairs += _preprocess_pairs(kcell.preprocess0, tcell.pre0, f"cell{c}.pre0")
        pairs += _preprocess_pairs(kcell.preprocess1, tcell.pre1, f"cell{c}.pre1")
        for e, (kedge, top) in enumerate(zip(kcell.edges, tcell.ops)):
            assert kedge.passthrough is None, "parity needs every k_e = C"
            pairs += op_pairs(kedge.edge.op, kedge.op, top, f"cell{c}.edge{e}.{kedge.edge.op}")
    pairs.append((wiring.classifier.kernel, torch_net.classifier.weight, DENSE,
                  "classifier.kernel"))
    pairs.append((wiring.classifier.bias, torch_net.classifier.bias, VECTOR, "classifier.bias"))
    return pairs


def base_variable(kvar):
    """The Keras variable a pair's Keras side is (a variable) or views (a grouped edge's
    ``VariableView``)."""
    return getattr(kvar, "variable", kvar)


def pair_gradients(tape, loss, pairs) -> list[np.ndarray]:
    """``d loss / d kvar`` for each pair's Keras side (a view's part of its variable's
    gradient), in the Keras layout."""
    bases, index = [], {}
    for kvar, *_ in pairs:
        base = base_variable(kvar)
        if id(base) not in index:
            index[id(base)] = len(bases)
            bases.append(base)
    grads = [np.asarray(g) for g in tape.gradient(loss, bases)]
    return [kvar.part(grads[index[id(base_variable(kvar))]]) if hasattr(kvar, "part")
            else grads[index[id(base_variable(kvar))]] for kvar, *_ in pairs]


def coverage(pairs) -> dict[int, int]:
    """``{id(variable): values paired}`` over the pairs' Keras sides."""
    counts: dict[int, int] = {}
    for kvar, *_ in pairs:
        base = id(base_variable(kvar))
        counts[base] = counts.get(base, 0) + int(np.prod(kvar.shape, dtype=np.int64))
    return counts


def copy_torch_to_keras(pairs) -> None:
    """Assign every PyTorch tensor's values to its Keras variable."""
    for kvar, tensor, kind, name in pairs:
        value = to_keras_layout(tensor.detach().cpu().numpy(), kind)
        if tuple(value.shape) != tuple(kvar.shape):
            raise ValueError(f"{name}: torch {tuple(value.shape)} vs keras {tuple(kvar.shape)}")
        kvar.assign(value.astype(kvar.dtype))


def keras_values(pairs) -> list[np.ndarray]:
    """The Keras side's values, in the PyTorch layouts."""
    return [to_torch_layout(np.asarray(kvar.numpy()), kind) for kvar, _, kind, _ in pairs]


def torch_values(pairs) -> list[np.ndarray]:
    return [tensor.detach().cpu().numpy().copy() for _, tensor, _, _ in pairs]


def randomize_statistics(net: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial running statistics (and affine parameters), so that
    inference-mode comparisons exercise them."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.5 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if module.affine:
                    module.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                    module.bias.copy_(0.2 * torch.randn(n, generator=generator))


# --------------------------------------------------------------------- second order (DARTS)


def _loss(net, x, y):
    return F.cross_entropy(net(x), y)


def unrolled_hypergradient(net, momentum_buffers, x_w, y_w, x_a, y_a, *, lr: float,
                           momentum: float, weight_decay: float, r: float = 0.01):
    """DARTS's second-order alpha gradient (eq. 7-8 of the paper), on ``net`` in place (the
    weights are restored before returning):

    1. virtual step ``w' = w - lr * (momentum * buf + dL_train/dw + weight_decay * w)``
       (``buf``: the SGD momentum buffers, ``None`` for none yet);
    2. at ``w'``: ``dalpha = dL_val/dalpha``, ``dw' = dL_val/dw'``;
    3. ``eps = r / ||dw'||``, ``hvp = (dL_train/dalpha(w + eps dw') -
       dL_train/dalpha(w - eps dw')) / (2 eps)``;
    4. the gradient is ``dalpha - lr * hvp``.

    Every forward pass runs in training mode (batch statistics), as in the search.
    """
    weights, alphas = net.weights(), net.alphas()
    backup = [w.detach().clone() for w in weights]
    grads = torch.autograd.grad(_loss(net, x_w, y_w), weights)
    with torch.no_grad():
        for w, g, b in zip(weights, grads, momentum_buffers or [None] * len(weights)):
            step = g + weight_decay * w
            if b is not None:
                step = step + momentum * b
            w.sub_(lr * step)
    val = torch.autograd.grad(_loss(net, x_a, y_a), alphas + weights)
    dalpha, dw = val[:len(alphas)], val[len(alphas):]
    eps = r / torch.sqrt(sum((d * d).sum() for d in dw))

    def alpha_grad_at(sign):
        with torch.no_grad():
            for w, b, d in zip(weights, backup, dw):
                w.copy_(b + sign * eps * d)
        return torch.autograd.grad(_loss(net, x_w, y_w), alphas)

    plus, minus = alpha_grad_at(1.0), alpha_grad_at(-1.0)
    with torch.no_grad():
        for w, b in zip(weights, backup):
            w.copy_(b)
    return [da - lr * (p - m) / (2 * eps) for da, p, m in zip(dalpha, plus, minus)]


def exact_hypergradient(net, momentum_buffers, x_w, y_w, x_a, y_a, *, lr: float,
                        momentum: float, weight_decay: float):
    """The same gradient with the exact mixed second derivative
    ``d/dalpha (dL_train/dw . dw')`` (double backpropagation) instead of the finite
    difference; weights restored before returning."""
    weights, alphas = net.weights(), net.alphas()
    backup = [w.detach().clone() for w in weights]
    grads = torch.autograd.grad(_loss(net, x_w, y_w), weights)
    with torch.no_grad():
        for w, g, b in zip(weights, grads, momentum_buffers or [None] * len(weights)):
            step = g + weight_decay * w
            if b is not None:
                step = step + momentum * b
            w.sub_(lr * step)
    val = torch.autograd.grad(_loss(net, x_a, y_a), alphas + weights)
    dalpha, dw = val[:len(alphas)], [d.detach() for d in val[len(alphas):]]
    with torch.no_grad():
        for w, b in zip(weights, backup):
            w.copy_(b)
    train_grads = torch.autograd.grad(_loss(net, x_w, y_w), weights, create_graph=True)
    dot = sum((g * d).sum() for g, d in zip(train_grads, dw))
    hvp = torch.autograd.grad(dot, alphas)
    return [da - lr * h for da, h in zip(dalpha, hvp)]
