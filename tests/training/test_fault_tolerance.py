"""Resumable training: checkpoint every N steps, exact resume, NaN stop, SIGTERM, SIGKILL + rerun."""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import SMALL_CNN
from tfembed.data import pipeline
from tfembed.data.samplers import ClassBalanced, Pairs
from tfembed.data.sources import read_demo
from tfembed.data.types import ImageSpec
from tfembed.data.views import CohortViews
from tfembed.losses import TripletSemiHardLoss
from tfembed.training.fault_tolerance import (
    NonFiniteLossError,
    TrainingPreempted,
    TrainingState,
)
from tfembed.training.loop import fit_for_steps

SIZE = (16, 16)


# ------------------------------------------------------------------------------ streams

def _take(ds, n):
    return [tuple(np.asarray(t) for t in tf.nest.flatten(b)) for b in ds.take(n)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


@pytest.fixture(scope="module")
def digits():
    return read_demo("digits")


@pytest.mark.parametrize("sampler,view", [(ClassBalanced(3, 2), None), (Pairs(4, 2), None),
                                          (ClassBalanced(3, 2), CohortViews(2))])
def test_training_batches_from_start_step_are_the_tail_of_the_stream(digits, sampler, view):
    make = lambda s: pipeline.batches(  # noqa: E731
        [digits.train], sampler, spec=ImageSpec(SIZE, (18, 18)), view=view, seed=5,
        start_step=s)
    full = _take(make(0), 5)
    _same(_take(make(3), 2), full[3:])


def test_unlabelled_batches_resume_and_cover_every_image_once_per_pass(digits):
    split = digits.train.subset(np.arange(10))
    make = lambda s: pipeline.unlabelled_batches(  # noqa: E731
        split, 4, spec=ImageSpec(SIZE, (18, 18)), seed=1, start_step=s)
    full = _take(make(0), 6)                      # 24 elements: passes 0, 1 and part of 2
    _same(_take(make(4), 2), full[4:])
    # Identify images by their (unaugmented) identity: a pass of 10 elements = a permutation.
    ids = tf.data.Dataset.counter().map(lambda n: tf.random.experimental.index_shuffle(
        n % 10, tf.constant([1, 0x5A5], tf.int64) + [0, n // 10], 9)).take(20)
    ids = np.array(list(ids.as_numpy_iterator()))
    assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:]) == list(range(10))
    assert not np.array_equal(ids[:10], ids[10:])  # a fresh permutation per pass


# ------------------------------------------------------------------------------ in-process runs

def _model(seed=0, loss=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="tanh")(inputs)  # (a fused ReLU maps NaN to 0)
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(3)(x))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), loss=loss or TripletSemiHardLoss(0.2),
                  jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    return model


def _stream(start_step=0, nan_at=None):
    """Batches that are a pure function of the step (like tfembed's training streams)."""

    def batch(step):
        x = tf.random.stateless_normal([8, 4], tf.stack([step, tf.constant(7, tf.int64)]))
        if nan_at is not None:
            x = tf.where(tf.equal(step, nan_at), x * np.nan, x)
        return x, tf.constant([0, 0, 1, 1, 2, 2, 3, 3], tf.int64)

    return tf.data.Dataset.counter(start_step).map(batch)


def _fit(model, run_dir, data=_stream, steps=7, on_begin=None, on_end=None, every=2):
    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if on_begin:
                on_begin(self.model)

        def on_train_batch_end(self, batch, logs=None):
            if on_end:
                on_end(self.model)

    # The recall slot carries the test's probe (it runs after the training state's callback).
    fit_for_steps(model, data, steps, 3, str(run_dir), Probe(), what="test", batch_size=8,
                  checkpoint_every=every)


def _weights(model):
    return [v.numpy() for v in model.weights] + [v.numpy() for v in model.optimizer.variables]


def test_fit_for_steps_checkpoints_every_n_steps_and_rerun_trains_nothing(tmp_path):
    model = _model()
    _fit(model, tmp_path)
    names = sorted(f for f in os.listdir(tmp_path / "backup") if f.endswith(".index"))
    # 7 steps round up to 3 epochs of 3 = 9; saves at 2, 4, 6, 8 and the last step 9 (keep 2).
    assert names == ["ckpt-8.index", "ckpt-9.index"]
    assert int(model.optimizer.iterations.numpy()) == 9
    again = _model(seed=1)
    _fit(again, tmp_path)   # restores step 9 of 9: nothing to train
    for a, b in zip(_weights(model), _weights(again)):
        np.testing.assert_array_equal(a, b)


