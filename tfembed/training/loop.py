"""The training loop every runner uses: ``model.fit`` for a number of steps, resumable.

A run directory gets TensorBoard logs, a per-epoch checkpoint, the resumable training state
(``backup/``, every ``train.checkpoint_every`` steps) and the Recall@K history; a rerun of the
same command continues exactly where an interrupted one stopped (NaN/Inf and SIGTERM handling:
:mod:`tfembed.training.fault_tolerance`).
"""

import os

import keras
import numpy as np
from absl import logging

from tfembed.training.fault_tolerance import TrainingPreempted, TrainingState, sigterm_checkpoints
from tfembed.training.strategy import fit_under_multi_worker


def standard_callbacks(run_dir, recall_callback=None, checkpoint=None):
    """Recall@K (first, so the others see its logs), TensorBoard and a per-epoch model save.

    The resumable training state (every N steps) is :func:`fit_for_steps`'s ``TrainingState``.
    """
    callbacks = [recall_callback] if recall_callback is not None else []
    callbacks += [
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
        checkpoint or keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "checkpoint.keras")),
    ]
    return callbacks


def fit_for_steps(model, data, steps, steps_per_epoch, run_dir, recall_callback, what,
                  batch_size, checkpoint=None, checkpoint_every=None):
    """``model.fit`` for ``steps`` steps (rounded up to whole epochs), resumable.

    Args:
      model: a compiled trainer (optimizer slots built).
      data: ``start_step -> tf.data.Dataset``, the training stream from a given batch number
        (``functools.partial(training_batches, ..., )`` and the pipelines' ``training_data``);
        a plain dataset is also accepted and is skipped forward on resume (which computes the
        skipped batches: fine in a notebook, slow for a long run).
      steps, steps_per_epoch: the schedule.
      run_dir: the run directory: ``backup/`` (training state), ``logs/``, the epoch checkpoint.
      recall_callback: the Recall@K callback (or None); its ``resume_at(step)`` is called with
        the restored step.
      what, batch_size: for the log line.
      checkpoint: a callback saving the model each epoch (default ``ModelCheckpoint`` on the
        model itself; distillers pass one that saves only the student).
      checkpoint_every: steps between training-state checkpoints (default: once per epoch).

    A ``data`` callable with a ``dynamic`` attribute (``tfembed.universal.dynamic``: its
    domains decided from the losses as training goes) is called once per epoch, after the
    policy's update, and its callback runs before the training state's.

    A rerun of the same command restores ``backup/`` and continues from its step, mid-epoch if
    need be; a finished run is not trained again. Raises ``NonFiniteLossError`` on a NaN/Inf
    loss and ``TrainingPreempted`` after checkpointing on SIGTERM (see
    :mod:`tfembed.training.fault_tolerance`).
    """
    steps_per_epoch = max(1, min(int(steps_per_epoch), int(steps)))
    epochs = max(1, int(np.ceil(steps / steps_per_epoch)))
    total = epochs * steps_per_epoch
    state = TrainingState(os.path.join(run_dir, "backup"),
                          every_n_steps=int(checkpoint_every or steps_per_epoch), total_steps=total,
                          schedule={"steps_per_epoch": steps_per_epoch,
                                    "batch_size": int(batch_size)})
    start = state.restore(model)
    if callable(getattr(recall_callback, "resume_at", None)):
        recall_callback.resume_at(start)   # its global step, and its saved evaluation history
    if start >= total:
        logging.info("%s: already trained (%d steps, state in %s)", what, total, state.directory)
        return
    make = data if callable(data) else (lambda start_step: data.skip(start_step))
    dynamic = getattr(data, "dynamic", None)
    fit_under_multi_worker(model)   # Keras 3's fit fails there otherwise (keras#20585)
    callbacks = [state] + standard_callbacks(run_dir, recall_callback, checkpoint)
    if dynamic is not None:
        if dynamic.interval != steps_per_epoch:
            raise ValueError(f"dynamic sampling updates every {dynamic.interval} steps; the run's "
                             f"epochs have {steps_per_epoch}: they must be equal")
        dynamic.resume_at(start)
        callbacks.insert(0, dynamic.callback(model, state))
    logging.info("training %s: %d steps of %d images%s", what, total, batch_size,
                 f" (resuming at step {start})" if start else "")
    with sigterm_checkpoints(state):
        while state.step < total:
            epoch, done = divmod(state.step, steps_per_epoch)
            # A resumed run first finishes its interrupted epoch, then runs whole epochs.
            # (A dynamic stream is rebuilt after every epoch, from the updated policy.)
            end = epoch + 1 if done or dynamic is not None else epochs
            expected = state.step + (end - epoch) * steps_per_epoch - done
            # shuffle=False: the stream is already sampled (Keras ignores shuffle for a
            # tf.data.Dataset, and warns when it is left at its default True).
            model.fit(make(start_step=state.step), initial_epoch=epoch, epochs=end,
                      steps_per_epoch=steps_per_epoch - done, callbacks=callbacks, verbose=2,
                      shuffle=False)
            if state.preempted:
                raise TrainingPreempted(state.step, state.directory)
            if state.step != expected:  # another callback stopped training (early stopping)
                break
