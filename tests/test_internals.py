"""Keras and TensorFlow internals are reached from one module, ``aca_keras/_internals.py``.

* No other module imports from ``keras.src`` or from TensorFlow's private modules
  (``tensorflow.python``, ``tensorflow.lite.python``, ``tensorflow.lite.tools``...), or reads
  ``tf.__internal__``.
* No other module touches a private attribute (``obj._name``, ``getattr(obj, "_name")``,
  ``super()._name``, or a method ``_name`` overriding one) of a Keras or TensorFlow object.
  Read from the source (``ast``): a private name is accepted when aca_keras itself defines it
  (a ``def``/``class``, an assignment, ``setattr``/``object.__setattr__``, a module file) and
  no Keras or TensorFlow object has an attribute of that name (collected from the objects in
  :func:`_keras_private_names`); anything else fails with ``file:line``. :data:`ALLOWED`
  lists the exceptions, each with its reason.
* Each check of ``_internals.CHECKS`` passes (fast): a Keras or TensorFlow release that
  changes one of the internals fails here with a message naming it.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aca_keras"
INTERNALS = PACKAGE / "_internals.py"

# Private modules of Keras and TensorFlow (their public API is `keras.*`, `tf.*`).
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tensorflow.lite.python",
                   "tensorflow.lite.tools", "tensorflow.core", "tensorflow.compiler",
                   "tensorflow.tsl")
PRIVATE_ATTRIBUTE_CHAINS = re.compile(r"^(keras\.src|tf\.python|tensorflow\.python)(\.|$)")

# (file relative to the repository, private name) -> why it is accepted.
ALLOWED = {
    ("aca_keras/cli/__init__.py", "_actions"):
        "argparse's list of a parser's actions (the standard library, not Keras/TensorFlow)",
    ("aca_keras/cli/__init__.py", "_SubParsersAction"):
        "argparse's sub-command action class (the standard library, not Keras/TensorFlow)",
}

# PENDING: sites still to move onto _internals (none left; an entry nothing uses fails below)
PENDING: set[tuple[str, str]] = set()


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != INTERNALS)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _string_attribute(node: ast.Call) -> str | None:
    """The constant name of ``getattr``/``setattr``/``hasattr``/``delattr(obj, "name")`` and
    ``object.__setattr__(obj, "name", value)``."""
    func = _dotted(node.func)
    if func in ("getattr", "setattr", "hasattr", "delattr", "object.__setattr__") \
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
            and isinstance(node.args[1].value, str):
        return node.args[1].value
    return None


def _trees(paths: list[Path] | None = None) -> Iterator[tuple[Path, ast.AST]]:
    for path in _modules() if paths is None else paths:
        yield path, ast.parse(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------- private modules


def test_no_private_module_is_imported_outside_internals():
    found = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Attribute):
                dotted = _dotted(node) or ""
                names = [dotted] if (PRIVATE_ATTRIBUTE_CHAINS.match(dotted)
                                     or node.attr == "__internal__") else []
                if names:
                    found.append(f"{_where(path, node)} reads {dotted}")
                continue
            else:
                continue
            bad = [n for n in names if any(n == m or n.startswith(m + ".")
                                          for m in PRIVATE_MODULES)]
            if bad:
                found.append(f"{_where(path, node)} imports {bad[0]}")
    assert not found, ("private Keras/TensorFlow modules used outside aca_keras/_internals.py "
                       "(move the reach there, with a check):\n" + "\n".join(found))


# ------------------------------------------------------------------ private attributes


@functools.cache
def _keras_private_names() -> frozenset[str]:
    """Private attribute names of Keras and TensorFlow objects the package works with (their
    classes, and built instances for the attributes set in ``__init__``/``build``)."""
    import keras
    import tensorflow as tf

    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(dense(inputs)))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    sgd = keras.optimizers.SGD(momentum=0.9)
    sgd.build(dense.trainable_variables)
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    scaled.build(dense.trainable_variables)
    strategy = tf.distribute.get_strategy()
    objects = [
        keras.layers.Layer, keras.Model, keras.Sequential, keras.layers.BatchNormalization,
        keras.optimizers.Optimizer, keras.optimizers.SGD, keras.optimizers.Adam,
        keras.optimizers.LossScaleOptimizer, keras.callbacks.Callback,
        keras.callbacks.CallbackList, keras.losses.Loss, keras.metrics.Metric, keras.Variable,
        keras.export.ExportArchive(), tf.Module, tf.Module(), tf.Variable, tf.Variable(1.0),
        tf.distribute.Strategy, tf.distribute.MirroredStrategy,
        tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.StrategyExtended,
        tf.distribute.ReplicaContext, tf.data.Dataset, tf.GradientTape, tf.saved_model.Asset,
        dense, model, sgd, scaled, strategy, strategy.extended, dense.kernel,
    ]
    return frozenset(name for obj in objects for name in dir(obj) if _private(name))


def _names_defined_by_the_package() -> set[str]:
    defined = {p.stem for p in PACKAGE.rglob("_*.py")}
    for _, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Name, ast.Attribute)) \
                    and isinstance(node.ctx, ast.Store):
                defined.add(node.id if isinstance(node, ast.Name) else node.attr)
            elif isinstance(node, ast.alias):
                defined.add((node.asname or node.name).rpartition(".")[2])
            elif isinstance(node, ast.Call) and _dotted(node.func) in (
                    "setattr", "object.__setattr__"):
                defined.add(_string_attribute(node) or "")
    return {name for name in defined if _private(name)}


def _private_uses(paths: list[Path] | None = None) -> Iterator[tuple[str, str, str]]:
    """``(file, file:line, name)`` of every private name the package's modules (not
    ``_internals.py``; or ``paths``) read, set or override on an object."""
    for path, tree in _trees(paths):
        file = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        methods = {id(m) for c in classes for m in c.body
                   if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Call):
                name = _string_attribute(node)
            elif id(node) in methods:
                name = node.name
            if name and _private(name):
                yield file, _where(path, node), name


def _flagged(paths: list[Path] | None = None) -> list[tuple[str, str, str, str]]:
    """``(file, file:line, name, why)`` of the private uses that are not aca_keras's own."""
    keras_names = _keras_private_names()
    ours = _names_defined_by_the_package()
    uses = []
    for file, where, name in _private_uses(paths):
        if name in keras_names:
            uses.append((file, where, name, "a private attribute of Keras/TensorFlow objects"))
        elif name not in ours:
            uses.append((file, where, name, "defined neither by aca_keras nor publicly"))
    return uses