def test_sigterm_saves_and_the_rerun_resumes_mid_epoch_to_the_same_weights(tmp_path):
    reference = _model()
    _fit(reference, tmp_path / "reference")

    def terminate_during_step_4(model):
        if int(model.optimizer.iterations.numpy()) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    model = _model()
    with pytest.raises(TrainingPreempted, match="after step 4"):
        _fit(model, tmp_path / "run", on_begin=terminate_during_step_4)
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "backup")).endswith("ckpt-4")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM))  # the handler was put back

    resumed = _model(seed=3)            # different initial weights: all must come from the file
    _fit(resumed, tmp_path / "run")     # step 4 = epoch 1, batch 1: finishes that epoch first
    assert int(resumed.optimizer.iterations.numpy()) == 9
    for a, b in zip(_weights(reference), _weights(resumed)):
        np.testing.assert_array_equal(a, b)


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # (Semi-hard mining quietly drops NaN rows from its triplets; a plain sum does not.)
    model = _model(loss=lambda y, e: tf.reduce_mean(e * e))
    seen = []
    with pytest.raises(NonFiniteLossError, match=r"loss = nan at step 6.*ckpt-4"):
        _fit(model, tmp_path, data=lambda start_step: _stream(start_step, nan_at=5),
             on_end=lambda m: seen.append([v.numpy() for v in m.trainable_weights]))
    backup = str(tmp_path / "backup")
    assert tf.train.latest_checkpoint(backup).endswith("ckpt-4")
    restored = _model(seed=2)
    state = TrainingState(backup, every_n_steps=2, total_steps=9,
                          schedule={"steps_per_epoch": 3, "batch_size": 8})
    assert state.restore(restored) == 4
    for a, b in zip(seen[3], restored.trainable_weights):   # the weights after step 4
        np.testing.assert_array_equal(a, b.numpy())
    assert all(np.isfinite(v.numpy()).all() for v in restored.weights)


def test_a_checkpoint_of_another_schedule_is_refused(tmp_path):
    _fit(_model(), tmp_path)
    with pytest.raises(ValueError, match=r"different schedule.*batch_size: saved 8, now 16"):
        fit_for_steps(_model(), _stream, 7, 3, str(tmp_path), None, what="t", batch_size=16)


def test_two_replica_run_resumes_too(tmp_path, two_replica_strategy):
    with two_replica_strategy.scope():
        model = _model()
    _fit(model, tmp_path, steps=3)
    with two_replica_strategy.scope():
        again = _model(seed=4)
    _fit(again, tmp_path, steps=3)
    for a, b in zip(_weights(model), _weights(again)):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ the real command

_COMMAND = [sys.executable, "-m", "tfembed.cli", "--recipe", "snd_universal_demo",
            "--set", "pipeline=specialists", "--set", "domains=['digits']",
            "--set", "train.steps=24", "--set", "train.steps_per_epoch=12",
            "--set", "train.checkpoint_every=3", "--set", "eval.max_images_per_split=64",
            "--set", "eval.random_init_baseline=False", "--set", "export.enabled=False",
            "--set", "eval.fused=False", *[a for s in SMALL_CNN for a in ("--set", s)]]


def _run(workdir, **kwargs):
    env = dict(os.environ, TF_DETERMINISTIC_OPS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen(_COMMAND + ["--workdir", str(workdir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def _final_state(workdir):
    backup = os.path.join(workdir, "specialists", "digits", "backup")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(backup))
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if k.startswith("model/") or k.startswith("optimizer/") or k.startswith("step")}
    return values


def test_sigkill_mid_epoch_then_rerun_finishes_like_an_uninterrupted_run(tmp_path):
    reference = _run(tmp_path / "reference")
    killed = _run(tmp_path / "killed")
    backup = tmp_path / "killed" / "specialists" / "digits" / "backup"
    deadline = time.time() + 300
    # Kill once a mid-epoch checkpoint (step 6 or 9 of a 12-step epoch) is complete.
    while time.time() < deadline and killed.poll() is None:
        latest = tf.train.latest_checkpoint(str(backup)) if backup.exists() else None
        if latest and int(latest.rsplit("-", 1)[1]) in (6, 9):
            break
        time.sleep(0.2)
    assert killed.poll() is None, killed.stderr.read().decode()[-2000:]
    killed.send_signal(signal.SIGKILL)
    killed.wait(60)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "specialists" / "digits" / "model.keras").exists()
    resumed = _run(tmp_path / "killed")
    for p in (reference, resumed):
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err.decode()[-3000:]
    assert b"resuming from" in err
    a, b = _final_state(tmp_path / "reference"), _final_state(tmp_path / "killed")
    assert int(a["step/.ATTRIBUTES/VARIABLE_VALUE"]) == int(b["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 24
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
