"""Tests of tfembed.losses.metric.

Each loss is checked against a brute-force float64 reference written with explicit loops straight
from its definition (no TensorFlow, no vectorisation), on several batches: random ones, one with
duplicated rows and one with a class of a single image.  Hand-built examples pin the semantics
that a plausible-but-wrong implementation would get differently (semi-hard vs hardest negative,
MS mining, D^2 vs D, the NCA denominator, ...).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed.losses import metric as M

DIM = 8
RTOL = 1e-5
ATOL = 1e-6


# ------------------------------------------------------------------------------------------------
# Brute-force references (float64, loops)
# ------------------------------------------------------------------------------------------------


def _rows(x):
    return [[float(v) for v in row] for row in np.asarray(x, dtype=np.float64)]


def ref_distances(x):
    rows = _rows(x)
    n = len(rows)
    d = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            d[i][j] = math.sqrt(sum((a - b) ** 2 for a, b in zip(rows[i], rows[j])))
    return d


def _normalised(rows):
    out = []
    for row in rows:
        norm = math.sqrt(sum(v * v for v in row))
        out.append([v / norm for v in row])
    return out


def ref_cosines(x, y=None):
    u = _normalised(_rows(x))
    v = u if y is None else _normalised(_rows(y))
    return [[sum(a * b for a, b in zip(ui, vj)) for vj in v] for ui in u]


def ref_triplet(labels, x, margin):
    d = ref_distances(x)
    n = len(labels)
    total, count = 0.0, 0
    for a in range(n):
        negatives = [k for k in range(n) if labels[k] != labels[a]]
        if not negatives:
            continue  # no triplet for this anchor: excluded from the mean
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a][k] for k in negatives if d[a][k] > d[a][p]]
            d_an = min(farther) if farther else max(d[a][k] for k in negatives)
            total += max(d[a][p] - d_an + margin, 0.0)
            count += 1
    return total / count if count else 0.0


def ref_triplet_hard(labels, x, margin):
    d = ref_distances(x)
    n = len(labels)
    total, count = 0.0, 0
    for a in range(n):
        negatives = [d[a][k] for k in range(n) if labels[k] != labels[a]]
        for p in range(n):
            if p != a and labels[p] == labels[a] and negatives:
                total += max(d[a][p] - min(negatives) + margin, 0.0)
                count += 1
    return total / count if count else 0.0


def ref_triplet_batch_hard(labels, x, margin):
    d = ref_distances(x)
    n = len(labels)
    total, count = 0.0, 0
    for a in range(n):
        positives = [d[a][p] for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [d[a][k] for k in range(n) if labels[k] != labels[a]]
        if not positives or not negatives:
            continue  # no triplet for this anchor: excluded from the mean
        total += max(max(positives) - min(negatives) + margin, 0.0)
        count += 1
    return total / count if count else 0.0


def ref_multi_similarity(labels, x, alpha, beta, base, epsilon):
    s = ref_cosines(x)
    n = len(labels)
    total = 0.0
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(n) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        min_pos = min(s[i][j] for j in pos)
        max_neg = max(s[i][j] for j in neg)
        kept_neg = [j for j in neg if s[i][j] + epsilon > min_pos]
        kept_pos = [j for j in pos if s[i][j] - epsilon < max_neg]
        if not kept_neg or not kept_pos:
            continue
        pos_sum = sum(math.exp(-alpha * (s[i][j] - base)) for j in kept_pos)
        neg_sum = sum(math.exp(beta * (s[i][j] - base)) for j in kept_neg)
        total += math.log(1.0 + pos_sum) / alpha + math.log(1.0 + neg_sum) / beta
    return total / n


def ref_contrastive(labels, x, margin):
    d = ref_distances(x)
    n = len(labels)
    total, count = 0.0, 0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d2 = d[i][j] ** 2
            y = 1.0 if labels[i] == labels[j] else 0.0
            total += y * d2 + (1.0 - y) * max(0.0, margin - d2)
            count += 1
    return total / count if count else 0.0


def ref_contrastive_pairs(labels, x, margin):
    """Pairs are rows (0, 1), (2, 3), ...; an odd last row has no partner."""
    d = ref_distances(x)
    terms = []
    for i in range(0, len(labels) - 1, 2):
        d2 = d[i][i + 1] ** 2
        terms.append(d2 if labels[i] == labels[i + 1] else max(0.0, margin - d2))
    return sum(terms) / len(terms) if terms else 0.0


def ref_margin(labels, x, negatives, margin, beta, nu):
    """Loss of the paper's implementation GIVEN the sampled negative of each pair."""
    d = ref_distances(x)
    n = len(labels)
    total, nonzero = 0.0, 0
    for a in range(n):
        if all(labels[k] == labels[a] for k in range(n)):
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            k = int(negatives[a][p])
            assert labels[k] != labels[a], "sampler returned a non-negative"
            pos_loss = max(d[a][p] - beta + margin, 0.0)
            neg_loss = max(beta - d[a][k] + margin, 0.0)
            total += pos_loss + neg_loss + nu * beta
            nonzero += (pos_loss > 0.0) + (neg_loss > 0.0)
    return total / nonzero if nonzero else 0.0


