"""TeacherCache: fixed teacher views, exact lookups, storage, and cached steps equal live ones."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.universal.test_distiller import _dense_embedder, _domains, _teachers
from tfembed import losses as L
from tfembed.data.pipeline import teacher_view_dataset, training_batches
from tfembed.data.transforms import Augment, eval_transform, train_transform
from tfembed.data.types import ImageSpec
from tfembed.data.views import CohortViews, TeacherCacheViews, fixed_view_seed
from tfembed.distill import Distiller, TeacherCache
from tfembed.distill import cache as cache_lib
from tfembed.universal import UniversalDistiller

SIZE, RESIZE = 16, 20
STREAM = dict(spec=ImageSpec(SIZE, RESIZE), augment=Augment(flip=True), seed=3)


def _stream(splits, teacher_views, **kw):
    return training_batches(splits, 2, 4, view=TeacherCacheViews(teacher_views),
                            multi_domain=len(splits) > 1, **STREAM, **kw)


def _cache(teachers, splits, teacher_views, **kw):
    return TeacherCache.compute(teachers, splits, teacher_views, batch_size=5, **STREAM, **kw)


def _teacher_batch(splits, teacher_views, k):
    return list(_stream(splits, teacher_views).take(k))


def _pixels(split, example, view, teacher_views):
    image = split.images[example]
    if teacher_views == 0:
        return eval_transform(image, SIZE, RESIZE).numpy()
    return train_transform(image, fixed_view_seed(STREAM["seed"], example, view), SIZE, RESIZE,
                           STREAM["augment"].flip).numpy()


@pytest.mark.parametrize("teacher_views", [0, 3])
def test_stream_shows_the_fixed_view_of_each_example(rng, teacher_views):
    splits = _domains(rng, 2)
    seen_views = set()
    for x, _ in _teacher_batch(splits, teacher_views, 6):
        domain = int(x["domain"][0])
        for i in range(8):
            example, view = int(x["example"][i]), int(x["view"][i])
            seen_views.add(view)
            # The teacher's pixels depend only on (example, view): cacheable.
            np.testing.assert_allclose(x["images"][i], _pixels(splits[domain], example, view,
                                                                teacher_views), atol=1e-4)
        if teacher_views == 0:
            # The student keeps its random augmentation (not the teacher's eval view).
            assert not np.allclose(x["student_images"], x["images"])
    assert seen_views == set(range(max(teacher_views, 1)))


def test_stream_with_fixed_views_resumes_exactly(rng):
    splits = _domains(rng, 2)
    full = [x for x, _ in _stream(splits, 2).take(5)]
    tail = [x for x, _ in _stream(splits, 2, start_step=3).take(2)]
    for a, b in zip(full[3:], tail):
        for key in ("images", "example", "view", "domain"):
            np.testing.assert_array_equal(a[key], b[key])


def test_teacher_views_refuses_bad_values_and_combinations(rng):
    splits = _domains(rng, 1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="teacher_views"):
            _stream(splits, bad)
    # A stream has one view= (teacher views and cohort views cannot be combined by
    # construction); each view is validated when it is built.
    with pytest.raises(ValueError, match="teacher_views"):
        TeacherCacheViews(-1)
    with pytest.raises(ValueError, match="cohort views"):
        CohortViews(0)


@pytest.mark.parametrize("teacher_views", [0, 2])
def test_cache_holds_the_teacher_embedding_of_every_view(rng, teacher_views):
    splits = _domains(rng, 2)
    teachers = _teachers(2)
    cache = _cache(teachers, splits, teacher_views)
    views = max(teacher_views, 1)
    for d, (teacher, split) in enumerate(zip(teachers, splits)):
        table = cache.table(d)
        assert table.shape == (len(split), views, 8)
        for example in (0, len(split) - 1):
            for view in range(views):
                pixels = _pixels(split, example, view, teacher_views)
                expected = teacher(pixels[None], training=False).numpy()[0]
                np.testing.assert_allclose(table[example, view], expected, rtol=1e-5,
                                           atol=1e-6)
    # teacher_view_dataset is example-major: row i·V + v.
    rows = np.concatenate(list(teacher_view_dataset(splits[1], teacher_views, 7, **STREAM)))
    assert rows.shape[0] == len(splits[1]) * views


def test_lookup_eager_and_in_graph_and_for_a_teacherless_domain(rng):
    tables = [rng.normal(size=(5, 2, 3)).astype("float32"), None,
              rng.normal(size=(4, 2, 3)).astype("float32")]
    cache = TeacherCache(tables, 2, ["a", "b", "c"])
    example = tf.constant([0, 4, 2], tf.int64)
    view = tf.constant([1, 0, 1], tf.int32)
    np.testing.assert_array_equal(cache.lookup(0, example, view),
                                  tables[0][[0, 4, 2], [1, 0, 1]])
    graph = tf.function(cache.lookup)
    np.testing.assert_array_equal(graph(tf.constant(2), example[:2] - [0, 1], view[:2]),
                                  tables[2][[0, 3], [1, 0]])
    # A per-row domain vector, and zeros for the domain without a teacher.
    got = graph(tf.constant([2, 1, 0]), example, view).numpy()
    np.testing.assert_array_equal(got[0], tables[2][0, 1])
    np.testing.assert_array_equal(got[1], np.zeros(3))
    np.testing.assert_array_equal(got[2], tables[0][2, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the cached split"):
        graph(tf.constant(2), tf.constant([4], tf.int64), tf.constant([0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the cached split"):
        cache.lookup(0, tf.constant([0], tf.int64), tf.constant([2]))
    # XLA ignores the assertion: the out-of-range row is NaN (a non-finite loss stops the run).
    xla = tf.function(cache.lookup, jit_compile=True)
    got = xla(tf.constant(2), tf.constant([1, 4], tf.int64), tf.constant([0, 0])).numpy()
    np.testing.assert_array_equal(got[0], tables[2][1, 0])
    assert np.isnan(got[1]).all()


def test_cache_validates_its_tables():
    with pytest.raises(ValueError, match="at least one domain"):
        TeacherCache([None], 0)
    # Teachers of different dimensions: zero-padded to the largest (distances unchanged).
    small = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    padded = TeacherCache([small, np.ones((2, 1, 4))], 0)
    assert padded.dim == 4
    got = padded.lookup(0, tf.constant([1], tf.int64), tf.constant([0])).numpy()
    np.testing.assert_array_equal(got, [[3, 4, 5, 0]])
    with pytest.raises(ValueError, match=r"expected \[examples, 2 views"):
        TeacherCache([np.zeros((2, 1, 3))], 2)


def test_teachers_at_their_own_sizes_are_cached_at_them(rng, tmp_path):
    # Specialists at 12 and 20 px beside a 16-px stream (DESIGN §7): each table holds its
    # teacher's embedding of the (example, view) cut at its own sizes with the stream's seed.
    from tests.universal.test_distiller import _hetero_teachers

    splits = _domains(rng, 2)
    teachers = _hetero_teachers()[::2]          # 4-d at 12 px, 16-d at 20 px
    specs = [ImageSpec.of(t) for t in teachers]
    cache = TeacherCache.load_or_compute(str(tmp_path / "c"), teachers, splits, 2, batch_size=5,
                                         teacher_specs=specs, **STREAM)
    assert cache.dim == 16
    for d, (teacher, split) in enumerate(zip(teachers, splits)):
        ds = teacher_view_dataset(split, 2, 5, spec=specs[d], augment=Augment(flip=True),
                                  seed=STREAM["seed"])
        want = np.concatenate([teacher(b, training=False).numpy() for b in ds])
        np.testing.assert_allclose(cache.table(d).reshape(len(want), -1), want, rtol=1e-5,
                                   atol=1e-6)
    meta = json.load(open(tmp_path / "c" / "meta.json"))
    assert [m.get("image_size") for m in meta["domains"]] == [12, 20]
    # Other sizes are another cache: a stream-sized one does not match it.
    assert TeacherCache.describe(teachers, splits, 2, **STREAM) != cache.meta


def test_save_load_reuse_and_recompute(rng, tmp_path, monkeypatch):
    splits = _domains(rng, 2)
    teachers = [_teachers(1)[0], None]
    directory = str(tmp_path / "cache")
    kw = dict(batch_size=4, domain_names=["a", "b"], **STREAM)
    cache = TeacherCache.load_or_compute(directory, teachers, splits, 2, **kw)
    assert sorted(os.listdir(directory)) == ["0.npy", "meta.json"]
    loaded = TeacherCache.load(directory)
    np.testing.assert_array_equal(loaded.table(0), cache.table(0))
    assert loaded.table(1) is None and loaded.domain_names == ["a", "b"]
    assert loaded.directory == directory

    calls = []
    real = TeacherCache.compute.__func__
    monkeypatch.setattr(TeacherCache, "compute",
                        classmethod(lambda cls, *a, **k: calls.append(1) or real(cls, *a, **k)))
    TeacherCache.load_or_compute(directory, teachers, splits, 2, **kw)
    assert calls == []                                   # same teachers and data: reused
    teachers[0].weights[0].assign(teachers[0].weights[0] + 1.0)   # a retrained teacher
    again = TeacherCache.load_or_compute(directory, teachers, splits, 2, **kw)
    assert calls == [1] and not np.allclose(again.table(0), cache.table(0))
    TeacherCache.load_or_compute(directory, teachers, splits, 1, **kw)   # other views
    assert calls == [1, 1]
    assert json.load(open(os.path.join(directory, "meta.json")))["teacher_views"] == 1
    assert [p for p in os.listdir(tmp_path) if p != "cache"] == []   # no temporaries left


def test_interrupted_save_leaves_the_previous_cache(rng, tmp_path, monkeypatch):
    cache = TeacherCache([rng.normal(size=(3, 1, 2)), rng.normal(size=(2, 1, 2))], 0)
    directory = str(tmp_path / "cache")
    cache.save(directory)
    before = TeacherCache.load(directory).table(1)

    def broken(path, array):
        if path.endswith("1.npy"):
            raise OSError("disk full")
        np.lib.format.write_array(open(path, "wb"), array)

    monkeypatch.setattr(cache_lib.np, "save", broken)
    other = TeacherCache([np.zeros((3, 1, 2)), np.zeros((2, 1, 2))], 0)
    with pytest.raises(OSError, match="disk full"):
        other.save(directory)
    np.testing.assert_array_equal(TeacherCache.load(directory).table(1), before)
    assert os.listdir(tmp_path) == ["cache"]
    with pytest.raises(FileNotFoundError, match="no teacher cache in .*nowhere"):
        TeacherCache.load(str(tmp_path / "nowhere"))


# ------------------------------------------------------------------- trainers: cached == live

def _fit_one_step(model, batch):
    model.compile(keras.optimizers.SGD(0.5))
    logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    return {k: v[0] for k, v in logs.items()}, [w.numpy() for w in model.student.weights]


def _assert_same(a, b):
    assert a[0].keys() == b[0].keys()
    for key in a[0]:
        np.testing.assert_allclose(a[0][key], b[0][key], rtol=1e-5, atol=1e-7, err_msg=key)
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("teacher_views", [0, 2])
def test_universal_distiller_cached_step_equals_live_step(rng, teacher_views):
    splits = _domains(rng, 2)
    teachers = _teachers(2)
    cache = _cache(teachers, splits, teacher_views, domain_names=["a", "b"])
    batch = _teacher_batch(splits, teacher_views, 3)[-1]

    def run(source):
        model = UniversalDistiller(source, _dense_embedder(seed=5), L.SNDLoss(sigma=0.5),
                                   domain_names=["a", "b"])
        return _fit_one_step(model, batch)

    live, cached = run(teachers), run(cache)
    _assert_same(cached, live)
    assert cached[0]["loss"] > 0


@pytest.mark.parametrize("teacher_views", [0, 2])
def test_distiller_cached_step_equals_live_step(rng, teacher_views):
    split = _domains(rng, 1)[0]
    teacher = _teachers(1)[0]
    cache = _cache([teacher], [split], teacher_views)
    batch = _teacher_batch([split], teacher_views, 2)[-1]

    def run(source):
        model = Distiller(source, _dense_embedder(seed=6), "relative_teacher",
                          metric_loss="triplet_semihard")
        return _fit_one_step(model, batch)

    _assert_same(run(cache), run(teacher))


def test_cached_universal_step_on_two_replicas_equals_one_device(rng, two_replica_strategy):
    splits = _domains(rng, 2)
    cache = _cache(_teachers(2), splits, 2)
    batch = _teacher_batch(splits, 2, 2)[-1]

    def run(strategy):
        with strategy.scope():
            model = UniversalDistiller(cache, _dense_embedder(seed=7), L.SNDLoss(sigma=0.5))
            model.compile(keras.optimizers.SGD(0.5))
        logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
        return {k: v[0] for k, v in logs.items()}, [w.numpy() for w in model.student.weights]

    _assert_same(run(two_replica_strategy), run(tf.distribute.get_strategy()))


def test_trainers_explain_what_a_cache_cannot_do(rng, tmp_path):
    split = _domains(rng, 1)[0]
    teacher = _teachers(1)[0]
    cache = _cache([teacher], [split], 0)
    with pytest.raises(ValueError, match="feature maps"):
        Distiller(cache, _dense_embedder(), "relative_teacher", attention_layers=[("a", "b")],
                  attention_weight=1.0)
    with pytest.raises(ValueError, match="one teacher"):
        Distiller(_cache(_teachers(2), _domains(rng, 2), 0), _dense_embedder(), "relative_teacher")
    model = UniversalDistiller(cache, _dense_embedder(), L.SNDLoss(sigma=0.5))
    model.compile(keras.optimizers.SGD(0.1))
    plain = training_batches([split], 2, 4, **STREAM)      # no example / view keys
    with pytest.raises(ValueError, match="'example' and 'view'"):
        model.fit(plain, steps_per_epoch=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="in-memory TeacherCache"):
        model.get_config()


def test_config_round_trip_with_a_saved_cache(rng, tmp_path):
    split = _domains(rng, 1)[0]
    cache = _cache(_teachers(1), [split], 1)
    cache.save(str(tmp_path / "cache"))
    for model in (UniversalDistiller(cache, _dense_embedder(), L.SNDLoss(sigma=0.5)),
                  Distiller(cache, _dense_embedder(), "relative_teacher")):
        clone = type(model).from_config(model.get_config())
        np.testing.assert_array_equal(clone.teacher_cache.table(0), cache.table(0))
