"""Batch builders and transforms: c×k invariants, domain policies, determinism, small classes."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfembed.data import pipeline
from tfembed.data import samplers
from tfembed.data import transforms
from tfembed.data.transforms import eval_transform
from tfembed.data.types import ImageSpec, Split


def _labels(sizes):
    """Labels with ``sizes[c]`` images of class c."""
    return np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])


def _take(ds, n):
    return [tuple(t.numpy() for t in item) for item in ds.take(n)]


def test_class_balanced_batches_are_c_by_k():
    labels = _labels([7, 9, 4, 12, 6, 5, 8, 10])
    for domain, index in _take(samplers.batch_indices([labels], 4, 3, seed=1), 30):
        assert index.shape == (12,) and np.all(domain == 0)
        counts = collections.Counter(labels[index])
        assert len(counts) == 4 and set(counts.values()) == {3}
        # k images of a class are distinct rows when the class has >= k images
        assert len(set(index.tolist())) == 12


def test_class_with_fewer_than_k_images_still_works():
    labels = _labels([1, 2, 6, 6])
    for _, index in _take(samplers.batch_indices([labels], 4, 4, seed=0), 20):
        counts = collections.Counter(labels[index])
        assert set(counts.values()) == {4} and len(counts) == 4
        assert np.all(labels[index[:4]] == labels[index[0]])


def test_fewer_classes_than_c_cycles_through_all_classes():
    labels = _labels([5, 5, 5])
    for _, index in _take(samplers.batch_indices([labels], 5, 2, seed=3), 10):
        counts = collections.Counter(labels[index])
        assert set(counts) == {0, 1, 2} and sorted(counts.values()) in ([2, 4, 4],)


def test_stream_is_a_function_of_the_seed():
    labels = _labels([6] * 10)
    a = _take(samplers.batch_indices([labels], 3, 2, seed=7), 5)
    b = _take(samplers.batch_indices([labels], 3, 2, seed=7), 5)
    c = _take(samplers.batch_indices([labels], 3, 2, seed=8), 5)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


@pytest.mark.parametrize("policy,weights,expected", [
    ("domain_specific", None, [0.1, 0.3, 0.6]),
    ("domain_balanced", None, [1 / 3, 1 / 3, 1 / 3]),
    ("weighted", [10.0, 1.0, 1.0], [1.0 / 1.9, 0.3 / 1.9, 0.6 / 1.9]),
])
def test_domain_policies_one_domain_per_batch(policy, weights, expected):
    domains = [_labels([10] * 10), _labels([10] * 30), _labels([10] * 60)]
    n = 600
    seen = np.zeros(3)
    for domain, index in _take(samplers.batch_indices(domains, 4, 2, policy=policy,
                                                       weights=weights, seed=0), n):
        assert np.all(domain == domain[0]), "a domain-specific batch mixes domains"
        assert index.max() < len(domains[domain[0]])
        seen[domain[0]] += 1
    freq = seen / n
    # binomial tolerance: 4 standard deviations
    tol = 4 * np.sqrt(np.asarray(expected) * (1 - np.asarray(expected)) / n)
    np.testing.assert_array_less(np.abs(freq - expected), tol)


def test_naive_policy_mixes_domains_with_whole_classes():
    domains = [_labels([4] * 6), _labels([4] * 6)]
    mixed = 0
    for domain, index in _take(samplers.batch_indices(domains, 4, 2, policy="naive", seed=0), 50):
        keys = collections.Counter(zip(domain.tolist(), [domains[d][i] for d, i in
                                                         zip(domain, index)]))
        assert set(keys.values()) == {2} and len(keys) == 4
        mixed += len(set(domain.tolist())) > 1
    assert mixed > 25


def test_weighted_requires_one_weight_per_domain():
    with pytest.raises(ValueError, match="one weight per domain"):
        samplers.batch_indices([_labels([3]), _labels([3])], 1, 1, policy="weighted",
                               weights=[1.0])
    with pytest.raises(ValueError, match="unknown sampling policy"):
        samplers.batch_indices([_labels([3])], 1, 1, policy="domain_specfic")


def _split(n_classes, per_class, size, seed):
    r = np.random.default_rng(seed)
    labels = _labels([per_class] * n_classes)
    images = r.integers(0, 255, (len(labels), size, size, 1), dtype=np.uint8)
    return Split(labels=labels, images=images)


def test_training_batches_multi_domain_format_and_offsets():
    a, b = _split(3, 4, 12, 0), _split(5, 3, 16, 1)
    ds = pipeline.training_batches([a, b], 2, 2, spec=ImageSpec(8, 10),
                                   label_offsets=[0, 3], seed=0)
    for x, y in ds.take(10):
        assert set(x) == {"images", "domain"}
        assert x["images"].shape == (4, 8, 8, 3) and x["images"].dtype == tf.float32
        d = int(x["domain"][0])
        assert np.all(x["domain"].numpy() == d)
        y = y.numpy()
        assert (y < 3).all() if d == 0 else ((y >= 3) & (y < 8)).all()
        pixels = x["images"].numpy()
        assert pixels.min() >= 0 and pixels.max() <= 255


def test_training_batches_single_domain_and_determinism():
    a = _split(4, 5, 12, 0)
    ds1 = pipeline.training_batches([a], 2, 2, spec=ImageSpec(8, 10), seed=3)
    ds2 = pipeline.training_batches([a], 2, 2, spec=ImageSpec(8, 10), seed=3)
    for (x1, y1), (x2, y2) in zip(ds1.take(3), ds2.take(3)):
        assert x1.shape == (4, 8, 8, 3)
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_train_transform_eager_equals_graph():
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (20, 30, 3)), tf.uint8)
    seed = tf.constant([1, 2], tf.int64)
    eager = transforms.train_transform(image, seed, (16, 16), (18, 18))
    graph = tf.function(transforms.train_transform)(image, seed, (16, 16), (18, 18))
    ds = tf.data.Dataset.from_tensors((image, seed)).map(
        lambda i, s: transforms.train_transform(i, s, (16, 16), (18, 18)))
    np.testing.assert_allclose(eager.numpy(), graph.numpy())
    np.testing.assert_allclose(eager.numpy(), next(iter(ds)).numpy())
    assert eager.shape == (16, 16, 3)
    # the crop is a window of the resized image
    resized = tf.image.resize(tf.cast(image, tf.float32), (18, 18), antialias=True).numpy()
    flipped = resized[:, ::-1]
    found = any(np.allclose(eager.numpy(), src[i:i + 16, j:j + 16])
                for src in (resized, flipped) for i in range(3) for j in range(3))
    assert found


def test_eval_dataset_in_order_with_eval_transform():
    a = _split(3, 2, 12, 0)
    ds = pipeline.eval_dataset(a, batch_size=4, spec=ImageSpec(8, 10), label_offset=5)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    np.testing.assert_array_equal(y, a.labels + 5)
    rgb = np.repeat(a.images[2], 3, axis=-1)
    np.testing.assert_allclose(x[2], eval_transform(rgb, (8, 8), (10, 10)).numpy(), atol=1e-4)
    ds = pipeline.eval_dataset(a, batch_size=4, spec=ImageSpec(8, 10), domain=1)
    inputs, _ = next(iter(ds))
    assert np.all(inputs["domain"].numpy() == 1)


def test_path_split_decodes_files(tmp_path):
    from PIL import Image

    paths = []
    for i, mode in enumerate(["RGB", "L", "RGBA"]):
        p = tmp_path / f"{i}.png"
        Image.new(mode, (9 + i, 7), color=(10 * i + 1,) * len(mode)).save(p)
        paths.append(str(p))
    split = Split(labels=[0, 1, 2], paths=paths)
    x, y = next(iter(pipeline.eval_dataset(split, 3, spec=ImageSpec(6, 6))))
    assert x.shape == (3, 6, 6, 3)
    np.testing.assert_allclose(x.numpy()[1], 11.0, atol=1e-4)  # grey → RGB, value preserved
    np.testing.assert_allclose(x.numpy()[2], 21.0, atol=1e-4)  # RGBA → RGB


def test_batches_take_any_sampler_object():
    # A sampler is anything with ``batch_size`` and ``sampler(labels, seed, start_step)`` giving
    # (domain, index) batches: here the same two rows of each of two domains, every batch.
    class FixedRows:
        batch_size = 4

        def __call__(self, labels_per_domain, seed=0, start_step=0):
            rows = (tf.constant([0, 0, 1, 1], tf.int32), tf.constant([0, 5, 1, 2], tf.int64))
            return tf.data.Dataset.from_tensors(rows).repeat()

    a, b = _split(3, 2, 10, 0), _split(2, 3, 12, 1)
    spec = ImageSpec(8, 10)
    ds = pipeline.batches([a, b], FixedRows(), spec=spec, label_offsets=[0, 100])
    for x, y in ds.take(2):
        np.testing.assert_array_equal(x["domain"], [0, 0, 1, 1])
        np.testing.assert_array_equal(y, [a.labels[0], a.labels[5], 100 + b.labels[1],
                                          100 + b.labels[2]])
        assert x["images"].shape == (4, 8, 8, 3)
    # No ``labelled`` attribute means labelled; Uniform's stream is not.
    _, y = next(iter(pipeline.batches([a], samplers.Uniform(3), spec=spec)))
    np.testing.assert_array_equal(y, [-1, -1, -1])