def ref_triplet_dw(labels, x, negatives, margin):
    """Triplet loss GIVEN the distance-weighted negative of each ordered positive pair."""
    d = ref_distances(x)
    n = len(labels)
    terms = []
    for a in range(n):
        if all(labels[k] == labels[a] for k in range(n)):
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            k = int(negatives[a][p])
            assert labels[k] != labels[a], "sampler returned a non-negative"
            terms.append(max(d[a][p] - d[a][k] + margin, 0.0))
    return sum(terms) / len(terms) if terms else 0.0


def ref_sampling_probabilities(labels, x, cutoff, nonzero_loss_cutoff):
    d = ref_distances(x)
    n, dim = len(labels), np.asarray(x).shape[1]
    probs = np.zeros((n, n))
    for a in range(n):
        negatives = [k for k in range(n) if labels[k] != labels[a]]
        near = [k for k in negatives if max(d[a][k], cutoff) < nonzero_loss_cutoff]
        weights = {}
        if near:
            for k in near:
                dk = max(d[a][k], cutoff)
                q = dk ** (dim - 2) * (1.0 - dk * dk / 4.0) ** ((dim - 3) / 2.0)
                weights[k] = 1.0 / q
        else:
            weights = {k: 1.0 for k in negatives}
        total = sum(weights.values())
        for k, w in weights.items():
            probs[a, k] = w / total
    return probs


def ref_proxy_nca(labels, x, proxies, scale):
    u = _normalised(_rows(x))
    p = _normalised(_rows(proxies))
    total = 0.0
    for i, y in enumerate(labels):
        d = [sum((a - b) ** 2 for a, b in zip(u[i], pz)) for pz in p]
        numerator = math.exp(-scale * d[y])
        denominator = sum(math.exp(-scale * d[z]) for z in range(len(p)) if z != y)
        total += -math.log(numerator / denominator)
    return total / len(labels)


def ref_binomial(labels, x, alpha, beta, cost_negative):
    s = ref_cosines(x)
    n = len(labels)
    pos_sum = neg_sum = 0.0
    num_pos = num_neg = 0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if labels[i] == labels[j]:
                pos_sum += math.log(1.0 + math.exp(-alpha * (s[i][j] - beta)))
                num_pos += 1
            else:
                neg_sum += math.log(1.0 + math.exp(-alpha * (s[i][j] - beta) * -cost_negative))
                num_neg += 1
    return (pos_sum / num_pos if num_pos else 0.0) + (neg_sum / num_neg if num_neg else 0.0)


def ref_arcface(labels, x, centers, scale, margin):
    cos = ref_cosines(x, centers)
    total = 0.0
    for i, y in enumerate(labels):
        c = max(-1.0, min(1.0, cos[i][y]))
        if c > math.cos(math.pi - margin):
            target = math.cos(math.acos(c) + margin)
        else:
            target = c - math.sin(math.pi - margin) * margin
        logits = [scale * (target if j == y else cos[i][j]) for j in range(len(cos[i]))]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        total += log_z - logits[y]
    return total / len(labels)


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def _make_cases():
    rng = np.random.default_rng(1234)
    cases = {}

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    labels = np.repeat(np.arange(3), 4)
    rng.shuffle(labels)
    cases["3x4_unit"] = (labels, unit(rng.normal(size=(12, DIM))))

    while True:  # random labels, re-drawn until there are positives and negatives
        labels = rng.integers(0, 5, size=18)
        if len(set(labels)) > 1 and len(set(labels)) < len(labels):
            break
    cases["random_labels_unit"] = (labels, unit(rng.normal(size=(18, DIM))))

    # Tight clusters: high similarities everywhere, so mining decisions change the losses a lot.
    labels = np.repeat(np.arange(4), 4)
    x = rng.normal(size=(4, DIM))[labels] + 0.5 * rng.normal(size=(16, DIM))
    cases["clustered_unit"] = (labels, unit(x))

    labels = np.repeat(np.arange(6), 4)
    cases["6x4_raw"] = (labels, 0.4 * rng.normal(size=(24, DIM)))

    # Values on a 1/8 grid: float32 distances are then exact, so identical rows are at distance
    # exactly 0 and exact ties are ties in both float32 and float64.
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3])
    x = np.round(rng.normal(size=(12, DIM)) * 4.0) / 8.0
    x[1] = x[0]  # duplicate inside a class
    x[7] = x[3]  # duplicate across classes
    x[11] = x[10]
    cases["duplicates"] = (labels, x)

    labels = np.array([0] * 4 + [1] * 4 + [2] * 4 + [3])  # class 3 has one image
    perm = rng.permutation(13)
    cases["singleton_class"] = (labels[perm], unit(rng.normal(size=(13, DIM))))

    out = {}
    for name, (labels, x) in cases.items():
        num_classes = int(labels.max()) + 1
        weights = rng.normal(size=(num_classes, DIM))
        out[name] = (labels.astype(np.int32), x.astype(np.float32), weights.astype(np.float32))
    return out


