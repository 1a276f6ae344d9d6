"""Pairwise distance helpers: exact for duplicates, finite gradients, both code paths agree."""

import numpy as np
import tensorflow as tf

from tfembed import ops


def _numpy_d2(a, b):
    return ((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)


def test_distances_match_numpy_and_duplicates_are_exactly_zero(rng):
    a = rng.normal(size=(9, 5)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    a[3] = a[7]
    d2 = ops.pairwise_squared_distances(a).numpy()
    np.testing.assert_allclose(d2, _numpy_d2(a, a), rtol=1e-5, atol=1e-6)
    assert d2[3, 7] == 0.0 and d2[7, 3] == 0.0
    assert np.all(np.diag(d2) == 0.0)
    assert ops.pairwise_distances(a).numpy()[3, 7] == 0.0


def test_direct_and_matmul_paths_agree(rng, monkeypatch):
    a = rng.normal(size=(20, 6)).astype(np.float32)
    b = rng.normal(size=(11, 6)).astype(np.float32)
    direct = ops.pairwise_squared_distances(a, b).numpy()
    monkeypatch.setattr(ops, "DIRECT_DIFFERENCE_LIMIT", 0)
    expanded = ops.pairwise_squared_distances(a, b).numpy()
    np.testing.assert_allclose(direct, expanded, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(direct, _numpy_d2(a, b), rtol=1e-5, atol=1e-6)


def test_unknown_shapes_in_tf_function(rng):
    f = tf.function(ops.pairwise_distances,
                    input_signature=[tf.TensorSpec([None, None], tf.float32)])
    a = rng.normal(size=(7, 4)).astype(np.float32)
    np.testing.assert_allclose(f(a).numpy(), np.sqrt(_numpy_d2(a, a)), rtol=1e-5, atol=1e-6)


def test_gradients_finite_for_identical_rows():
    a = tf.Variable(tf.ones([4, 3]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ops.pairwise_distances(a))
    grad = tape.gradient(loss, a)
    assert np.all(np.isfinite(grad.numpy()))
