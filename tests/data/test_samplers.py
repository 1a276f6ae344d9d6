"""The pair sampler of paper 002 (ABE §4): a anchors, p positive then a-p negative partners."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfembed.data import pipeline, samplers
from tfembed.data.samplers import Pairs
from tfembed.data.types import ImageSpec, Split


def _labels(sizes):
    """Labels with ``sizes[c]`` images of class c."""
    return np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])


def _steps(labels, n, num_anchors, num_positive, seed=0):
    """``n`` batches of the stream as one ``int64 [n, 2a]`` array (domains checked to be 0)."""
    ds = samplers.pair_batch_indices(labels, num_anchors, num_positive, seed=seed)
    domain, index = next(iter(ds.take(n).batch(n)))
    assert domain.dtype == tf.int32 and index.dtype == tf.int64
    assert domain.shape == index.shape == (n, 2 * num_anchors)
    assert np.all(domain.numpy() == 0)
    return index.numpy()


def _check_batches(labels, batches, num_anchors, num_positive):
    sizes = collections.Counter(labels.tolist())
    for index in batches:
        assert index.shape == (2 * num_anchors,)
        assert index.min() >= 0 and index.max() < len(labels)
        anchors, partners = index[0::2], index[1::2]  # interleaved [a0, p0, a1, p1, ...]
        assert len(set(anchors.tolist())) == num_anchors, "anchors must be distinct"
        la, lp = labels[anchors], labels[partners]
        pos = slice(0, num_positive)
        neg = slice(num_positive, None)
        assert np.all(la[pos] == lp[pos])
        single = np.array([sizes[l] == 1 for l in la[pos]], bool)
        # partner is another row of the class, or the anchor itself for a one-image class
        assert np.all((anchors[pos] != partners[pos]) | single)
        assert np.all(anchors[pos][single] == partners[pos][single])
        assert np.all(la[neg] != lp[neg])


@pytest.mark.parametrize("case", range(6))
def test_pair_invariants_on_random_label_arrays(case):
    r = np.random.default_rng(case)
    if case == 0:  # many singletons next to one huge class
        labels = np.concatenate([np.arange(10), np.full(200, 10)])
    elif case == 1:  # just two classes, one of a single image
        labels = np.array([7] + [3] * 9)
    else:  # random sizes in a geometric-ish spread, sparse unsorted label values
        sizes = np.maximum(1, r.geometric(0.15 * case, size=int(r.integers(2, 40))))
        labels = r.permutation(_labels(sizes)) * 13 + 5
    n_rows = len(labels)
    a = int(min(n_rows, r.integers(1, 33)))
    p = int(r.integers(0, a + 1))
    _check_batches(labels, _steps(labels, 150, a, p, seed=case), a, p)


def test_paper_setting_32_anchors_16_positive():
    labels = _labels(np.random.default_rng(1).integers(1, 12, size=100))
    batches = _steps(labels, 100, 32, 16)
    assert batches.shape == (100, 64)
    _check_batches(labels, batches, 32, 16)
    # defaults are the paper's
    _, index = next(iter(samplers.pair_batch_indices(labels)))
    assert index.shape == (64,)


def test_all_positive_and_all_negative_and_num_anchors_equal_rows():
    labels = _labels([3, 1, 4, 2])
    for p in (0, 10):
        _check_batches(labels, _steps(labels, 40, 10, p), 10, p)
    # all rows are anchors: every batch is a permutation of the rows
    for index in _steps(labels, 20, 10, 5):
        assert sorted(index[0::2].tolist()) == list(range(10))


def test_single_class_split_is_fine_for_positives_only():
    labels = np.full(6, 4)
    _check_batches(labels, _steps(labels, 20, 3, 3), 3, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        samplers.pair_batch_indices(labels, 3, 2)


def _chi2(observed, expected):
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    return float(np.sum((observed - expected) ** 2 / expected))


def test_anchors_are_uniform_over_rows():
    labels = _labels([5, 1, 3, 12, 9])
    n, a = 2000, 6
    batches = _steps(labels, n, a, 3, seed=11)
    counts = np.bincount(batches[:, 0::2].ravel(), minlength=len(labels))
    dof = len(labels) - 1
    assert _chi2(counts, np.full(len(labels), n * a / len(labels))) < dof + 6 * np.sqrt(2 * dof)


def test_positive_partner_is_uniform_over_other_rows_of_the_class():
    sizes = [5, 1, 3, 12, 2, 9]
    labels = _labels(sizes)
    batches = _steps(labels, 3000, 8, 8, seed=5)
    anchors, partners = batches[:, 0::2].ravel(), batches[:, 1::2].ravel()
    table = collections.Counter(zip(anchors.tolist(), partners.tolist()))
    stat, dof = 0.0, 0
    for row in range(len(labels)):
        mates = [m for m in np.flatnonzero(labels == labels[row]) if m != row]
        seen = sum(table[(row, m)] for m in range(len(labels)))
        if not mates:  # one-image class: always itself
            assert seen > 0 and table[(row, row)] == seen
            continue
        obs = [table[(row, m)] for m in mates]
        assert sum(obs) == seen, "a positive partner left the class or repeated the anchor"
        stat += _chi2(obs, np.full(len(mates), seen / len(mates)))
        dof += len(mates) - 1
    assert stat < dof + 6 * np.sqrt(2 * dof), (stat, dof)


def test_negative_partner_is_uniform_over_rows_of_other_classes():
    sizes = [20, 1, 4, 7, 2, 6]
    labels = _labels(sizes)
    batches = _steps(labels, 3000, 6, 0, seed=9)
    anchors, partners = batches[:, 0::2].ravel(), batches[:, 1::2].ravel()
    stat, dof = 0.0, 0
    for c in range(len(sizes)):
        got = partners[labels[anchors] == c]
        others = np.flatnonzero(labels != c)
        hist = np.bincount(got, minlength=len(labels))
        assert hist[labels == c].sum() == 0
        assert set(labels[got].tolist()) == set(range(len(sizes))) - {c}, "a class is never hit"
        stat += _chi2(hist[others], np.full(len(others), len(got) / len(others)))
        dof += len(others) - 1
    assert stat < dof + 6 * np.sqrt(2 * dof), (stat, dof)


def test_stream_is_a_function_of_the_seed():
    labels = _labels([4, 6, 1, 9, 3])
    a, b = _steps(labels, 10, 5, 2, seed=7), _steps(labels, 10, 5, 2, seed=7)
    c = _steps(labels, 10, 5, 2, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(x) for x in a}) > 1, "every step gives the same batch"
    # element-by-element iteration agrees with the batched read
    eager = [index.numpy() for _, index in
             samplers.pair_batch_indices(labels, 5, 2, seed=7).take(3)]
    np.testing.assert_array_equal(np.stack(eager), a[:3])


def test_inner_sampler_eager_equals_tf_function():
    labels = _labels([3, 5, 1, 8])
    index = samplers._PairIndex(labels)
    seed = tf.constant([3, 4], tf.int64)
    eager = index.sample_pairs(seed, 6, 3).numpy()
    graph = tf.function(lambda s: index.sample_pairs(s, 6, 3))(seed).numpy()
    np.testing.assert_array_equal(eager, graph)
    _check_batches(labels, [eager], 6, 3)


def test_large_split_sop_sized():
    r = np.random.default_rng(0)
    labels = r.permutation(np.repeat(np.arange(11318), r.integers(2, 10, 11318)))[:60000]
    _check_batches(labels, _steps(labels, 20, 32, 16), 32, 16)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_anchors=0, num_positive=0), "num_anchors must be >= 1"),
    (dict(num_anchors=4, num_positive=5), "num_positive"),
    (dict(num_anchors=4, num_positive=-1), "num_positive"),
    (dict(num_anchors=11, num_positive=2), "at least 11 rows"),
    (dict(num_anchors=2.5, num_positive=1), "integer"),
    (dict(num_anchors=None, num_positive=1), "integer"),
])
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        samplers.pair_batch_indices(_labels([4, 6]), **kwargs)


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        samplers.pair_batch_indices(np.zeros([0], np.int64), 1, 0)


def _split(sizes, size=12, seed=0):
    labels = _labels(sizes)
    images = np.random.default_rng(seed).integers(0, 255, (len(labels), size, size, 3),
                                                  dtype=np.uint8)
    return Split(labels=labels, images=images)


def test_training_batches_with_pairs():
    split = _split([3, 1, 4, 5, 2])
    kw = dict(spec=ImageSpec(8, 10), seed=2)
    ds = pipeline.batches([split], Pairs(4, 2), **kw)
    again = pipeline.batches([split], Pairs(4, 2), **kw)  # a pure function of the seed
    for (x, y), (x2, y2) in zip(ds.take(5), again.take(5)):
        assert x.shape == (8, 8, 8, 3) and x.dtype == tf.float32
        y = y.numpy()
        assert y.shape == (8,)
        assert np.all(y[0:4:2] == y[1:4:2]), "the first 2 pairs are positive"
        assert np.all(y[4::2] != y[5::2]), "the last 2 pairs are negative"
        np.testing.assert_array_equal(x.numpy(), x2.numpy())
        np.testing.assert_array_equal(y, y2.numpy())


def test_training_batches_pairs_needs_one_split():
    a, b = _split([2, 2]), _split([3, 3])
    with pytest.raises(ValueError, match="exactly one split"):
        pipeline.batches([a, b], Pairs(2, 1))
    with pytest.raises(ValueError, match="num_anchors"):
        pipeline.batches([a], Pairs(5, 1))
    # Pairs(a, p) is a pair by construction; a malformed count fails when the stream is built.
    with pytest.raises(ValueError, match="num_anchors must be an integer"):
        pipeline.batches([a], Pairs(2.5, 1))