CASES = _make_cases()
SEED = tf.constant([3, 17], dtype=tf.int32)
MARGIN_HYPER = dict(margin=0.25, beta=1.125, nu=0.5)  # dyadic: hinge thresholds are exact


def _tf_margin(labels, x, w):
    del w
    return M.margin_loss(labels, x, seed=SEED, **MARGIN_HYPER)


def _ref_margin(labels, x, w):
    del w
    negatives = M.distance_weighted_negatives(labels, x, seed=SEED).numpy()
    return ref_margin(list(labels), x, negatives, **MARGIN_HYPER)


def _tf_triplet_dw(labels, x, w):
    del w
    return M.triplet_distance_weighted_loss(labels, x, margin=0.3, seed=SEED)


def _ref_triplet_dw(labels, x, w):
    del w
    negatives = M.distance_weighted_negatives(labels, x, seed=SEED).numpy()
    return ref_triplet_dw(list(labels), x, negatives, 0.3)


# name -> (tf function of (labels, embeddings, weights), reference of the same)
SPECS = {
    "triplet_semihard": (
        lambda l, x, w: M.triplet_semihard_loss(l, x, margin=0.5),
        lambda l, x, w: ref_triplet(list(l), x, 0.5),
    ),
    "triplet_hard": (
        lambda l, x, w: M.triplet_hard_loss(l, x, margin=0.5),
        lambda l, x, w: ref_triplet_hard(list(l), x, 0.5),
    ),
    "triplet_batch_hard": (
        lambda l, x, w: M.triplet_batch_hard_loss(l, x, margin=0.5),
        lambda l, x, w: ref_triplet_batch_hard(list(l), x, 0.5),
    ),
    "triplet_batch_hard_defaults": (  # margin 0, as 001's authors train
        lambda l, x, w: M.triplet_batch_hard_loss(l, x),
        lambda l, x, w: ref_triplet_batch_hard(list(l), x, 0.0),
    ),
    # beta=50 makes negatives that mining drops (>= epsilon below the hardest positive)
    # numerically invisible next to the kept ones; beta=10 lets the reference see them.
    "multi_similarity": (
        lambda l, x, w: M.multi_similarity_loss(l, x, alpha=2.0, beta=10.0, base=0.5, epsilon=0.1),
        lambda l, x, w: ref_multi_similarity(list(l), x, 2.0, 10.0, 0.5, 0.1),
    ),
    "multi_similarity_defaults": (
        lambda l, x, w: M.multi_similarity_loss(l, x),
        lambda l, x, w: ref_multi_similarity(list(l), x, 2.0, 50.0, 0.5, 0.1),
    ),
    "contrastive": (
        lambda l, x, w: M.contrastive_loss(l, x, margin=1.5),
        lambda l, x, w: ref_contrastive(list(l), x, 1.5),
    ),
    "contrastive_pairs": (
        lambda l, x, w: M.contrastive_pairs_loss(l, x, margin=1.5),
        lambda l, x, w: ref_contrastive_pairs(list(l), x, 1.5),
    ),
    "margin": (_tf_margin, _ref_margin),
    "triplet_distance_weighted": (_tf_triplet_dw, _ref_triplet_dw),
    "proxy_nca": (
        lambda l, x, w: M.proxy_nca_loss(l, x, w, scale=3.0),
        lambda l, x, w: ref_proxy_nca(list(l), x, w, 3.0),
    ),
    "binomial_deviance": (
        lambda l, x, w: M.binomial_deviance_loss(l, x),
        lambda l, x, w: ref_binomial(list(l), x, 2.0, 0.5, 25.0),
    ),
    "arcface": (
        lambda l, x, w: M.arcface_loss(l, x, w, scale=16.0, margin=0.5),
        lambda l, x, w: ref_arcface(list(l), x, w, 16.0, 0.5),
    ),
}
PAIRWISE = [
    "triplet_semihard", "triplet_hard", "triplet_batch_hard", "triplet_batch_hard_defaults",
    "multi_similarity", "multi_similarity_defaults", "contrastive", "margin",
    "binomial_deviance", "contrastive_pairs", "triplet_distance_weighted",
]


