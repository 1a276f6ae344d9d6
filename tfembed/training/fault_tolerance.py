"""Fault tolerance for every trainer: checkpoint every N steps, resume, NaN stop, preemption.

Every ``fit`` in tfembed goes through :func:`tfembed.training.loop.fit_for_steps`, which
hands the run to a :class:`TrainingState` callback:

* **every N steps** (``train.checkpoint_every``) it writes a ``tf.train.Checkpoint`` of the model
  (so every sub-model, head and step counter it tracks), its optimizer(s) with their slots and
  iteration counts, and the global step, under ``<run_dir>/backup/`` through a
  ``tf.train.CheckpointManager``. A checkpoint becomes "the latest" only once it is completely
  written (the manager's state file is replaced after the data), so a kill during a save leaves
  the previous checkpoint in force;
* **the data-iterator position and RNG state are the step**: tfembed's training streams are pure
  functions of ``(seed, batch number)`` (``training_batches(..., start_step=s)``), augmentation
  and sampling use stateless random ops seeded from that number, and the trainers' own random
  draws (DM²'s update gates) are seeded from a step counter held in the model. Restoring the step
  therefore restores where the data stream and every random draw stand;
* **rerunning the same command resumes**: :meth:`TrainingState.restore` loads the latest
  checkpoint before ``fit``, and ``fit_for_steps`` continues mid-epoch from the restored step.
  The checkpoint of a finished run stays, so rerunning a finished command trains nothing;
  a checkpoint written by a different schedule (steps, steps per epoch, batch size) is refused
  with a message rather than silently mixed in;
* **a NaN/Inf loss** (any non-finite value among the step's logged losses) stops the run with
  :class:`NonFiniteLossError` naming the step and the last good checkpoint, which is left as it
  was (the check runs before that step's save);
* **SIGTERM** (preemption) sets a flag; at the end of the running step the state is saved and
  ``fit_for_steps`` raises :class:`TrainingPreempted` (``tfembed-train`` then exits with status
  143 after saying how to resume).

Under ``MultiWorkerMirroredStrategy`` every worker takes part in a save (reading some
distributed variables is a collective op), but only the chief's checkpoint is kept: the other
workers write into a private directory that is deleted after each save.
"""

import contextlib
import json
import math
import os
import shutil
import signal
import threading

import keras
import tensorflow as tf
from absl import logging

from tfembed.io import atomic_write
from tfembed.training.strategy import worker_role


class NonFiniteLossError(RuntimeError):
    """A training step produced a NaN or infinite loss."""


class TrainingPreempted(RuntimeError):
    """SIGTERM arrived during training; the state was checkpointed first."""

    def __init__(self, step, directory):
        super().__init__(f"preempted (SIGTERM) after step {step}; the training state is saved "
                         f"in {directory}: rerun the same command to resume")
        self.step = step
        self.directory = directory


