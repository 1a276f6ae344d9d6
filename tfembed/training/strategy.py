"""Choosing the tf.distribute strategy and the numerics of a run.

``strategy`` (a recipe's top-level key):

* ``default``: MirroredStrategy over all visible GPUs when there is more than one, else the
  default (single-device) strategy;
* ``mirrored``: MirroredStrategy over every visible GPU (or every logical CPU device when there is
  no GPU, which is how the tests run 2 replicas on one CPU);
* ``multi_worker``: MultiWorkerMirroredStrategy over the cluster described by the ``TF_CONFIG``
  environment variable (every worker runs the same command; see docs/operations.md);
* ``one_device``: the first GPU, else the CPU.

Batch sizes in recipes are global: Keras splits each batch over the replicas, and the trainers
gather what a pairwise loss needs back into the global batch.

``precision``: ``float32``, ``mixed_bfloat16`` or ``mixed_float16`` (Keras' global dtype policy:
layers compute in 16 bits, variables stay float32; tfembed's losses cast embeddings to float32;
``mixed_float16`` gets dynamic loss scaling from Keras' ``LossScaleOptimizer``, which ``compile``
wraps around the optimizer under that policy).
"""

import contextlib
import json
import os

import keras
import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "multi_worker", "one_device")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# MultiWorkerMirroredStrategy must be created once per process, before other collective ops:
# every pipeline of a run asks for the strategy, so it is kept.
_MULTI_WORKER = []


def _multi_worker():
    if not _MULTI_WORKER:
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy=multi_worker reads the cluster from the TF_CONFIG "
                             "environment variable, which is not set (see "
                             "docs/operations.md)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
        _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _MULTI_WORKER[0]


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """Returns the strategy named by a recipe's ``strategy`` key."""
    if name == "multi_worker":
        # First: collectives must be configured before anything initialises the runtime
        # (listing the logical devices below would).
        strategy = _multi_worker()
        logging.info("strategy %s with %d replica(s)", type(strategy).__name__,
                     strategy.num_replicas_in_sync)
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
        else:
            strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy((gpus[0] if gpus else tf.config.list_logical_devices("CPU")[0]).name)
    else:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    logging.info("strategy %s with %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    return strategy


def worker_role(strategy=None):
    """``(is_chief, task_id)`` of this process (``(True, 0)`` outside a multi-worker cluster).

    ``strategy`` defaults to the run's MultiWorkerMirroredStrategy when one was created. A
    cluster with a ``chief`` task has it as the chief; otherwise worker 0 is.
    """
    if strategy is None:
        strategy = _MULTI_WORKER[0] if _MULTI_WORKER else tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None) or 0
    if task_type is None:
        return True, 0
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in
                                        resolver.cluster_spec().as_dict())
    return is_chief, task_id


def barrier():
    """Under strategy=multi_worker, returns once every worker has reached it (else a no-op).

    Workers do unequal work at the end of a run (only the chief exports); one that exits first
    is reported as crashed by the others' coordination service.
    """
    if _MULTI_WORKER:
        strategy = _MULTI_WORKER[0]
        ones = strategy.run(lambda: tf.constant(1.0))
        strategy.reduce("SUM", ones, axis=None).numpy()


@contextlib.contextmanager
def precision(name: str = "float32"):
    """Within the block, Keras' global dtype policy is ``name`` (restored afterwards)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {PRECISIONS}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _local_value(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def fit_under_multi_worker(model):
    """Makes ``model.fit`` run under MultiWorkerMirroredStrategy (a no-op under any other).

    Keras 3's TF trainer fails there in two places (keras-team/keras#20585,
    tensorflow/tensorflow#72388):

    * ``fit`` builds the model symbolically from the first batch, which it first reduces across
      workers with ``strategy.reduce``; a per-worker batch is not a reducible value. Here the
      model is built from this worker's local batch (only shapes and dtypes are used).
    * the train function reduces every log with ``strategy.reduce("MEAN", v, axis=0)``, which
      fails on scalar logs. tfembed's train steps log scalars that are the same on every
      replica (losses on the gathered batch, metrics), so the replacement train function
      averages them with ``axis=None``; it runs one step per call (``steps_per_execution`` 1,
      what tfembed uses).

    Both are set on this model instance only, so nothing changes for other models or
    strategies; ``tests/training/test_multi_worker.py`` runs two workers on loopback ports through it.
    """
    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    if getattr(model, "steps_per_execution", 1) != 1:
        raise ValueError("under strategy=multi_worker tfembed runs one step per execution; "
                         "compile with steps_per_execution=1")

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        data_batch = tf.nest.map_structure(lambda v: _local_value(strategy, v), data_batch)
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)   # pylint: disable=protected-access

    def make_train_function(force=False):
        if model.train_function is not None and not force:
            return model.train_function

        @tf.function(reduce_retracing=True, jit_compile=model.jit_compile)
        def one_step(data):
            logs = strategy.run(model.train_step, args=(data,))
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), logs)

        def train_function(iterator):
            return one_step(next(iterator))

        model.train_function = train_function
        return train_function

    model._maybe_symbolic_build = maybe_symbolic_build   # pylint: disable=protected-access
    model.make_train_function = make_train_function
    return model
