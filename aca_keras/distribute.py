"""Several devices (``tf.distribute``) and mixed precision for search and training.

Strategies. :func:`get_strategy` turns ``"mirrored"`` (every GPU of this machine, else every
logical CPU device), ``"multiworker"`` (``MultiWorkerMirroredStrategy`` configured by the
``TF_CONFIG`` environment variable) or a strategy object into the strategy a run uses;
``None``/``"default"`` means no strategy (one device). :func:`describe_strategy` gives what
``config.json`` records (the kind and the replica count; the object itself is not JSON).

Replica arithmetic (see ``docs/scaling.md``). The input pipeline's batch is the *global*
batch; ``model.fit`` splits it into ``num_replicas_in_sync`` equal per-replica batches. Keras
losses divide each replica's mean loss by the replica count, so the per-replica gradients
*sum* to the gradient of the global-batch mean loss. Keras's TensorFlow optimiser sums the
gradients across replicas inside ``apply_gradients``, after its own clipping, so anything that
must see the global gradient (global-norm clipping, coupled weight decay, the second-order
hypergradient) works on :func:`global_gradients` (an explicit all-reduce) and hands the
optimiser :func:`apply_global_gradients` (divided by the replica count, which the optimiser's
sum undoes).

BatchNorm. Under a strategy with several replicas BatchNorm can normalise with the global
batch's statistics; whether it does is an argument of the models (``sync_batch_norm=``),
which :func:`synchronize_batch_norm` computes from the strategy and the run's setting. No
module state is involved.

Mixed precision. :func:`precision_policy` picks ``mixed_float16`` on a GPU and
``mixed_bfloat16`` on a CPU that runs bfloat16 convolutions; :func:`dtype_policy` sets Keras's
(process-global) policy for the duration of a ``with`` block and restores the previous one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from aca_keras import _internals as internals
from aca_keras.errors import StrategyError

__all__ = [
    "STRATEGY_KINDS",
    "all_reduce_sum",
    "apply_global_gradients",
    "check_global_batch",
    "cluster_workers",
    "data_options",
    "describe_strategy",
    "dtype_policy",
    "get_strategy",
    "global_gradients",
    "is_chief",
    "num_replicas",
    "precision_policy",
    "step_outputs",
    "strategy_scope",
    "synchronize_batch_norm",
    "unscaled_loss",
]

#: Strategy names accepted by :func:`get_strategy` (and the CLIs' ``--strategy``).
STRATEGY_KINDS = ("default", "mirrored", "multiworker")

_MULTIWORKER: list = []
_MIRRORED: dict[tuple[str, ...], tf.distribute.MirroredStrategy] = {}

_SUPPORTED = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy,
              tf.distribute.OneDeviceStrategy)


# ------------------------------------------------------------------------------ strategies


def get_strategy(strategy: str | tf.distribute.Strategy | None) -> tf.distribute.Strategy | None:
    """The strategy a run uses: ``None`` for one device (no strategy).

    Args:
        strategy: ``None`` or ``"default"`` (one device), ``"mirrored"`` (all GPUs of this
            machine, or all logical CPU devices when there is no GPU), ``"multiworker"``
            (``MultiWorkerMirroredStrategy``; needs ``TF_CONFIG``), or a
            ``MirroredStrategy`` / ``MultiWorkerMirroredStrategy`` / ``OneDeviceStrategy``.

    Raises:
        StrategyError: an unknown name, an unsupported strategy class, ``"multiworker"``
            without a valid ``TF_CONFIG``, or a multi-worker strategy requested after
            TensorFlow has started (it must be created first).
    """
    if strategy is None:
        return None
    if isinstance(strategy, tf.distribute.Strategy):
        if not isinstance(strategy, _SUPPORTED):
            raise StrategyError(
                f"{type(strategy).__name__} is not supported; use MirroredStrategy (several "
                "devices of one machine) or MultiWorkerMirroredStrategy (several machines).")
        return strategy
    name = str(strategy).strip().lower().replace("-", "").replace("_", "")
    if name in ("default", "none", "", "single"):
        return None
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = tuple(d.name for d in (gpus or tf.config.list_logical_devices("CPU")))
        # One strategy per device set and process: TensorFlow numbers the collective
        # operations of every MirroredStrategy from the same base, so a second instance's
        # all-reduces would collide with the first one's.
        if devices not in _MIRRORED:
            _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
        return _MIRRORED[devices]
    if name in ("multiworker", "multiworkermirrored"):
        _check_tf_config()
        # One per process, as for "mirrored": a second instance numbers its collective
        # operations from the same base as the first, and the workers' operations would no
        # longer match (a search followed by a training in one program).
        if _MULTIWORKER:
            return _MULTIWORKER[0]
        try:
            _MULTIWORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
            return _MULTIWORKER[0]
        except (RuntimeError, ValueError) as error:
            raise StrategyError(
                f"Could not start MultiWorkerMirroredStrategy ({error}). It must be created "
                "before TensorFlow runs anything in the process: use the CLI's --strategy "
                "multiworker, or create tf.distribute.MultiWorkerMirroredStrategy() first "
                "thing in the program and pass the object as strategy=.") from None
    raise StrategyError(f"Unknown strategy {strategy!r}; choose one of "
                        f"{', '.join(STRATEGY_KINDS)} or pass a tf.distribute strategy object.")


def _check_tf_config() -> None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "strategy='multiworker' needs the TF_CONFIG environment variable (the cluster's "
            "worker addresses and this worker's index), e.g. TF_CONFIG='{\"cluster\": "
            "{\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": "
            "\"worker\", \"index\": 0}}'. See docs/scaling.md.")
    try:
        config = json.loads(raw)
    except ValueError as error:
        problem = f"not JSON: {error}"
    else:
        cluster = config.get("cluster") if isinstance(config, dict) else None
        task = config.get("task") if isinstance(config, dict) else None
        workers = cluster.get("worker") if isinstance(cluster, dict) else None
        if not isinstance(workers, list) or not workers:
            problem = "cluster.worker must list the workers' host:port addresses"
        elif not isinstance(task, dict) or task.get("type") not in ("worker", "chief"):
            problem = "task must be {\"type\": \"worker\", \"index\": i}"
        elif task["type"] == "worker" and (not isinstance(task.get("index"), int)
                                           or not 0 <= task["index"] < len(workers)):
            problem = f"task.index must be 0..{len(workers) - 1}"
        else:
            return
    raise StrategyError(f"TF_CONFIG is not a valid multi-worker configuration ({problem}): "
                        f"{raw!r}. See docs/scaling.md.")


def describe_strategy(strategy: tf.distribute.Strategy | None) -> dict[str, Any]:
    """What a run directory records about its strategy: ``kind`` (``"default"``,
    ``"mirrored"``, ``"multiworker"``, ``"one_device"``), ``replicas`` (replicas in sync, all
    workers together) and ``workers``."""
    if strategy is None:
        return {"kind": "default", "replicas": 1, "workers": 1}
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        kind = "multiworker"
        workers = cluster_workers(strategy.cluster_resolver)
    elif isinstance(strategy, tf.distribute.MirroredStrategy):
        kind, workers = "mirrored", 1
    else:
        kind, workers = "one_device", 1
    return {"kind": kind, "replicas": int(strategy.num_replicas_in_sync), "workers": workers}


def cluster_workers(resolver: Any) -> int:
    """The number of workers a ``MultiWorkerMirroredStrategy`` with this cluster resolver
    (``strategy.cluster_resolver``) runs on, as TensorFlow counts them: the chief and the
    workers of the cluster spec (the evaluators, when this task is one); 1 for an empty
    spec (one local worker, no ``TF_CONFIG``).

    Raises:
        StrategyError: no resolver, or one whose cluster spec cannot be read.
    """
    try:
        spec = resolver.cluster_spec().as_dict()
        task_type = resolver.task_type
    except Exception as error:  # a missing or broken resolver: say so, do not guess 1
        raise StrategyError(
            f"Cannot count the workers of the multi-worker strategy: its cluster resolver "
            f"({type(resolver).__name__}) gives no cluster spec ({error}). Create the "
            "strategy with a cluster resolver (TF_CONFIG or "
            "tf.distribute.cluster_resolver.SimpleClusterResolver).") from error
    if not spec:
        return 1
    if task_type == "evaluator":
        return len(spec.get("evaluator", ()))
    return len(spec.get("chief", ())) + len(spec.get("worker", ()))


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """True on the worker that should keep the run's files (worker 0); always true without
    a multi-worker strategy."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0)


