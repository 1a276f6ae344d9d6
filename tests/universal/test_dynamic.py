"""Dynamic domain sampling (UDON): the update rule, the schedule, the scheduled sampler, and a
kill mid-interval that resumes to the same weights and the same schedule."""

import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.universal.test_distiller import SIZE, _dense_embedder, _domains, _teachers
from tfembed.data.pipeline import training_batches
from tfembed.data.samplers import Scheduled, batch_indices
from tfembed.data.transforms import Augment
from tfembed.data.types import ImageSpec
from tfembed.losses import SNDLoss
from tfembed.training.fault_tolerance import TrainingPreempted
from tfembed.training.loop import fit_for_steps
from tfembed.universal import UniversalDistiller
from tfembed.universal.dynamic import DynamicDomainSampling, DynamicStream, shares


def test_shares_split_steps_in_proportion_by_largest_remainders():
    assert shares([1, 1, 1], 10).tolist() == [4, 3, 3]          # ties to the lower domain id
    assert shares([0.7, 0.2, 0.1], 10).tolist() == [7, 2, 1]
    assert shares([2, 1], 1).tolist() == [1, 0]
    counts = shares(np.random.default_rng(0).random(8), 997)
    assert counts.sum() == 997 and (counts >= 0).all()


def test_udon_update_rule_and_unseen_domains_keep_their_weight():
    dyn = DynamicDomainSampling([100, 50, 50], interval=10, seed=0, initial="size")
    np.testing.assert_allclose(dyn.weights_at(0), [0.5, 0.25, 0.25])
    new = dyn.update(10, [2.0, None, 1.0])
    # d0 and d2 ∝ their losses (2/3, 1/3), d1 keeps 0.25, then the three are renormalised.
    np.testing.assert_allclose(new, np.array([2 / 3, 0.25, 1 / 3]) / 1.25)
    np.testing.assert_allclose(dyn.weights_at(15), new)      # in force for steps 10..19
    np.testing.assert_allclose(dyn.weights_at(9), [0.5, 0.25, 0.25])
    balanced = DynamicDomainSampling([100, 50, 50], interval=10)
    np.testing.assert_allclose(balanced.weights_at(0), [1 / 3] * 3)   # UDON's round-robin shares


def test_schedule_has_the_weights_shares_and_is_a_function_of_seed_and_history():
    a = DynamicDomainSampling([10, 10, 10], interval=12, seed=3)
    a.update(12, [1.0, 2.0, 3.0])
    b = DynamicDomainSampling([10, 10, 10], interval=12, seed=3)
    b.update(12, [1.0, 2.0, 3.0])
    assert np.bincount(a.schedule(12), minlength=3).tolist() == [2, 4, 6]
    np.testing.assert_array_equal(a.schedule(12), b.schedule(12))
    assert np.bincount(a.schedule(0), minlength=3).tolist() == [4, 4, 4]
    c = DynamicDomainSampling([10, 10, 10], interval=12, seed=4)
    c.update(12, [1.0, 2.0, 3.0])
    assert not np.array_equal(a.schedule(12), c.schedule(12))    # another seed, another order
    with pytest.raises(ValueError, match="interval boundary"):
        a.schedule(5)


def test_scheduled_batches_follow_the_schedule_with_the_images_ds_would_draw(rng):
    labels = [np.repeat(np.arange(4), 5), np.repeat(np.arange(3), 6)]
    planned = (1, 0, 1, 1)
    got = list(batch_indices(labels, 2, 3, seed=7, start_step=10, schedule=(planned, 10)))
    assert len(got) == 4                                   # the stream ends with the schedule
    assert [int(d[0]) for d, _ in got] == list(planned)
    ds = list(batch_indices(labels, 2, 3, seed=7, start_step=10).take(60))
    for step, (d, idx) in enumerate(got):
        # Same step, same domain: the same rows as a domain-specific stream draws.
        same = [i for j, (dd, i) in enumerate(ds) if j == step and int(dd[0]) == int(d[0])]
        if same:
            np.testing.assert_array_equal(idx, same[0])
    tail = list(batch_indices(labels, 2, 3, seed=7, start_step=12, schedule=(planned, 10)))
    for (d0, i0), (d1, i1) in zip(got[2:], tail):
        np.testing.assert_array_equal(i0, i1)
    with pytest.raises(ValueError, match="outside"):
        batch_indices(labels, 2, 3, schedule=((0, 2), 0))
    with pytest.raises(ValueError, match="start_step"):
        batch_indices(labels, 2, 3, start_step=20, schedule=(planned, 10))


def _distiller(teachers):
    model = UniversalDistiller(teachers, _dense_embedder(seed=2), SNDLoss(sigma=0.5))
    model.compile(keras.optimizers.SGD(0.2))
    model.optimizer.build(model.student.trainable_variables)
    return model


def _run(run_dir, splits, teachers, on_begin=None):
    dyn = DynamicDomainSampling([len(s) for s in splits], interval=3, seed=1,
                                path=os.path.join(run_dir, "sampling.json"))
    stream = DynamicStream(dyn, splits, 2, 4, spec=ImageSpec(SIZE, SIZE),
                           augment=Augment(flip=False), multi_domain=True)
    model = _distiller(teachers)

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if on_begin:
                on_begin(self.model)

    fit_for_steps(model, stream, 9, 3, str(run_dir), Probe(), what="dynamic", batch_size=8,
                  checkpoint_every=2)
    with open(os.path.join(run_dir, "sampling.json")) as f:
        return model, json.load(f)


def test_dynamic_run_updates_from_the_losses_and_resumes_exactly_after_a_kill(rng, tmp_path):
    splits, teachers = _domains(rng), _teachers()
    reference, ref_log = _run(tmp_path / "reference", splits, teachers)
    history = ref_log["history"]
    assert [h["step"] for h in history] == [0, 3, 6, 9]
    for h in history[1:]:
        seen = [(d, v) for d, v in enumerate(h["losses"]) if v is not None]
        total = sum(v for _, v in seen)
        for d, v in seen:   # UDON's rule on the domains of the interval
            assert h["weights"][d] == pytest.approx(
                v / total * (1 - sum(w for e, w in enumerate(h["weights"])
                                     if h["losses"][e] is None)), rel=1e-6)
        assert sum(h["weights"]) == pytest.approx(1.0)

    def terminate_during_step_5(model):   # mid-interval (steps 4..6), after the save at 4
        if int(model.optimizer.iterations.numpy()) == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingPreempted):
        _run(tmp_path / "run", splits, teachers, on_begin=terminate_during_step_5)
    resumed, log = _run(tmp_path / "run", splits, teachers)
    assert log["history"] == history
    for a, b in zip(reference.student.weights, resumed.student.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_dynamic_interval_must_be_the_epoch(rng, tmp_path):
    splits, teachers = _domains(rng), _teachers()
    dyn = DynamicDomainSampling([len(s) for s in splits], interval=4)
    stream = DynamicStream(dyn, splits, 2, 4, spec=ImageSpec(SIZE, SIZE), multi_domain=True)
    with pytest.raises(ValueError, match="must be equal"):
        fit_for_steps(_distiller(teachers), stream, 6, 3, str(tmp_path), None, what="x",
                      batch_size=8)
