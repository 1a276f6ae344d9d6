"""UniversalDistiller: frozen teachers, one teacher per step, losses, replicas, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed.data.pipeline import training_batches
from tfembed.data.transforms import Augment
from tfembed.data.types import ImageSpec, Split
from tfembed.losses import SNDLoss, TripletSemiHardLoss, snd_loss, triplet_semihard_loss
from tfembed.models import build_embedder
from tfembed.universal import UniversalDistiller

SIZE = 16


def _split(rng, classes, per_class, shift):
    labels = np.repeat(np.arange(classes), per_class)
    # Class-dependent mean so embeddings have structure; ``shift`` separates domains.
    images = rng.integers(0, 60, (len(labels), SIZE, SIZE, 3)) + 10 * labels[:, None, None, None]
    return Split(labels=labels.astype(np.int64),
                 images=np.clip(images + shift, 0, 255).astype(np.uint8))


def _domains(rng, m=3):
    return [_split(rng, 4, 4, 40 * d) for d in range(m)]


def _batches(splits, policy="domain_specific", seed=0):
    return training_batches(splits, 2, 4, policy=policy, spec=ImageSpec(SIZE, SIZE),
                            augment=Augment(flip=False), seed=seed, multi_domain=True)


def _dense_embedder(dim=8, name=None, seed=0):
    # No BatchNorm: replica-count comparisons need a student whose forward pass does not depend
    # on how the batch is split.
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = keras.layers.UnitNormalization()(x)
    return keras.Model(inputs, x, name=name)


class CountingTeacher(keras.Model):
    """A teacher that counts how often its forward pass actually executes (in-graph)."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.calls = tf.Variable(0, trainable=False, dtype=tf.int64)

    def call(self, x, training=False):
        self.calls.assign_add(1)
        return self.inner(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)

    @property
    def output_shape(self):
        return self.inner.output_shape


def _teachers(m=3, dim=8):
    return [build_embedder("small_cnn", dim, (SIZE, SIZE, 3), name=f"teacher{d}", width=0.25)
            for d in range(m)]


def test_teachers_frozen_student_trained(rng):
    splits = _domains(rng)
    teachers = _teachers()
    before = [[w.numpy().copy() for w in t.weights] for t in teachers]
    student = build_embedder("small_cnn", 8, (SIZE, SIZE, 3), name="student", width=0.25)
    student_before = [w.numpy().copy() for w in student.trainable_weights]
    model = UniversalDistiller(teachers, student, SNDLoss(sigma=0.5),
                               domain_names=["a", "b", "c"])
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(_batches(splits), steps_per_epoch=6, epochs=1, verbose=0)
    # Teacher BatchNorm statistics too: training=False means moving averages never update.
    for t, b in zip(teachers, before):
        for w, v in zip(t.weights, b):
            np.testing.assert_array_equal(w.numpy(), v)
    assert any(not np.array_equal(w.numpy(), v)
               for w, v in zip(student.trainable_weights, student_before))
    assert {"loss", "loss_a", "loss_b", "loss_c"} <= set(history.history)
    assert np.isfinite(history.history["loss"][0])
    assert not model.trainable_weights == [] and all(
        any(w is s for s in student.trainable_weights) for w in model.trainable_weights)


def test_only_the_batch_domain_teacher_runs(rng):
    splits = _domains(rng)
    teachers = [CountingTeacher(t) for t in _teachers()]
    model = UniversalDistiller(teachers, _dense_embedder(), "snd")
    model.compile(optimizer="adam")
    steps = 12
    model.fit(_batches(splits), steps_per_epoch=steps, epochs=1, verbose=0)
    expected = np.zeros(3, np.int64)
    for x, _ in _batches(splits).take(steps):
        expected[int(x["domain"][0])] += 1
    assert len(set(expected.tolist()) - {0}) >= 1 and (expected > 0).sum() >= 2
    np.testing.assert_array_equal([int(t.calls.numpy()) for t in teachers], expected)


def test_loss_is_the_batch_teachers_snd(rng):
    splits = _domains(rng)
    teachers = [_dense_embedder(name=f"t{d}", seed=10 + d) for d in range(3)]
    student = _dense_embedder()
    model = UniversalDistiller(teachers, student, SNDLoss(sigma=0.1))
    model.compile(optimizer="adam")
    x, y = next(iter(_batches(splits)))
    d = int(x["domain"][0])
    expected = float(snd_loss(teachers[d](x["images"], training=False), student(x["images"]),
                              sigma=0.1))
    assert expected > 1e-2
    logs = model.test_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(logs[f"loss_domain{d}"], expected, rtol=1e-4)
    for other in set(range(3)) - {d}:
        assert logs[f"loss_domain{other}"] == 0.0