@contextlib.contextmanager
def strategy_scope(strategy: tf.distribute.Strategy | None) -> Iterator[None]:
    """``strategy.scope()``, or nothing for ``None``."""
    if strategy is None:
        yield
    else:
        with strategy.scope():
            yield


def synchronize_batch_norm(strategy: tf.distribute.Strategy | None,
                           enabled: bool = True) -> bool:
    """The ``sync_batch_norm`` value for the models of a run under ``strategy``: true when
    ``enabled`` (the run's ``sync_batch_norm`` setting) and the strategy has several
    replicas, so that BatchNorm normalises with the global batch's statistics (the results
    of one device); false on one device or when switched off (each replica then normalises
    with its own batch: a cheaper graph, other numbers).

    Only computes the value: the trainer and the search pipeline pass it to the models they
    build (``sync_batch_norm=``), and the models pass it to every BatchNorm layer.
    """
    return bool(enabled) and strategy is not None and int(strategy.num_replicas_in_sync) > 1


def num_replicas() -> int:
    """Replicas in sync of the current strategy (1 outside any strategy)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def check_global_batch(batch_size: int, replicas: int) -> None:
    """Raise :class:`StrategyError` unless ``batch_size`` splits evenly over ``replicas``
    (each replica's loss is divided by the replica count, which is exact only for equal
    per-replica batches)."""
    if replicas > 1 and batch_size % replicas:
        raise StrategyError(
            f"The global batch of {batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas} (each replica gets batch / replicas images).")


def data_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with DATA auto-sharding under the current strategy when it spans several
    workers (the pipelines are built from in-memory tensors, not files, so FILE sharding
    does not apply); unchanged otherwise."""
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


