"""MutualLearningCohort (DM², paper 003): losses, peers as targets, temporal diversity (update
frequencies, skipped members untouched, no retracing), view diversity, placement, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed import export as export_lib
from tfembed.losses import ProxyNCAHead, relation_loss, triplet_semihard_loss
from tfembed.models import build_embedder
from tfembed.cohort.mutual_learning import MutualLearningCohort, temporal_probabilities

LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def _dense(seed, dim=5, name=None):
    """A BatchNorm-free embedder: fast, and its forward pass changes no state."""
    inputs = keras.Input((6, 6, 3), name="images")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x), name=name)


def _images(rng, n=8):
    return rng.uniform(0, 255, (n, 6, 6, 3)).astype("float32")


def _cohort(n=3, **kwargs):
    kwargs.setdefault("metric_loss", "triplet_semihard")
    cohort = MutualLearningCohort([_dense(s) for s in range(n)], **kwargs)
    cohort.compile(optimizer=keras.optimizers.Adam(0.05))
    return cohort


def _values(variables):
    return [v.numpy().copy() for v in variables]


def test_member_loss_is_metric_plus_weighted_relation_to_the_peers(rng):
    cohort = _cohort(3, relation_weight=2.0)
    x = _images(rng)
    embeddings = cohort.member_embeddings(x, training=True)
    total, metric, relation = cohort.member_loss(1, embeddings, LABELS, 2.0)
    assert float(metric) == pytest.approx(float(triplet_semihard_loss(LABELS, embeddings[1])))
    want = float(relation_loss(embeddings[1], [embeddings[0], embeddings[2]]))
    assert float(relation) == pytest.approx(want, rel=1e-6)
    assert float(total) == pytest.approx(float(metric) + 2.0 * want, rel=1e-6)
    logs = cohort.train_on_batch(x, LABELS, return_dict=True)
    assert logs["relation_loss_1"] == pytest.approx(want, rel=1e-5)
    assert logs["loss"] == pytest.approx(sum(logs[f"loss_{l}"] for l in range(3)), rel=1e-5)


def test_peers_get_no_gradient_from_another_members_loss(rng):
    cohort = _cohort(2, relation_weight=5.0)
    x = _images(rng)
    with tf.GradientTape() as tape:
        embeddings = cohort.member_embeddings(x, training=True)
        total, _, _ = cohort.member_loss(0, embeddings, LABELS, 5.0)
    grads = tape.gradient(total, cohort.members[1].trainable_variables)
    assert all(g is None for g in grads)
    # In a step where only member 0 updates, member 1 (whose distances member 0 matched) is
    # untouched although member 0's loss depends on its outputs.
    solo = _cohort(2, relation_weight=5.0, update_probabilities=[1.0, 1e-9])
    before = _values(solo.members[1].weights)
    solo.train_on_batch(x, LABELS)
    for a, b in zip(before, solo.members[1].weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_skipped_steps_leave_weights_and_optimizer_state_untouched(rng):
    cohort = _cohort(2, relation_weight=1.0, update_probabilities=[1.0, 1e-9])
    x = _images(rng)
    w0, w1 = _values(cohort.members[0].weights), _values(cohort.members[1].weights)
    s1 = _values(cohort.member_optimizers[1].variables)
    for _ in range(3):
        cohort.train_on_batch(x, LABELS)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(w0, cohort.members[0].weights))
    for a, b in zip(w1, cohort.members[1].weights):
        np.testing.assert_array_equal(a, b.numpy())
    for a, b in zip(s1, cohort.member_optimizers[1].variables):
        np.testing.assert_array_equal(a, b.numpy())
    assert int(cohort.member_optimizers[0].iterations) == 3
    assert int(cohort.member_optimizers[1].iterations) == 0
    assert cohort.update_counts.numpy().tolist() == [3, 0]


def test_update_frequencies_follow_the_probabilities_without_retracing(rng):
    probs = temporal_probabilities(4)
    assert probs == [1.0, 0.5, 0.25, 0.125]
    cohort = _cohort(4, relation_weight=1.0, update_probabilities=probs, seed=7)
    traces = []
    original = cohort.train_step

    def counted(data):
        traces.append(1)  # runs only while tf.function traces the step
        return original(data)

    cohort.train_step = counted
    steps = 400
    ds = tf.data.Dataset.from_tensors((_images(rng), LABELS)).repeat()
    history = cohort.fit(ds, steps_per_epoch=50, epochs=steps // 50, verbose=0).history
    assert len(traces) == 1   # 400 steps, 8 epochs, one trace
    counts = cohort.update_counts.numpy()
    # The draws are a pure function of (seed, step): the counts are exactly the replayed draws,
    expected = np.sum([cohort.update_gates(s).numpy() for s in range(steps)], axis=0)
    np.testing.assert_array_equal(counts, expected)
    # and within a binomial tolerance (4 sigma) of n·p.
    for c, p in zip(counts, probs):
        assert abs(c - steps * p) <= 4 * np.sqrt(steps * p * (1 - p)) + 1e-9, (c, p)
    assert [int(o.iterations) for o in cohort.member_optimizers] == counts.tolist()
    assert history["update_rate_2"][-1] == pytest.approx(counts[2] / steps)


def test_relation_weight_warms_up_linearly_and_is_logged(rng):
    cohort = _cohort(2, relation_weight=20.0, warmup_steps=10)
    assert [float(cohort.relation_weight_at(s)) for s in (0, 5, 10, 30)] == [0.0, 10.0, 20.0,
                                                                             20.0]
    logs = cohort.train_on_batch(_images(rng), LABELS, return_dict=True)
    assert logs["relation_weight"] == 0.0
    logs = cohort.train_on_batch(_images(rng), LABELS, return_dict=True)
    assert logs["relation_weight"] == pytest.approx(2.0)


def test_view_diversity_feeds_each_member_its_own_view(rng):
    cohort = _cohort(3, relation_weight=1.0)
    views = rng.uniform(0, 255, (8, 3, 6, 6, 3)).astype("float32")
    inputs = {"images": views[:, 0], "views": views}
    fed = cohort.member_inputs(inputs)
    for l in range(3):
        np.testing.assert_array_equal(np.asarray(fed[l]), views[:, l])
    assert np.abs(np.asarray(fed[0]) - np.asarray(fed[1])).mean() > 1.0
    # The step uses them: member l's embedding is of view l.
    got = cohort.member_embeddings(inputs)
    np.testing.assert_allclose(got[2].numpy(), cohort.members[2](views[:, 2]).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="2 views for 3 members"):
        cohort.member_inputs({"images": views[:, 0], "views": views[:, :2]})
    # Without views every member sees the same pixels.
    same = cohort.member_inputs(views[:, 0])
    assert all(s is same[0] for s in same)


def test_members_on_two_devices_train_as_on_one(rng):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    x = _images(rng)
    runs = []
    for placed in (None, devices):
        members = []
        for l in range(2):
            with tf.device(placed[l] if placed else None):   # variables live on the device
                members.append(_dense(l))
        cohort = MutualLearningCohort(members, relation_weight=3.0, devices=placed)
        cohort.compile(optimizer=keras.optimizers.Adam(0.05))
        cohort.train_on_batch(x, LABELS)
        runs.append(cohort)
    placed = runs[1]
    for l, member in enumerate(placed.members):
        assert member.trainable_variables[0].value.device.endswith(f"CPU:{l}")
        slot = placed.member_optimizers[l].variables[-1]
        assert slot.value.device.endswith(f"CPU:{l}")
    for a, b in zip(runs[0].members, placed.members):
        for va, vb in zip(a.weights, b.weights):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)


def test_heads_own_weights_and_train_with_their_member(rng):
    heads = [ProxyNCAHead(4, name=f"proxies_{l}") for l in range(2)]
    cohort = MutualLearningCohort([_dense(0), _dense(1)], heads=heads, relation_weight=1.0)
    cohort.compile(optimizer=keras.optimizers.Adam(0.05))
    before = heads[1].proxies.numpy().copy()
    assert any(v is heads[1].proxies for v in cohort.member_variables(1))
    logs = cohort.train_on_batch(_images(rng), LABELS, return_dict=True)
    assert not np.allclose(before, heads[1].proxies.numpy())
    assert np.isfinite(logs["metric_loss_1"]) and logs["metric_loss_1"] > 0


def test_ensemble_is_the_concatenation_and_round_trips(tmp_path, rng):
    cohort = _cohort(3, relation_weight=1.0, update_probabilities=[1, 0.5, 0.25])
    x = _images(rng)
    cohort.train_on_batch(x, LABELS)
    want = np.concatenate([m(x).numpy() for m in cohort.members], axis=1)
    np.testing.assert_allclose(cohort.predict(x, verbose=0), want, atol=1e-6)
    ensemble = cohort.ensemble_model()
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), want, atol=1e-6)
    path = str(tmp_path / "cohort.keras")
    cohort.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.update_probabilities == [1.0, 0.5, 0.25]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, atol=1e-6)
    exported = export_lib.export_model(ensemble, str(tmp_path), "ensemble", image_size=(6, 6),
                                       resize_size=(6, 6))
    served = tf.saved_model.load(exported).signatures["serving_pixels"](pixels=tf.constant(x))
    np.testing.assert_allclose(served["embeddings"].numpy(), want, atol=1e-5)


def test_members_with_one_name_are_renamed_and_bad_arguments_fail():
    same = [build_embedder("small_cnn", 8, (28, 28, 3), width=0.125) for _ in range(2)]
    cohort = MutualLearningCohort(same)
    assert len({m.name for m in cohort.members}) == 2
    with pytest.raises(ValueError, match="update_probabilities"):
        MutualLearningCohort([_dense(0), _dense(1)], update_probabilities=[1.0, 0.0])
    with pytest.raises(ValueError, match="devices"):
        MutualLearningCohort([_dense(0), _dense(1)], devices=["/CPU:0"])
    with pytest.raises(ValueError, match="no loss term"):
        MutualLearningCohort([_dense(0)], metric_loss=None)