def test_domain_loss_replaces_distillation(rng):
    splits = _domains(rng, 2)
    student = _dense_embedder()
    # Domain "coarse" has no teacher at all: the label loss replaces distillation (000 §5.3).
    model = UniversalDistiller([None, _teachers(1)[0]], student, "snd",
                               domain_losses={"coarse": TripletSemiHardLoss(margin=0.2)},
                               domain_names=["coarse", "fine"])
    model.compile(optimizer="adam")
    for x, y in _batches(splits).take(8):
        if int(x["domain"][0]) == 0:
            break
    else:
        pytest.fail("no coarse batch drawn")
    logs = model.test_on_batch(x, y, return_dict=True)
    expected = triplet_semihard_loss(y, student(x["images"]), margin=0.2)
    np.testing.assert_allclose(logs["loss_coarse"], float(expected), rtol=1e-5)


def test_domain_without_teacher_or_loss_is_an_error():
    with pytest.raises(ValueError, match="neither a teacher nor a domain_losses"):
        UniversalDistiller([None, _teachers(1)[0]], _dense_embedder(), "snd")
    with pytest.raises(ValueError, match="names domain 'nope'"):
        UniversalDistiller(_teachers(2), _dense_embedder(), "snd", domain_losses={"nope": "rkd"},
                           domain_names=["a", "b"])


def _hetero_teachers():
    # Specialists "from three teams": 4/8/16-d at 12/16/20 px (DESIGN §7).
    return [build_embedder("small_cnn", dim, (size, size, 3), resize_size=size + 4,
                           name=f"team{d}", width=0.25)
            for d, (dim, size) in enumerate([(4, 12), (8, 16), (16, 20)])]


def _hetero_batches(splits, teachers, seed=0):
    from tfembed.data.views import TeacherSpecViews

    return training_batches(splits, 2, 4, spec=ImageSpec(SIZE, SIZE), augment=Augment(flip=False),
                            seed=seed, multi_domain=True,
                            view=TeacherSpecViews([ImageSpec.of(t) for t in teachers]))


def test_teachers_of_other_dimensions_and_sizes_are_padded_and_fed_their_own_images(rng):
    splits, teachers = _domains(rng), _hetero_teachers()
    model = UniversalDistiller(teachers, _dense_embedder(), SNDLoss(sigma=0.5))
    assert model.teacher_dim == 16
    seen = set()
    for x, _ in _hetero_batches(splits, teachers).take(12):
        d = int(x["domain"][0])
        seen.add(d)
        size = teachers[d].input_shape[1]
        assert x["images"].shape[1:3] == (size, size)           # the teacher's own size
        assert x["student_images"].shape[1:3] == (SIZE, SIZE)   # the student's
        emb = model.teacher_embeddings(x, tf.constant(d)).numpy()
        own = teachers[d](x["images"], training=False).numpy()
        dim = own.shape[1]
        np.testing.assert_allclose(emb[:, :dim], own, rtol=1e-5, atol=1e-6)
        assert (emb[:, dim:] == 0).all() and emb.shape[1] == 16
        # Zero padding keeps every distance, so SND sees the specialist's own geometry.
        student = model.student(x["student_images"]).numpy()
        np.testing.assert_allclose(float(snd_loss(emb, student, sigma=0.5)),
                                   float(snd_loss(own, student, sigma=0.5)), rtol=1e-5)
    assert seen == {0, 1, 2}