# ------------------------------------------------------------------- replica arithmetic


def _loss_scale(optimizer) -> tf.Tensor | None:
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale
    return None


def all_reduce_sum(values: Sequence[Any]) -> list[Any]:
    """Sum ``values`` (tensors or ``None``) across the replicas when called in a replica
    context with several replicas; unchanged otherwise."""
    values = list(values)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    present = [i for i, v in enumerate(values) if v is not None]
    if not present:
        return values
    reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, [values[i] for i in present])
    for i, value in zip(present, reduced):
        values[i] = value
    return values


def global_gradients(tape: tf.GradientTape, loss: Any, variables: Sequence[Any],
                     optimizer: Any = None) -> list[Any]:
    """Gradients of the global-batch loss, identical on every replica.

    ``loss`` is a replica's loss as Keras computes it under a strategy (its batch mean
    divided by the replica count), so the sum over replicas is the global gradient. With a
    ``LossScaleOptimizer`` the gradient is taken of the scaled loss (no float16 underflow)
    and unscaled after the sum; a non-finite result then means an overflow, which
    :func:`apply_global_gradients` lets the optimiser skip.
    """
    scale = _loss_scale(optimizer)
    if scale is None:
        grads = tape.gradient(loss, list(variables))
    else:
        grads = tape.gradient(loss, list(variables),
                              output_gradients=keras.ops.cast(scale, loss.dtype))
    grads = all_reduce_sum(grads)
    if scale is not None:
        grads = [None if g is None else g / keras.ops.cast(scale, g.dtype) for g in grads]
    return grads


def apply_global_gradients(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]
                           ) -> None:
    """Apply gradients from :func:`global_gradients` (after clipping or weight decay).

    Keras's optimiser sums its gradients across replicas (and a ``LossScaleOptimizer``
    divides them by its loss scale), so they are handed over divided by the replica count
    (and multiplied by the loss scale): the variables move by exactly the global gradient.
    """
    replicas = tf.distribute.get_replica_context()
    count = 1 if replicas is None else replicas.num_replicas_in_sync
    scale = _loss_scale(optimizer)
    grads = list(grads)
    if count > 1:
        grads = [None if g is None else g / float(count) for g in grads]
    if scale is not None:
        grads = [None if g is None else g * keras.ops.cast(scale, g.dtype) for g in grads]
    optimizer.apply_gradients(zip(grads, variables))


def step_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """A train step's metric results, shaped for Keras's cross-replica reduction.

    Under ``MultiWorkerMirroredStrategy`` Keras 3 averages step outputs with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars: there each value
    gets a leading axis of length 1 (the mean over it is the scalar again). Unchanged under
    any other strategy.
    """
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return outputs
    return {name: keras.ops.reshape(value, (1,)) for name, value in outputs.items()}