# ------------------------------------------------------------------------------------------------
# Against the references
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(SPECS))
def test_matches_bruteforce_reference(name, case):
    labels, x, w = CASES[case]
    tf_fn, ref_fn = SPECS[name]
    got = tf_fn(tf.constant(labels), tf.constant(x), tf.constant(w))
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), ref_fn(labels, x, w), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(set(SPECS) - {"multi_similarity_defaults"}))
def test_graph_with_unknown_batch_matches_eager(name):
    tf_fn, _ = SPECS[name]
    graph_fn = tf.function(
        tf_fn,
        input_signature=[
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, DIM], tf.float32),
            tf.TensorSpec([None, DIM], tf.float32),
        ],
    )
    for case in ("3x4_unit", "duplicates"):  # two batch sizes, one trace
        labels, x, w = (tf.constant(v) for v in CASES[case])
        np.testing.assert_allclose(
            float(graph_fn(labels, x, w)), float(tf_fn(labels, x, w)), rtol=1e-6, atol=1e-7
        )
    assert graph_fn.experimental_get_tracing_count() == 1


def test_float_labels_and_float16_embeddings():
    # What Keras hands a loss: float32 labels; under mixed precision float16 embeddings.
    labels, x, w = CASES["3x4_unit"]
    for name, (tf_fn, _) in SPECS.items():
        expected = float(tf_fn(tf.constant(labels), tf.constant(x), tf.constant(w)))
        got = tf_fn(tf.constant(labels, tf.float32), tf.constant(x), tf.constant(w))
        np.testing.assert_allclose(float(got), expected, rtol=1e-6, err_msg=name)
        half = tf_fn(tf.constant(labels), tf.constant(x, tf.float16), tf.constant(w))
        assert half.dtype == tf.float32, name
        assert np.isfinite(float(half)), name


# ------------------------------------------------------------------------------------------------
# Gradients and edge cases
# ------------------------------------------------------------------------------------------------


def _gradients(name, labels, x, w):
    tf_fn, _ = SPECS[name]
    xv, wv = tf.Variable(x), tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf_fn(tf.constant(labels), xv, wv)
    gx, gw = tape.gradient(loss, [xv, wv])
    return loss, gx, gw


