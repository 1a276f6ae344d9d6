"""Distiller (papers 001/004): frozen teacher, switchable terms, adapters, semi-supervised rows,
cross-quality views, replicas, serialization."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed.data.transforms import low_resolution
from tfembed.distill import Distiller
from tfembed.losses import (
    LargeMarginSoftmaxHead,
    TripletSemiHardLoss,
    VerificationHead,
    attention_transfer_loss,
    hinton_kd_loss,
    large_margin_softmax_loss,
    relative_teacher_loss,
    triplet_semihard_loss,
    verification_loss,
)
from tfembed.models import build_embedder, feature_model

SIZE = 32
LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def _cnn(width, dim=16, name=None, seed=0):
    keras.utils.set_random_seed(seed)
    return build_embedder("small_cnn", dim, input_shape=(SIZE, SIZE, 3), width=width, name=name)


def _images(rng, n=8):
    return rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _classifier(dim=16, classes=4):
    layer = keras.layers.Dense(classes, name="teacher_logits")
    layer.build((None, dim))
    return layer


def _full(student, teacher, **overrides):
    """A Distiller with every term on; ``overrides`` switch terms off."""
    keras.utils.set_random_seed(7)  # same adapter / head initialisation in every variant
    lsoftmax = LargeMarginSoftmaxHead(4, margin=3, name="lsoftmax")
    kwargs = dict(
        distill_loss="relative_teacher", distill_weight=0.7,
        metric_loss=TripletSemiHardLoss(margin=0.2), metric_weight=1.3,
        # teacher stage3 (4x4, 64 ch) vs student stage2 (8x8, 4 ch): channels and size differ
        hint_layers=[("stage3", "stage2")], hint_weight=0.01,
        attention_layers=[("stage2", "stage3"), ("stage4", "stage4")], attention_weight=2.0,
        heads=[(lsoftmax, 1.0), (VerificationHead(name="verification"), 5.0)],
        teacher_classifier=_classifier(), kd_weight=0.5)
    kwargs.update(overrides)
    if kwargs["heads"] == "lsoftmax only":
        kwargs["heads"] = [(lsoftmax, 1.0)]
    model = Distiller(teacher, student, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def test_teacher_frozen_student_and_adapters_trained(rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    model = _full(student, teacher)
    before_t = [w.numpy().copy() for w in teacher.weights]  # BatchNorm statistics included
    before_s = [w.numpy().copy() for w in student.trainable_weights]
    adapter = model.hint_adapters[0]
    before_a = adapter.kernel.numpy().copy()
    x = _images(rng)
    model.fit(x, LABELS, batch_size=8, epochs=3, verbose=0)
    for a, w in zip(before_t, teacher.weights):
        np.testing.assert_array_equal(a, w.numpy())
    assert sum(not np.allclose(a, w.numpy()) for a, w in zip(before_s, student.trainable_weights)) \
        > len(before_s) // 2
    assert not np.allclose(before_a, adapter.kernel.numpy())
    assert adapter.kernel.shape == (1, 1, 8, 64)  # student stage2 channels → teacher stage3
    np.testing.assert_allclose(model(x), student(x), rtol=1e-6)


TERMS = {"metric_loss": dict(metric_loss=None), "distill_loss": dict(distill_loss=None),
         "hint_loss": dict(hint_weight=0.0), "attention_loss": dict(attention_layers=()),
         "kd_loss": dict(kd_weight=0.0), "verification": dict(heads="lsoftmax only")}
WEIGHTS = {"metric_loss": 1.3, "distill_loss": 0.7, "hint_loss": 0.01, "attention_loss": 2.0,
           "kd_loss": 0.5, "lsoftmax": 1.0, "verification": 5.0}


def _logs(model, x, y=LABELS):
    return {k: float(v) for k, v in model.test_on_batch(x, y, return_dict=True).items()}


@pytest.mark.parametrize("term", sorted(TERMS))
def test_each_term_switches_off(rng, term):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    x = _images(rng)
    full = _logs(_full(student, teacher), x)
    assert set(full) == {"loss", *WEIGHTS}
    assert full["loss"] == pytest.approx(sum(WEIGHTS[k] * full[k] for k in WEIGHTS), rel=1e-5)
    off = _logs(_full(student, teacher, **TERMS[term]), x)
    assert term not in off
    for key, value in off.items():
        if key != "loss":
            assert value == pytest.approx(full[key], rel=1e-5, abs=1e-7), key
    expected = sum(WEIGHTS[k] * full[k] for k in WEIGHTS if k != term)
    assert off["loss"] == pytest.approx(expected, rel=1e-5)


def test_terms_match_their_loss_functions(rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    model = _full(student, teacher)
    x = _images(rng)
    logs = _logs(model, x)
    t_maps = feature_model(teacher, ["stage2", "stage4"])(x, training=False)
    s_maps = feature_model(student, ["stage3", "stage4"])(x, training=False)
    t, s = t_maps[-1], s_maps[-1]
    assert logs["distill_loss"] == pytest.approx(float(relative_teacher_loss(t, s)), rel=1e-5)
    assert logs["metric_loss"] == pytest.approx(
        float(triplet_semihard_loss(LABELS, s, margin=0.2)), rel=1e-5)
    # student stage3 is 4x4, teacher stage2 8x8: the student's map is resized to 8x8
    at = (attention_transfer_loss(t_maps[0], s_maps[0], resize=True)
          + attention_transfer_loss(t_maps[1], s_maps[1]))
    assert logs["attention_loss"] == pytest.approx(float(at), rel=1e-5)
    # L-Softmax and KD's student logits on the pre-normalisation FC output (004 §4), the
    # verification head on the L2-normalised embedding.
    head = [h for h in model.heads if h.name == "lsoftmax"][0]
    fc = feature_model(student, ["embedding_dense"])(x, training=False)[0]
    assert logs["lsoftmax"] == pytest.approx(
        float(large_margin_softmax_loss(LABELS, fc, head.kernel, margin=3)), rel=1e-5)
    verification = [h for h in model.heads if h.name == "verification"][0]
    assert logs["verification"] == pytest.approx(
        float(verification_loss(LABELS, s, verification.kernel, verification.bias)), rel=1e-5)
    kd = hinton_kd_loss(model.teacher_classifier(t), head.logits(fc), temperature=4.0)
    assert logs["kd_loss"] == pytest.approx(float(kd), rel=1e-4)


def test_unlabelled_rows_get_no_metric_loss(rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    model = Distiller(teacher, student, "relative_teacher", metric_loss="triplet_semihard",
                      heads=[(LargeMarginSoftmaxHead(4, name="lsoftmax"), 1.0)])
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x = _images(rng)
    unlabelled = np.full(8, -1)
    logs = _logs(model, x, unlabelled)
    assert logs["metric_loss"] == 0.0 and logs["lsoftmax"] == 0.0
    assert logs["loss"] == pytest.approx(logs["distill_loss"], rel=1e-6)
    # The step on an all-unlabelled batch is the step of the teacher term alone.
    kd_only = Distiller(teacher, student, "relative_teacher")
    with tf.GradientTape(persistent=True) as tape:
        _, fc, s = model.student_outputs(x, training=True)
        full = model.weighted_total(model.compute_terms({}, teacher(x), {}, s,
                                                        tf.constant(unlabelled), fc))
        alone = kd_only.weighted_total(kd_only.compute_terms({}, teacher(x), {}, s, None))
    for a, b in zip(tape.gradient(full, student.trainable_weights),
                    tape.gradient(alone, student.trainable_weights)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    # Mixed batch: the metric loss sees exactly the labelled rows.
    mixed = np.array([0, 0, 1, 1, -1, -1, -1, -1])
    logs = _logs(model, x, mixed)
    s = student(x)
    assert logs["metric_loss"] == pytest.approx(
        float(triplet_semihard_loss(mixed[:4], s[:4], margin=1.0)), rel=1e-5)
    model.fit(x, unlabelled, batch_size=8, epochs=1, verbose=0)  # trains without labels


def test_cross_quality_feeds_teacher_and_student_different_inputs(rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    model = Distiller(teacher, student, "relative_teacher")
    model.compile(optimizer="adam")
    clean = _images(rng)
    degraded = low_resolution(clean, 8).numpy()
    assert not np.allclose(clean, degraded)
    inputs = {"images": clean, "student_images": degraded}
    _, t = model.teacher_targets(inputs)
    np.testing.assert_allclose(t, teacher(clean), rtol=1e-5)
    assert not np.allclose(t, teacher(degraded), atol=1e-4)
    np.testing.assert_allclose(model(inputs), student(degraded), rtol=1e-5)
    logs = _logs(model, inputs)
    expected = relative_teacher_loss(teacher(clean), student(degraded))
    assert logs["distill_loss"] == pytest.approx(float(expected), rel=1e-5)
    wrong = relative_teacher_loss(teacher(clean), student(clean))
    assert logs["distill_loss"] != pytest.approx(float(wrong), rel=1e-3)


def test_student_alone_never_runs_the_teacher(rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    model = Distiller(teacher, student, None, metric_loss="triplet_semihard")
    assert not model._needs_teacher and model.teacher_targets(_images(rng)) == ({}, None)
    model.compile(optimizer="adam")
    logs = model.fit(_images(rng), LABELS, batch_size=8, verbose=0).history
    assert set(logs) == {"loss", "metric_loss"}


def test_configuration_errors(rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, dim=8, name="student", seed=1)
    with pytest.raises(ValueError, match="16-d.*8-d"):
        Distiller(teacher, student, "absolute_teacher")
    with pytest.raises(ValueError, match="no loss term"):
        Distiller(teacher, student, None)
    with pytest.raises(ValueError, match="teacher_classifier"):
        Distiller(teacher, student, "relative_teacher", kd_weight=1.0)
    with pytest.raises(ValueError, match="logits"):
        Distiller(teacher, student, "relative_teacher", kd_weight=1.0,
                  teacher_classifier=_classifier())
    with pytest.raises(ValueError, match="pairs"):
        Distiller(teacher, student, "relative_teacher", hint_layers=["stage2"], hint_weight=1.0)
    with pytest.raises(ValueError, match="No layer 'nope'"):
        Distiller(teacher, student, "relative_teacher", attention_layers=[("nope", "stage2")],
                  attention_weight=1.0)


def _dense(seed, dim=8):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x))


def test_config_round_trip(tmp_path, rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    model = _full(student, path)
    config = model.get_config()
    assert config["teacher"] == path
    clone = Distiller.from_config(config)
    assert clone.hint_layers == [("stage3", "stage2")] and clone.kd_weight == 0.5
    assert [h.name for h in clone.heads] == ["lsoftmax", "verification"]
    clone.compile(optimizer="adam")
    assert set(_logs(clone, _images(rng))) == set(_logs(model, _images(rng)))


# ------------------------------------------------------------------- 004: heads on the FC output


class _Recording(LargeMarginSoftmaxHead):
    """An L-Softmax head that keeps the inputs it was called with (eager runs only)."""

    seen = None

    def call(self, embeddings, labels):
        type(self).seen.append(np.array(embeddings))
        return super().call(embeddings, labels)


class _RecordingVerification(VerificationHead):
    seen = None

    def call(self, embeddings, labels):
        type(self).seen.append(np.array(embeddings))
        return super().call(embeddings, labels)


def test_lsoftmax_head_sees_the_unnormalised_fc_output(rng):
    """004 §4: L-Softmax "directly connected to the fully connected layer", every other loss on
    the L2-normalised embedding."""
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    _Recording.seen, _RecordingVerification.seen = [], []
    model = Distiller(teacher, student, None, metric_loss="triplet_semihard",
                      heads=[(_Recording(4, margin=3, name="lsoftmax"), 1.0),
                             (_RecordingVerification(mode="contrastive", name="verification"),
                              5.0)])
    assert model.heads[0].features == "fc" and model.heads[1].features == "embedding"
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    x = _images(rng)
    fc = feature_model(student, ["embedding_dense"])(x, training=False)[0].numpy()
    model.test_on_batch(x, LABELS)
    seen = _Recording.seen[-1]
    norms = np.linalg.norm(seen, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)
    np.testing.assert_allclose(seen, fc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(_RecordingVerification.seen[-1], axis=1), 1.0,
                               rtol=1e-5)
    np.testing.assert_allclose(_RecordingVerification.seen[-1], student(x), rtol=1e-5,
                               atol=1e-6)
    model.fit(x, LABELS, batch_size=8, verbose=0)   # and in a training step
    assert not np.allclose(np.linalg.norm(_Recording.seen[-1], axis=1), 1.0, atol=1e-3)


def test_head_features_option_and_missing_fc_layer(rng):
    teacher = _cnn(0.5, name="teacher")
    # A head may ask for the normalised embedding instead.
    model = Distiller(teacher, _cnn(0.125, name="student", seed=1), None,
                      heads=[(LargeMarginSoftmaxHead(4, features="embedding", name="ls"), 1.0)])
    assert not model._uses_fc and not model.terms[0].uses_fc
    # A student without the FC layer cannot feed an "fc" head.
    with pytest.raises(ValueError, match="embedding_dense"):
        Distiller(teacher, _dense(1), None, heads=[(LargeMarginSoftmaxHead(4), 1.0)])
    with pytest.raises(ValueError, match="features"):
        LargeMarginSoftmaxHead(4, features="pooled")


def test_teacher_none_trains_with_its_own_losses(rng, tmp_path):
    student = _cnn(0.125, name="teacher_model", seed=1)
    heads = [(LargeMarginSoftmaxHead(4, margin=3, name="lsoftmax"), 1.0),
             (VerificationHead(mode="contrastive", margin=0.9, name="verification"), 5.0)]
    model = Distiller(None, student, None, metric_loss=TripletSemiHardLoss(0.9),
                      metric_weight=0.1, heads=heads)
    assert model.teacher is None and not model._needs_teacher
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    before = [w.numpy().copy() for w in student.trainable_weights]
    logs = model.fit(_images(rng), LABELS, batch_size=8, verbose=0).history
    assert set(logs) == {"loss", "metric_loss", "lsoftmax", "verification"}
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, student.trainable_weights))
    clone = Distiller.from_config(model.get_config())
    assert clone.teacher is None and [h.name for h in clone.heads] == ["lsoftmax", "verification"]
    assert clone.heads[1].mode == "contrastive" and clone.heads[1].margin == 0.9
    for kwargs in (dict(distill_loss="relative_teacher"),
                   dict(distill_loss=None, attention_layers=[("stage2", "stage2")],
                        attention_weight=1.0)):
        with pytest.raises(ValueError, match="teacher=None"):
            Distiller(None, student, **kwargs)


def _fc_student(seed, dim=6):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(dim, name="embedding_dense",
                           kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x))


def _heads_distiller(local):
    heads = [(LargeMarginSoftmaxHead(4, margin=3, name="lsoftmax",
                                     initializer=keras.initializers.GlorotUniform(5)), 1.0),
             (VerificationHead(mode="contrastive", margin=0.9, name="verification"), 5.0)]
    model = Distiller(_dense(3, dim=6), _fc_student(2), "direct_match",
                      metric_loss="triplet_semihard", metric_weight=0.1, heads=heads,
                      teacher_classifier=_classifier(dim=6), kd_weight=0.5,
                      global_batch=not local)
    model.compile(keras.optimizers.SGD(0.05))
    return model


def _one_step(strategy, local=False):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = _heads_distiller(local)
    x = np.random.default_rng(5).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    logs = model.fit(tf.data.Dataset.from_tensors((x, LABELS)), epochs=1, verbose=0).history
    return {k: v[0] for k, v in logs.items()}, [w.numpy() for w in model.trainable_weights]


def test_fc_heads_on_two_replicas_equal_one_device(two_replica_strategy):
    logs1, w1 = _one_step(tf.distribute.get_strategy())
    logs2, w2 = _one_step(two_replica_strategy)
    assert set(logs1) == {"loss", "metric_loss", "distill_loss", "kd_loss", "lsoftmax",
                          "verification"}
    for key in logs1:
        np.testing.assert_allclose(logs2[key], logs1[key], rtol=1e-5, atol=1e-7, err_msg=key)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    _, local = _one_step(two_replica_strategy, local=True)
    assert any(not np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(local, w1))


def test_trainer_compiled_with_a_coupled_optimizer_reloads_compiled(tmp_path, rng):
    # The paper recipes compile trainers with tfembed>CoupledAdam; a fresh process that only
    # imports tfembed.models must still load the saved trainer (Keras imports no package of ours
    # while deserialising the compile config).
    from tfembed.optimizers import CoupledAdam

    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    teacher_path = str(tmp_path / "teacher.keras")
    teacher.save(teacher_path)
    model = Distiller(teacher_path, student, "relative_teacher")
    model.compile(optimizer=CoupledAdam(1e-3, l2_weight_decay=2e-4))
    model.train_on_batch(_images(rng), LABELS)
    path = str(tmp_path / "distiller.keras")
    model.save(path)
    script = ("import sys, keras, tfembed.distill; m = keras.models.load_model(sys.argv[1]); "
              "print(type(m.optimizer).__name__, m.optimizer.l2_weight_decay)")
    done = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["CoupledAdam", "0.0002"]


def test_lsoftmax_head_saved_before_the_features_option_reloads_on_the_embedding():
    head = LargeMarginSoftmaxHead(4, margin=3)
    assert head.features == "fc"   # new heads: 004's FC output
    config = head.get_config()
    assert LargeMarginSoftmaxHead.from_config(config).features == "fc"
    del config["features"]         # a head saved before the option existed
    assert LargeMarginSoftmaxHead.from_config(config).features == "embedding"


def test_feature_maps_come_from_the_one_loaded_teacher(tmp_path):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    model = Distiller(path, student, "relative_teacher", attention_layers=[("stage3", "stage3")],
                      attention_weight=1.0)
    # The feature model is built on the tracked teacher (saved and checkpointed with the
    # distiller), not on a second copy of the file's weights.
    forward = model._teacher._forward
    assert model._teacher.model is model.teacher
    assert {id(w) for w in forward.weights} <= {id(w) for w in model.teacher.weights}
    assert model.get_config()["teacher"] == path


def test_student_first_calls_of_the_old_order_fail_clearly(rng):
    teacher, student = _cnn(0.5, name="teacher"), _cnn(0.125, name="student", seed=1)
    with pytest.raises(TypeError, match="teacher first"):
        Distiller(student, [teacher], "relative_teacher")
    with pytest.raises(TypeError, match="one teacher"):
        Distiller([teacher], student, "relative_teacher")
    from tfembed.universal import UniversalDistiller

    with pytest.raises(TypeError, match="teacher first"):
        UniversalDistiller(student, [teacher, teacher], "snd")