def test_heterogeneous_teachers_fit_on_one_and_two_replicas_alike(rng, two_replica_strategy):
    splits, teachers = _domains(rng), _hetero_teachers()
    stream = _hetero_batches(splits, teachers)
    batches = list(stream.take(4))
    assert len({int(x["domain"][0]) for x, _ in batches}) >= 2   # teachers of several sizes
    before = [[w.numpy() for w in t.weights] for t in teachers]

    def run(strategy):
        with strategy.scope():
            model = UniversalDistiller(teachers, _dense_embedder(seed=3), SNDLoss(sigma=0.5))
            model.compile(keras.optimizers.SGD(0.5))
        # The batches' images change size with their domain: a generator keeps them as drawn.
        ds = tf.data.Dataset.from_generator(lambda: iter(batches),
                                            output_signature=stream.element_spec)
        logs = model.fit(ds, epochs=1, verbose=0).history
        logs = {k: v[0] for k, v in logs.items()}
        logs["batch_loss"] = float(model.batch_loss.result())   # a mean over the replicas
        return logs, [w.numpy() for w in model.student.weights]

    one, two = run(tf.distribute.get_strategy()), run(two_replica_strategy)
    for key in one[0]:
        np.testing.assert_allclose(two[0][key], one[0][key], rtol=1e-4, atol=1e-6, err_msg=key)
    for a, b in zip(one[1], two[1]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    start = _dense_embedder(seed=3).get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(one[1], start))   # the student learned
    for t, w in zip(teachers, before):                                  # the teachers did not
        for a, b in zip(t.weights, w):
            np.testing.assert_array_equal(a.numpy(), b)


def test_batch_loss_is_the_last_steps_loss(rng):
    # Dynamic domain sampling reads it; a running Mean's float32 total would round it.
    splits = _domains(rng)
    model = UniversalDistiller(_teachers(), _dense_embedder(seed=4), SNDLoss(sigma=0.5))
    model.compile(keras.optimizers.SGD(0.5))
    batches = list(_batches(splits).take(3))
    for x, y in batches[:-1]:
        model.train_on_batch(x, y)
    expected = model.test_on_batch(*batches[-1], return_dict=True)["loss"]   # no dropout/BN
    model.reset_metrics()
    model.train_on_batch(*batches[-1])
    assert float(model.batch_loss.result()) == pytest.approx(expected, rel=1e-6)
    assert model.batch_loss not in model.metrics   # not in the progress bar


def test_mixed_domain_batch_is_rejected(rng):
    splits = _domains(rng, 2)
    model = UniversalDistiller(_teachers(2), _dense_embedder(), "snd")
    model.compile(optimizer="adam")
    x, y = next(iter(_batches(splits)))
    x = {"images": x["images"], "domain": tf.constant([0, 1] * 4, tf.int32)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="one domain"):
        model.train_on_batch(x, y)


def test_call_returns_student_and_config_round_trip(tmp_path, rng):
    teachers = _teachers(2)
    paths = []
    for i, t in enumerate(teachers):
        paths.append(str(tmp_path / f"t{i}.keras"))
        t.save(paths[-1])
    student = _dense_embedder()
    model = UniversalDistiller(paths, student, SNDLoss(sigma=0.3), domain_names=["a", "b"],
                               domain_losses={"a": "triplet_semihard"})
    x = rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(model({"images": x, "domain": np.zeros(4, np.int32)}),
                               student(x), rtol=1e-6)
    config = model.get_config()
    assert config["teachers"] == paths and config["domain_names"] == ["a", "b"]
    clone = UniversalDistiller.from_config(config)
    assert clone.domain_names == ["a", "b"] and clone.teacher_dim == 8
    assert clone._distill_loss_arg.get_config()["sigma"] == pytest.approx(0.3)
    assert 0 in clone.terms[0].label_fns and 1 not in clone.terms[0].label_fns


def test_teacher_from_savedmodel_directory(tmp_path, rng):
    """A teacher may be an exported SavedModel (what TF Serving serves), not only a .keras file."""
    from tfembed.export import export_model

    splits = _domains(rng, 2)
    teacher = _dense_embedder(name="exported", seed=5)
    path = export_model(teacher, str(tmp_path), "teacher", image_size=(SIZE, SIZE),
                        resize_size=(SIZE, SIZE))
    student = _dense_embedder()
    model = UniversalDistiller([path, _teachers(1)[0]], student, SNDLoss(sigma=0.1))
    assert model.teacher_dim == 8
    model.compile(optimizer="adam")
    for x, y in _batches(splits).take(8):
        if int(x["domain"][0]) == 0:
            break
    logs = model.test_on_batch(x, y, return_dict=True)
    expected = snd_loss(teacher(x["images"]), student(x["images"]), sigma=0.1)
    np.testing.assert_allclose(logs["loss_domain0"], float(expected), rtol=1e-4)
    model.fit(_batches(splits), steps_per_epoch=2, epochs=1, verbose=0)