@pytest.mark.parametrize("layout", ["duplicates", "all_identical", "on_center"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_gradients_finite_for_identical_rows(name, layout):
    labels, x, w = (v.copy() for v in CASES["duplicates"])
    if layout == "all_identical":
        x[:] = x[0]
    elif layout == "on_center":
        w[labels[0]] = x[0]  # an embedding exactly on its proxy / center
    loss, gx, gw = _gradients(name, labels, x, w)
    assert np.isfinite(float(loss))
    assert gx is not None and np.all(np.isfinite(gx.numpy()))
    if name in ("proxy_nca", "arcface"):
        assert np.all(np.isfinite(gw.numpy()))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_gradients_nonzero_on_random_batch(name):
    _, gx, _ = _gradients(name, *CASES["3x4_unit"])
    assert np.abs(gx.numpy()).sum() > 0.0


@pytest.mark.parametrize("layout", ["no_positives", "one_class", "single_example", "empty"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_degenerate_batches_are_finite(name, layout):
    _, x, w = CASES["3x4_unit"]
    n = {"no_positives": 3, "one_class": 12, "single_example": 1, "empty": 0}[layout]
    labels = np.arange(n, dtype=np.int32) if layout == "no_positives" else np.zeros(n, np.int32)
    loss, gx, _ = _gradients(name, labels, x[:n], w)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(gx.numpy()))
    # Losses built on positive pairs have nothing to say without them (or without negatives),
    # and no pairwise loss has a pair in a batch of one.
    if name in ("triplet_semihard", "triplet_hard", "triplet_batch_hard",
                "triplet_batch_hard_defaults", "multi_similarity",
                "multi_similarity_defaults", "margin", "triplet_distance_weighted"):
        assert float(loss) == 0.0
    if layout in ("single_example", "empty") and name in PAIRWISE:
        assert float(loss) == 0.0
    if layout != "empty":
        _, ref_fn = SPECS[name]
        np.testing.assert_allclose(float(loss), ref_fn(labels, x[:n], w), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------------
# Semantics on hand-built examples
# ------------------------------------------------------------------------------------------------


def _circle(degrees):
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_triplet_uses_semihard_not_hardest_negative():
    # 1-D: a=0, p=1 (class 0); n1=0.5, n2=2 (class 1), margin 1.
    #   (a, p): d=1, negatives at 0.5 and 2 -> semi-hard is n2 -> max(1 - 2 + 1, 0) = 0
    #           (the hardest negative n1 would give 1.5)
    #   (p, a): d=1, negatives at 0.5 and 1 -> none strictly farther -> farthest (1) -> 1
    #   (n1, n2): d=1.5, negatives at 0.5, 0.5 -> farthest -> 1.5 - 0.5 + 1 = 2
    #   (n2, n1): d=1.5, negatives at 2 and 1 -> semi-hard 2 -> 1.5 - 2 + 1 = 0.5
    labels = tf.constant([0, 0, 1, 1])
    x = tf.constant([[0.0], [1.0], [0.5], [2.0]])
    assert float(M.triplet_semihard_loss(labels, x, margin=1.0)) == pytest.approx(3.5 / 4)


def test_triplet_batch_hard_takes_one_hardest_triplet_per_anchor():
    # 1-D, class 0 at 0, 1, 3 and class 1 at 2, 2.5 (margin 0):
    #   a=0: positives 1, 3 -> 3; negatives 2, 2.5 -> 2;   3 - 2 = 1
    #   a=1: positives 1, 2 -> 2; negatives 1, 1.5 -> 1;   2 - 1 = 1
    #   a=3: positives 3, 2 -> 3; negatives 1, 0.5 -> 0.5; 3 - 0.5 = 2.5
    #   a=2: positive 0.5;        negatives 2, 1, 1 -> 1;  0.5 - 1 < 0 -> 0
    #   a=2.5: positive 0.5;      negatives 2.5, 1.5, 0.5 -> 0.5; 0
    # Mean over the 5 anchors: 4.5 / 5. triplet_hard averages every positive pair with its
    # hardest negative instead: (0 + 1 + 0 + 1 + 2.5 + 1.5 + 0 + 0) / 8.
    labels = tf.constant([0, 0, 0, 1, 1])
    x = tf.constant([[0.0], [1.0], [3.0], [2.0], [2.5]])
    assert float(M.triplet_batch_hard_loss(labels, x)) == pytest.approx(4.5 / 5)
    assert float(M.triplet_batch_hard_loss(labels, x, margin=1.0)) == pytest.approx(
        (2.0 + 2.0 + 3.5 + 0.5 + 1.0) / 5)
    assert float(M.triplet_hard_loss(labels, x, margin=0.0)) == pytest.approx(6.0 / 8)


def test_triplet_batch_hard_matches_the_authors_formula():
    """001's public code: d = sqrt(max(d², 1e-12)), the hardest positive taken over the
    anchor's own class *including itself* (at 1e-6), mean over all anchors. With every class
    holding at least two images (c × k batches, k >= 2) that is our loss up to the clamp."""
    rng = np.random.default_rng(7)
    for classes, k in ((4, 8), (4, 2), (3, 5)):
        labels = np.repeat(np.arange(classes), k).astype(np.int32)
        rng.shuffle(labels)
        x = rng.normal(size=(classes * k, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x64 = x.astype(np.float64)
        sq = (x64 ** 2).sum(1)[:, None] + (x64 ** 2).sum(1)[None, :] - 2.0 * x64 @ x64.T
        d = np.sqrt(np.maximum(sq, 1e-12))
        same = labels[:, None] == labels[None, :]
        d_ap = np.where(same, d, -np.inf).max(axis=1)
        d_an = np.where(same, np.inf, d).min(axis=1)
        expected = np.maximum(d_ap - d_an, 0.0).mean()
        got = float(M.triplet_batch_hard_loss(tf.constant(labels), tf.constant(x)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)


def test_multi_similarity_mining_on_circle():
    # Class 0 at 0 and 25 degrees, class 1 at 60 and 150 degrees.
    x = _circle([0.0, 25.0, 60.0, 150.0])
    c = lambda deg: math.cos(math.radians(deg))  # noqa: E731
    # anchor 0: min pos 0.906; negatives 0.5, -0.866 are both < 0.906 - 0.1 -> nothing mined -> 0
    # anchor 1: positive kept (0.906 - 0.1 < 0.819), only the negative at 60 deg (0.819) kept
    loss1 = (math.log1p(math.exp(-2 * (c(25) - 0.5))) / 2
             + math.log1p(math.exp(50 * (c(35) - 0.5))) / 50)
    # anchor 2: positive at 90 deg (0.0) kept; negatives 0.5 and 0.819 both kept
    loss2 = math.log1p(math.exp(-2 * (c(90) - 0.5))) / 2 + math.log1p(
        math.exp(50 * (c(60) - 0.5)) + math.exp(50 * (c(35) - 0.5))
    ) / 50
    # anchor 3: negatives at 150 and 125 deg are far below min pos (0.0) - 0.1 -> 0
    got = M.multi_similarity_loss(tf.constant([0, 0, 1, 1]), x)
    assert float(got) == pytest.approx((loss1 + loss2) / 4, rel=1e-5)


def test_multi_similarity_is_stable_for_large_beta():
    labels = tf.constant([0, 0, 1, 1])
    x = _circle([0.0, 90.0, 1.0, 2.0])  # negatives almost on the anchor, beta * (s - base) large
    got = M.multi_similarity_loss(labels, x, beta=400.0)
    expected = ref_multi_similarity([0, 0, 1, 1], x, 2.0, 400.0, 0.5, 0.1)
    assert np.isfinite(float(got)) and float(got) == pytest.approx(expected, rel=1e-5)


def test_contrastive_uses_squared_distances():
    # positives at distance 2 -> D^2 = 4 (twice); negatives (0, 2) at D^2 = 0.25 -> 0.75 (twice),
    # (1, 2) at D^2 = 2.25 > margin -> 0; six ordered pairs.
    labels = tf.constant([0, 0, 1])
    x = tf.constant([[0.0], [2.0], [0.5]])
    assert float(M.contrastive_loss(labels, x, margin=1.0)) == pytest.approx(9.5 / 6)


def test_margin_loss_on_deterministic_sampling():
    # Class 0 at 0 and 100 degrees, class 1 at 30 and 200.  With nonzero_loss_cutoff=1 the
    # anchors at 0 and 30 have one near negative each (each other, d=0.518), the other two have
    # none (uniform fallback) but every negative there is farther than beta + margin, so the
    # loss does not depend on the draw.
    x = _circle([0.0, 100.0, 30.0, 200.0])
    labels = tf.constant([0, 0, 1, 1])
    chord = lambda deg: 2 * math.sin(math.radians(deg) / 2)  # noqa: E731
    margin, beta, nu = 0.2, 0.8, 0.25
    pos = 2 * max(chord(100) - beta + margin, 0) + 2 * max(chord(170) - beta + margin, 0)
    neg = 2 * max(beta - chord(30) + margin, 0)
    expected = (pos + neg + 4 * nu * beta) / 6  # 4 positive + 2 negative non-zero terms
    for seed in ([1, 2], [5, 9]):
        got = M.margin_loss(labels, x, margin=margin, beta=beta, nu=nu,
                            nonzero_loss_cutoff=1.0, seed=seed)
        assert float(got) == pytest.approx(expected, rel=1e-5)
    # A per-class beta, indexed by the anchor's class; 1.2 for class 1 keeps the anchor at 200
    # deg (uniform fallback) at zero negative loss whichever negative it draws.
    betas = (0.8, 1.2)
    got = M.margin_loss(labels, x, margin=margin, beta=tf.constant(betas), nu=0.0,
                        nonzero_loss_cutoff=1.0, seed=[1, 2])
    pos = 2 * (chord(100) - betas[0] + margin) + 2 * (chord(170) - betas[1] + margin)
    neg = (betas[0] - chord(30) + margin) + (betas[1] - chord(30) + margin)
    assert float(got) == pytest.approx((pos + neg) / 6, rel=1e-5)


def test_margin_loss_learned_beta_and_unknown_dim():
    labels, x, _ = CASES["3x4_unit"]
    betas = tf.Variable([1.0, 1.1, 1.2])
    with tf.GradientTape() as tape:
        loss = M.margin_loss(labels, x, beta=betas, nu=0.1, seed=[2, 3])
    grad = tf.convert_to_tensor(tape.gradient(loss, betas))  # a gather gives IndexedSlices
    assert grad is not None and np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)

    graph = tf.function(
        lambda l, e: M.margin_loss(l, e, seed=tf.constant([2, 3])),
        input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, None])],
    )
    expected = M.margin_loss(labels, x, seed=[2, 3])
    np.testing.assert_allclose(float(graph(labels.astype(np.float32), x)), float(expected),
                               rtol=1e-6)


def test_margin_loss_sampling_probabilities_match_reference():
    labels, x, _ = CASES["3x4_unit"]
    positive_negative = M._pair_masks(tf.constant(labels))
    from tfembed import ops

    logits = M._distance_weighted_logits(
        positive_negative[1], ops.pairwise_distances(tf.constant(x)), float(DIM), 0.5, 1.4
    )
    probs = tf.nn.softmax(logits, axis=1).numpy()
    np.testing.assert_allclose(probs, ref_sampling_probabilities(list(labels), x, 0.5, 1.4),
                               rtol=1e-4, atol=1e-7)


def test_distance_weighted_sampling_frequencies():
    # Tighter clusters than random unit vectors, so the weights are far from uniform.
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 4).astype(np.int32)
    centers = rng.normal(size=(3, DIM))
    x = centers[labels] + 0.6 * rng.normal(size=(12, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    expected = ref_sampling_probabilities(list(labels), x, 0.5, 1.4)
    assert expected.max() > 0.4  # the test would be weak on near-uniform weights

    @tf.function
    def draw(seed):
        return M.distance_weighted_negatives(labels, x, seed=seed)

    counts = np.zeros((12, 12))
    rounds = 250
    for r in range(rounds):
        idx = draw(tf.constant([r, 7])).numpy()
        for a in range(12):
            counts[a] += np.bincount(idx[a], minlength=12)
    freq = counts / (rounds * 12)
    assert np.all(freq[expected == 0.0] == 0.0)  # never a positive or a far negative
    np.testing.assert_allclose(freq, expected, atol=0.04)


def test_distance_weighted_sampling_stateless_and_stateful_seeds():
    labels, x, _ = CASES["3x4_unit"]
    a = M.distance_weighted_negatives(labels, x, seed=[4, 2]).numpy()
    b = M.distance_weighted_negatives(labels, x, seed=tf.constant([4, 2])).numpy()
    np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(11)
    c = M.distance_weighted_negatives(labels, x).numpy()
    keras.utils.set_random_seed(11)
    d = M.distance_weighted_negatives(labels, x).numpy()
    np.testing.assert_array_equal(c, d)
    for idx in (a, c):
        assert np.all(labels[idx] != labels[:, None])


def test_proxy_nca_excludes_the_true_proxy_from_the_denominator():
    # x on its own proxy (d=0), the other proxy opposite (d=4 on unit vectors):
    # -log(exp(0) / exp(-4)) = -4 (with the true class in the denominator it would be ~0.018).
    proxies = tf.constant([[1.0, 0.0], [-1.0, 0.0]])
    x = tf.constant([[2.0, 0.0]])  # normalised inside
    assert float(M.proxy_nca_loss(tf.constant([0]), x, proxies)) == pytest.approx(-4.0)
    assert float(M.proxy_nca_loss(tf.constant([0]), x, proxies, scale=0.5)) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="at least 2"):
        M.proxy_nca_loss(tf.constant([0]), x, proxies[:1])


def test_binomial_deviance_averages_positives_and_negatives_separately():
    x = _circle([0.0, 60.0, 90.0])
    labels = tf.constant([0, 0, 1])
    c = lambda deg: math.cos(math.radians(deg))  # noqa: E731
    pos = math.log1p(math.exp(-2 * (c(60) - 0.5)))  # both ordered positive pairs are equal
    neg = (2 * math.log1p(math.exp(2 * 25 * (c(90) - 0.5)))
           + 2 * math.log1p(math.exp(2 * 25 * (c(30) - 0.5)))) / 4
    got = M.binomial_deviance_loss(labels, x)
    assert float(got) == pytest.approx(pos + neg, rel=1e-5)


def test_arcface_margin_and_easy_margin_branch():
    centers = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    m, s = 0.5, 4.0
    for deg in (30.0, 170.0):  # 170 deg + 0.5 rad > 180 deg: the linear fallback
        theta = math.radians(deg)
        if theta + m < math.pi:
            target = math.cos(theta + m)
        else:
            target = math.cos(theta) - math.sin(math.pi - m) * m
        other = math.cos(math.radians(90.0 - deg))
        expected = -s * target + math.log(math.exp(s * target) + math.exp(s * other))
        got = M.arcface_loss(tf.constant([0]), _circle([deg]), centers, scale=s, margin=m)
        assert float(got) == pytest.approx(expected, rel=1e-5), deg
    # the margin makes the loss larger than the plain softmax of the same cosines
    plain = M.arcface_loss(tf.constant([0]), _circle([30.0]), centers, scale=s, margin=0.0)
    assert float(plain) < float(
        M.arcface_loss(tf.constant([0]), _circle([30.0]), centers, scale=s, margin=m)
    )


# ------------------------------------------------------------------------------------------------
# Keras Loss classes
# ------------------------------------------------------------------------------------------------

LOSS_OBJECTS = {
    "triplet": (lambda: M.TripletSemiHardLoss(margin=0.3), M.triplet_semihard_loss,
                dict(margin=0.3)),
    "triplet_hard": (lambda: M.TripletHardLoss(margin=0.3), M.triplet_hard_loss,
                     dict(margin=0.3)),
    "triplet_batch_hard": (lambda: M.TripletBatchHardLoss(margin=0.3),
                           M.triplet_batch_hard_loss, dict(margin=0.3)),
    "ms": (lambda: M.MultiSimilarityLoss(alpha=1.5, beta=40.0, base=0.4, epsilon=0.05),
           M.multi_similarity_loss, dict(alpha=1.5, beta=40.0, base=0.4, epsilon=0.05)),
    "contrastive": (lambda: M.ContrastiveLoss(margin=0.7), M.contrastive_loss, dict(margin=0.7)),
    "contrastive_pairs": (lambda: M.ContrastivePairsLoss(margin=0.7), M.contrastive_pairs_loss,
                          dict(margin=0.7)),
    "triplet_dw": (lambda: M.TripletDistanceWeightedLoss(margin=0.3, seed=4),
                   M.triplet_distance_weighted_loss, None),
    "margin": (lambda: M.MarginLoss(margin=0.1, beta=1.0, nu=0.01, cutoff=0.4,
                                    nonzero_loss_cutoff=1.3, seed=5),
               M.margin_loss, None),
    "binomial": (lambda: M.BinomialDevianceLoss(alpha=1.0, beta=0.3, cost_negative=10.0),
                 M.binomial_deviance_loss, dict(alpha=1.0, beta=0.3, cost_negative=10.0)),
}


@pytest.mark.parametrize("key", sorted(LOSS_OBJECTS))
def test_loss_class_matches_function_and_roundtrips(key):
    make, fn, hyper = LOSS_OBJECTS[key]
    loss = make()
    labels, x, _ = CASES["3x4_unit"]
    if hyper is not None:  # the margin loss samples, its value is covered above
        expected = float(fn(labels, x, **hyper))
        got = float(loss(tf.constant(labels, tf.float32), tf.constant(x)))
        assert got == pytest.approx(expected, rel=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    assert restored.fn is fn
    if hyper is not None:
        for k, v in hyper.items():
            assert restored.get_config()[k] == v


@pytest.mark.parametrize("key", sorted(LOSS_OBJECTS))
def test_loss_class_compile_fit(key):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = np.repeat(np.arange(4), 8).astype(np.int32)
    rng.shuffle(y)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(DIM), keras.layers.UnitNormalization()]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=LOSS_OBJECTS[key][0]())
    before = model.get_weights()[0].copy()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, model.get_weights()[0])


def test_triplet_batch_hard_by_recipe_name():
    from tfembed.losses import get_loss

    loss = get_loss("triplet_batch_hard")
    assert isinstance(loss, M.TripletBatchHardLoss) and loss.get_config()["margin"] == 0.0
    assert get_loss("triplet_batch_hard", margin=0.2).get_config()["margin"] == 0.2


def test_compiled_model_save_and_load(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(DIM)])
    model.compile(optimizer="sgd", loss=M.TripletSemiHardLoss(margin=0.25))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.loss, M.TripletSemiHardLoss)
    assert restored.loss.get_config()["margin"] == 0.25