def multiworker_train_step(model: Any, dataset: Any = None) -> None:
    """Make a Keras model's own ``train_step`` usable under ``MultiWorkerMirroredStrategy``
    (its scalar metric results get the leading axis :func:`step_outputs` describes); a no-op
    under any other strategy. Call it in the strategy's scope, before ``fit``.

    With ``dataset`` (the ``tf.data`` pipeline given to ``fit``), Keras's build of the
    compiled metrics before the first step uses one local batch of it: Keras would otherwise
    take a batch of the distributed dataset, which under this strategy mixes per-replica and
    plain values it cannot convert."""
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return
    step = model.train_step

    def train_step(data):
        return step_outputs(step(data))

    model.train_step = train_step
    if dataset is not None:
        internals.symbolic_build_from_batch(model, next(iter(dataset)))


def replica_position() -> tuple[Any, int]:
    """``(replica id, replicas in sync)`` in a replica context (``(0, 1)`` elsewhere): where
    this replica's share lies in the global batch, for per-sample random draws that must
    match a single device (draw for the global batch, keep this replica's slice)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0, 1
    return context.replica_id_in_sync_group, int(context.num_replicas_in_sync)


def unscaled_loss(loss: Any) -> Any:
    """A replica's loss as Keras computes it under a strategy (divided by the replica
    count), multiplied back: the replica's own batch mean, for metrics."""
    count = num_replicas()
    return loss if count == 1 else loss * keras.ops.cast(count, loss.dtype)


# ------------------------------------------------------------------------ mixed precision


def precision_policy(mixed_precision: bool | str | None) -> str:
    """The Keras dtype policy for a run: ``"float32"`` when ``mixed_precision`` is false;
    ``True`` picks ``"mixed_float16"`` when a GPU is visible and ``"mixed_bfloat16"`` on the
    CPU; a policy name (``"mixed_float16"``, ``"mixed_bfloat16"``) is taken as given.

    Raises:
        StrategyError: an unknown policy name, or bfloat16 on a CPU that cannot run the
            supernet's operations in bfloat16.
    """
    if mixed_precision is None or mixed_precision is False:
        return "float32"
    if isinstance(mixed_precision, str):
        name = mixed_precision.strip().lower()
        if name in ("float32", "none", "off"):
            return "float32"
        if name not in ("mixed_float16", "mixed_bfloat16"):
            raise StrategyError(f"Unknown mixed precision policy {mixed_precision!r}; use True, "
                                "'mixed_float16' (GPU) or 'mixed_bfloat16' (CPU).")
    elif mixed_precision is True:
        name = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    else:
        raise StrategyError(f"mixed_precision must be a bool or a policy name, got "
                            f"{mixed_precision!r}.")
    if name == "mixed_bfloat16" and not tf.config.list_logical_devices("GPU"):
        _check_cpu_bfloat16()
    return name


def _check_cpu_bfloat16() -> None:
    """Run the supernet's kinds of operations once in bfloat16 on the CPU."""
    try:
        with tf.device("/cpu:0"):
            x = tf.ones((1, 4, 4, 2), tf.bfloat16)
            y = tf.nn.conv2d(x, tf.ones((3, 3, 2, 2), tf.bfloat16), 1, "SAME")
            y = tf.nn.depthwise_conv2d(y, tf.ones((3, 3, 2, 1), tf.bfloat16), [1, 1, 1, 1],
                                       "SAME", dilations=[2, 2])
            y = tf.nn.max_pool2d(y, 3, 1, "SAME") + tf.nn.avg_pool2d(y, 3, 1, "SAME")
            tf.matmul(tf.reshape(y, (1, -1)), tf.ones((32, 2), tf.bfloat16)).numpy()
    except (tf.errors.OpError, TypeError, ValueError) as error:
        raise StrategyError(f"This CPU/TensorFlow build cannot run bfloat16 convolutions "
                            f"({type(error).__name__}); run without mixed precision.") from None


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[str]:
    """Set Keras's global dtype policy to ``name`` inside the block, then restore the previous
    one (also when the block raises). Layers take the policy that is global when they are
    created, so create the models inside the block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)


# ------------------------------------------------------------------------------- models