@pytest.fixture(scope="module")
def private_uses():
    return _flagged()


def test_no_private_keras_or_tensorflow_attribute_outside_internals(private_uses):
    wrong = [f"{where}: {name} ({why})" for file, where, name, why in private_uses
             if (file, name) not in ALLOWED and (file, name) not in PENDING]
    assert not wrong, (
        "private attributes of Keras/TensorFlow objects used outside aca_keras/_internals.py; "
        "use a public API, or put the reach in _internals.py with a check in CHECKS "
        "(or, for a name that is not Keras's or TensorFlow's, add it to ALLOWED with the "
        "reason):\n" + "\n".join(wrong))


def test_every_allowed_or_pending_entry_is_still_needed(private_uses):
    used = {(file, name) for file, _, name, _ in private_uses}
    stale = sorted((set(ALLOWED) | PENDING) - used)
    assert not stale, f"remove these entries from ALLOWED/PENDING, nothing uses them: {stale}"


def test_the_scan_finds_private_reaches(tmp_path):
    """The scan itself works: each way of reaching into Keras is reported."""
    module = tmp_path / "probe.py"
    module.write_text("class Model(keras.Model):\n"
                      "    def _maybe_symbolic_build(self, iterator=None, data_batch=None):\n"
                      "        return super()._maybe_symbolic_build(iterator, data_batch)\n"
                      "def f(layer, strategy):\n"
                      "    layer._flatten_layers()\n"
                      "    return getattr(strategy.extended, '_num_workers', 1)\n")
    found = {(where.rpartition(":")[2], name, why) for _, where, name, why in _flagged([module])}
    keras = "a private attribute of Keras/TensorFlow objects"
    assert found == {("2", "_maybe_symbolic_build", keras), ("3", "_maybe_symbolic_build", keras),
                     ("5", "_flatten_layers", keras),
                     ("6", "_num_workers", "defined neither by aca_keras nor publicly")}


# ------------------------------------------------------------------------------ checks


def _checks():
    from aca_keras import _internals

    return _internals.CHECKS


@pytest.mark.parametrize("internal", sorted(_checks()))
def test_the_internal_has_the_shape_aca_keras_expects(internal):
    _checks()[internal]()


def test_each_reach_is_named_in_a_check():
    """Every private name _internals.py touches is covered by one of its checks."""
    text = INTERNALS.read_text(encoding="utf-8")
    touched = set(re.findall(r'^_[A-Z_]+ = "(_\w+)"', text, re.M))
    assert touched == {key.rpartition(".")[2] for key in _checks() if ".lite." not in key}


def test_a_changed_internal_fails_with_its_name(monkeypatch):
    import keras

    from aca_keras import _internals

    monkeypatch.delattr(keras.layers.Layer, "_flatten_layers")
    with pytest.raises(RuntimeError, match=r"internal keras\.layers\.Layer\._flatten_layers "
                                           r".*\(it is gone\)"):
        _internals.check_sublayers()
    with pytest.raises(RuntimeError, match=r"keras\.layers\.Layer\._flatten_layers"):
        _internals.sublayers(keras.layers.Dense(1))
    monkeypatch.undo()
    monkeypatch.setattr(keras.optimizers.Optimizer, "_get_variable_index",
                        lambda self, key, extra: 0)
    with pytest.raises(RuntimeError, match=r"Optimizer\._get_variable_index .*parameters "
                                           r"are \['key', 'extra'\]"):
        _internals.check_variable_index()


def test_fit_calls_make_train_function_then_train_function_each_step():
    """SearchNetwork wraps the function Keras's ``make_train_function`` (a method without a
    leading underscore) stores in ``train_function``; ``fit`` must go through both."""
    import keras

    calls = []

    class Wrapped(keras.Sequential):
        def make_train_function(self, force=False):
            super().make_train_function(force)
            function = self.train_function

            def train_function(iterator):
                calls.append("step")
                return function(iterator)

            self.train_function = train_function
            return train_function

    model = Wrapped([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((8, 2), "float32"), np.zeros((8, 1), "float32"), batch_size=4,
              epochs=2, verbose=0)
    assert calls == ["step"] * 4