def test_margin_loss_rejects_a_fixed_stateless_seed():
    with pytest.raises(ValueError, match="seed"):
        M.MarginLoss(seed=[1, 2])


# ------------------------------------------------------------------------------------------------
# Heads with class weights
# ------------------------------------------------------------------------------------------------

HEADS = {
    "proxy_nca": (lambda: M.ProxyNCAHead(4, scale=3.0),
                  lambda head, l, x: M.proxy_nca_loss(l, x, head.proxies, scale=3.0)),
    "arcface": (lambda: M.ArcFaceHead(4, scale=16.0, margin=0.3),
                lambda head, l, x: M.arcface_loss(l, x, head.centers, scale=16.0, margin=0.3)),
}


@pytest.mark.parametrize("key", sorted(HEADS))
def test_head_owns_a_trainable_weight(key):
    make, pure = HEADS[key]
    head = make()
    labels, x, _ = CASES["3x4_unit"]
    labels, x = tf.constant(labels % 4), tf.constant(x)
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = head(xv, labels)
    assert len(head.trainable_weights) == 1 and tuple(head.trainable_weights[0].shape) == (4, DIM)
    assert float(loss) == pytest.approx(float(pure(head, labels, x)), rel=1e-6)
    grads = tape.gradient(loss, [xv] + head.trainable_weights)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)

    before = head.trainable_weights[0].numpy().copy()
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.apply_gradients(zip(grads[1:], head.trainable_weights))
    assert not np.allclose(before, head.trainable_weights[0].numpy())

    config = head.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(restored) is type(head) and restored.get_config() == config
    restored(x, labels)
    restored.set_weights(head.get_weights())
    assert float(restored(x, labels)) == pytest.approx(float(head(x, labels)), rel=1e-6)


@pytest.mark.parametrize("key", sorted(HEADS))
def test_head_in_tf_function_with_unknown_batch(key):
    head = HEADS[key][0]()
    labels, x, _ = CASES["random_labels_unit"]
    head(tf.constant(x), tf.constant(labels % 4))  # build

    @tf.function(input_signature=[tf.TensorSpec([None, DIM]), tf.TensorSpec([None], tf.int32)])
    def step(x, labels):
        return head(x, labels)

    np.testing.assert_allclose(float(step(x, labels % 4)),
                               float(head(tf.constant(x), tf.constant(labels % 4))), rtol=1e-6)
