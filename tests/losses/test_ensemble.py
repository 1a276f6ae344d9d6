"""divergence_loss (ABE, 002 Eq. 9) and relation_loss (DM², 003 Eq. 1-2) against brute-force
numpy references; gradients finite when learners / rows coincide; peers get no gradient."""

import numpy as np
import pytest
import tensorflow as tf

from tfembed.losses import DivergenceLoss, RelationLoss, divergence_loss, relation_loss


def ref_divergence(x, margin):
    m, b, _ = x.shape
    total = 0.0
    for i in range(b):
        for p in range(m):
            for q in range(p + 1, m):
                total += max(0.0, margin - float(np.sum((x[p, i] - x[q, i]) ** 2)))
    return total / b if b else 0.0


def ref_relation(x, peers):
    def dist(a):
        return np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1))
    n = len(x)
    return float(np.mean([((dist(x) - dist(p)) ** 2).sum() / n ** 2 for p in peers]))


@pytest.mark.parametrize("m", [1, 2, 3, 8])
@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_divergence_matches_reference(rng, m, margin):
    x = rng.normal(size=(m, 6, 4)).astype(np.float32) * 0.4
    got = float(divergence_loss(tf.constant(x), margin))
    assert got == pytest.approx(ref_divergence(x, margin), rel=1e-5, abs=1e-6)
    graph = tf.function(lambda t: divergence_loss(t, margin), input_signature=[
        tf.TensorSpec([None, None, None], tf.float32)])
    assert float(graph(tf.constant(x))) == pytest.approx(got, rel=1e-6, abs=1e-6)


def test_divergence_gradient_finite_when_learners_coincide(rng):
    one = rng.normal(size=(1, 5, 4)).astype(np.float32)
    x = tf.Variable(np.repeat(one, 8, axis=0))
    with tf.GradientTape() as tape:
        loss = divergence_loss(x)
    grad = tape.gradient(loss, x)
    assert float(loss) == pytest.approx(28.0)  # 8·7/2 pairs, each at distance 0
    assert np.all(np.isfinite(grad.numpy()))
    assert float(divergence_loss(tf.zeros([3, 0, 4]))) == 0.0
    with pytest.raises(ValueError, match=r"\[M, batch, dim\]"):
        divergence_loss(tf.zeros([4, 3]))


def test_relation_matches_reference_single_peer_and_list(rng):
    x = rng.normal(size=(7, 5)).astype(np.float32)
    peers = [rng.normal(size=(7, d)).astype(np.float32) for d in (5, 3, 8)]
    assert float(relation_loss(x, peers[0])) == pytest.approx(ref_relation(x, peers[:1]),
                                                              rel=1e-5)
    assert float(relation_loss(x, peers)) == pytest.approx(ref_relation(x, peers), rel=1e-5)
    with pytest.raises(ValueError, match="peer"):
        relation_loss(x, [])


def test_relation_peers_get_no_gradient_and_duplicates_are_finite(rng):
    x = rng.normal(size=(6, 4)).astype(np.float32)
    x[1] = x[0]  # a duplicated row: distance 0 on and off the diagonal
    own, peer = tf.Variable(x), tf.Variable(x[::-1].copy())
    with tf.GradientTape() as tape:
        loss = relation_loss(own, [peer])
    g_own, g_peer = tape.gradient(loss, [own, peer])
    assert g_peer is None
    assert np.all(np.isfinite(g_own.numpy())) and np.abs(g_own.numpy()).sum() > 0


def test_loss_classes(rng):
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    loss = DivergenceLoss(margin=0.7)
    assert float(loss(tf.zeros([6]), x)) == pytest.approx(ref_divergence(x, 0.7), rel=1e-5)
    assert DivergenceLoss.from_config(loss.get_config()).get_config()["margin"] == 0.7
    a, b = x[0], x[1]
    assert float(RelationLoss()(b, a)) == pytest.approx(ref_relation(a, [b]), rel=1e-5)