class TrainingState(keras.callbacks.Callback):
    """Checkpoints every ``every_n_steps`` steps, stops on a non-finite loss, saves on SIGTERM.

    Args:
      directory: where the checkpoints go (``<run_dir>/backup``).
      every_n_steps: steps between checkpoints (and the last step is always saved).
      total_steps: the run's length, recorded with the checkpoint.
      schedule: other facts the checkpoint is only valid for (steps per epoch, batch size...),
        compared on restore.
      max_to_keep: checkpoints kept (older ones are deleted by the manager).

    Example:

    ```python
    state = TrainingState(os.path.join(run_dir, "backup"), every_n_steps=100, total_steps=1000)
    start = state.restore(model)          # 0, or the step of the latest checkpoint
    model.fit(batches(start_step=start), steps_per_epoch=1000 - start, callbacks=[state])
    ```
    """

    def __init__(self, directory, every_n_steps, total_steps, schedule=None, max_to_keep=2):
        super().__init__()
        if int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps!r}")
        self.directory = directory
        self.every_n_steps = int(every_n_steps)
        self.total_steps = int(total_steps)
        self.schedule = dict(schedule or {}, total_steps=self.total_steps)
        self.max_to_keep = int(max_to_keep)
        self.step = 0
        self.preempt_requested = False
        self.preempted = False
        self._checkpoint = None

    # ----------------------------------------------------------------------------- set-up

    def _objects(self, model):
        objects = {"model": model}
        if getattr(model, "optimizer", None) is not None:
            objects["optimizer"] = model.optimizer
        # Trainers with more than one optimizer (a DM² cohort) name the others themselves.
        hook = getattr(model, "checkpoint_objects", None)
        if callable(hook):
            objects.update(hook())
        return objects

    def _manager(self, directory):
        return tf.train.CheckpointManager(self._checkpoint, directory,
                                          max_to_keep=self.max_to_keep)

    @property
    def _metadata_path(self):
        return os.path.join(self.directory, "schedule.json")

    def restore(self, model):
        """Loads the latest checkpoint into ``model`` (built and compiled) and returns its step
        (0 when there is none)."""
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self._checkpoint = tf.train.Checkpoint(step=self._step, **self._objects(model))
        # The model's strategy: restore runs outside the strategy scope, where
        # get_strategy() is the default one and every worker would think itself the chief.
        self._is_chief, self._task_id = worker_role(model.distribute_strategy)
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            self.step = 0
            return 0
        if os.path.exists(self._metadata_path):
            with open(self._metadata_path) as f:
                saved = json.load(f)
            diff = {k: (saved.get(k), v) for k, v in self.schedule.items() if saved.get(k) != v}
            if diff:
                raise ValueError(
                    f"the checkpoint in {self.directory} belongs to a different schedule "
                    f"({', '.join(f'{k}: saved {a!r}, now {b!r}' for k, (a, b) in diff.items())}"
                    "); use a fresh run directory (--workdir) or delete that one to start over")
        # The optimizer's slots exist already (trainers build them in compile), so every saved
        # value has a variable to land in, and a missing one is an error, not a silent default.
        self._checkpoint.restore(latest).assert_existing_objects_matched()
        self.step = int(self._step.numpy())
        logging.info("resuming from %s (step %d of %d)", latest, self.step, self.total_steps)
        return self.step

    # ---------------------------------------------------------------------------- saving

    def save(self):
        """Writes the current state; returns the checkpoint path (the chief's)."""
        self._step.assign(self.step)
        if self._is_chief:
            path = self._manager(self.directory).save(checkpoint_number=self.step)
            if not os.path.exists(self._metadata_path):
                atomic_write(self._metadata_path, lambda f: json.dump(self.schedule, f))
            return path
        scratch = os.path.join(self.directory, f".worker_{self._task_id}")
        try:
            self._manager(scratch).save(checkpoint_number=self.step)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return tf.train.latest_checkpoint(self.directory)

    # ------------------------------------------------------------------------- callbacks

    def on_train_begin(self, logs=None):
        if self._checkpoint is None:
            # Restoring here would resume the weights but not the data stream the caller built.
            raise RuntimeError("TrainingState.restore(model) must run before fit: it returns "
                               "the step the training data has to start from")

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        for key, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                self.model.stop_training = True
                last = tf.train.latest_checkpoint(self.directory)
                raise NonFiniteLossError(
                    f"{key} = {value} at step {self.step}; training stopped. The last good "
                    f"checkpoint is {last or '(none written yet)'}: rerunning the same command "
                    "resumes from it (lower the learning rate or fix the data first)")
        if self.preempt_requested:
            path = self.save()
            logging.warning("SIGTERM: saved %s at step %d; stopping", path, self.step)
            self.preempted = True
            self.model.stop_training = True
        elif self.step % self.every_n_steps == 0 or self.step == self.total_steps:
            self.save()


@contextlib.contextmanager
def sigterm_checkpoints(state):
    """Within the block, SIGTERM asks ``state`` to checkpoint and stop (main thread only: Python
    signal handlers can only be installed there; elsewhere SIGTERM keeps its behaviour)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum, frame):
        logging.warning("SIGTERM received: checkpointing after the running step")
        state.preempt_requested = True

    previous = signal.signal(signal.SIGTERM, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
