"""Tests of the teacher → student losses: tfembed.losses.teacher, .features and .rank.

Each loss is checked against a brute-force float64 reference written with explicit loops straight
from its definition (no TensorFlow, no vectorisation, DarkRank's permutations enumerated by the
reference itself), on random batches and on one with a duplicated row. Then: finite gradients
where a square root or a power meets a zero distance, a frozen teacher, eager == tf.function with
an unknown batch, the shape errors, the semantics that tell the losses apart (rotation
invariance, T², rank order), and the Keras plumbing (config round trip, one ``fit`` step).
"""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed.losses import features as F
from tfembed.losses import rank as R
from tfembed.losses import teacher as T

RTOL = 1e-5
ATOL = 1e-6


# ------------------------------------------------------------------------------------------------
# Brute-force references (float64, loops)
# ------------------------------------------------------------------------------------------------


def _rows(x):
    return [[float(v) for v in row] for row in np.asarray(x, dtype=np.float64)]


def _dist(a, b):
    return math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))


def ref_absolute(t, s):
    t, s = _rows(t), _rows(s)
    return sum(_dist(s[i], t[i]) for i in range(len(t))) / len(t)


def ref_relative(t, s):
    t, s = _rows(t), _rows(s)
    n, total = len(t), 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += abs(_dist(s[i], s[j]) - _dist(t[i], t[j]))
    return total / (n * (n - 1))


def ref_direct_match(t, s):
    """004 Eq. 8 per query (a sum over its candidates), averaged over the queries."""
    t, s = _rows(t), _rows(s)
    n = len(t)
    per_query = []
    for i in range(n):  # query q = row i
        total = 0.0
        for j in range(n):  # candidates x_j, j != i
            if i != j:
                total += (_dist(s[j], s[i]) ** 2 - _dist(t[j], t[i]) ** 2) ** 2
        per_query.append(total)
    return sum(per_query) / n


def _softmax(row):
    mx = max(row)
    e = [math.exp(v - mx) for v in row]
    z = sum(e)
    return [v / z for v in e]


def ref_hinton(t, s, temperature):
    t, s = _rows(t), _rows(s)
    total = 0.0
    for ti, si in zip(t, s):
        p = _softmax([v / temperature for v in ti])
        q = _softmax([v / temperature for v in si])
        total += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
    return temperature**2 * total / len(t)


def ref_hint(t, s):
    t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)
    total = 0.0
    for b in range(t.shape[0]):
        tf_, sf_ = t[b].ravel().tolist(), s[b].ravel().tolist()
        total += math.sqrt(sum((u - v) ** 2 for u, v in zip(sf_, tf_)))
    return total / t.shape[0]


def _ref_attention(f):
    """Per sample: [h*w] list of Σ_c F² divided by its L2 norm (zeros stay zeros)."""
    f = np.asarray(f, np.float64)
    maps = []
    for b in range(f.shape[0]):
        a = []
        for h in range(f.shape[1]):
            for w in range(f.shape[2]):
                a.append(sum(float(f[b, h, w, c]) ** 2 for c in range(f.shape[3])))
        norm = math.sqrt(sum(v * v for v in a))
        maps.append([v / norm if norm > 0 else 0.0 for v in a])
    return maps


def ref_attention_transfer(t, s):
    at, as_ = _ref_attention(t), _ref_attention(s)
    total = 0.0
    for a, b in zip(at, as_):
        total += math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))
    return total / len(at)


def _ref_lists(x, alpha, beta):
    """For each query i: [(j, score)] over candidates j != i in index order."""
    x = _rows(x)
    return [[(j, -alpha * _dist(x[i], x[j]) ** beta) for j in range(len(x)) if j != i]
            for i in range(len(x))]


def _ref_pl_log_prob(scores_in_rank_order):
    """Plackett–Luce log-probability, rank by rank."""
    total = 0.0
    for r in range(len(scores_in_rank_order)):
        rest = scores_in_rank_order[r:]
        total += scores_in_rank_order[r] - math.log(sum(math.exp(v) for v in rest))
    return total


def ref_darkrank_hard(t, s, alpha=3.0, beta=3.0):
    t_lists, s_lists = _ref_lists(t, alpha, beta), _ref_lists(s, alpha, beta)
    total = 0.0
    for tl, sl in zip(t_lists, s_lists):
        # Python's sort is stable: tied teacher scores keep index order.
        order = sorted(range(len(tl)), key=lambda k: -tl[k][1])
        total += -_ref_pl_log_prob([sl[k][1] for k in order])
    return total / len(t_lists)


def ref_darkrank_soft(t, s, alpha=3.0, beta=3.0):
    t_lists, s_lists = _ref_lists(t, alpha, beta), _ref_lists(s, alpha, beta)
    total = 0.0
    for tl, sl in zip(t_lists, s_lists):
        kl = 0.0
        for perm in itertools.permutations(range(len(tl))):
            log_pt = _ref_pl_log_prob([tl[k][1] for k in perm])
            log_ps = _ref_pl_log_prob([sl[k][1] for k in perm])
            kl += math.exp(log_pt) * (log_pt - log_ps)
        total += kl
    return total / len(t_lists)


def ref_large_margin_softmax(labels, x, w, margin, lam=0.0):
    x, w = _rows(x), _rows(w)
    total = 0.0
    for i, y in enumerate(labels):
        xn = math.sqrt(sum(v * v for v in x[i]))
        logits = []
        for c in range(len(w)):
            wn = math.sqrt(sum(v * v for v in w[c]))
            dot = sum(a * b for a, b in zip(x[i], w[c]))
            if c != y:
                logits.append(dot)
                continue
            cos = max(-1.0, min(1.0, dot / (xn * wn)))
            theta = math.acos(cos)
            k = min(int(theta * margin / math.pi), margin - 1)
            psi = (-1) ** k * math.cos(margin * theta) - 2 * k
            logits.append(xn * wn * (lam * cos + psi) / (1 + lam))
        mx = max(logits)
        lse = mx + math.log(sum(math.exp(v - mx) for v in logits))
        total += lse - logits[y]
    return total / len(labels)


def ref_verification(labels, x, w, b):
    x = _rows(x)
    w = [float(v) for v in np.asarray(w, np.float64)]
    n, total = len(x), 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            z = sum(wd * (x[i][d] - x[j][d]) ** 2 for d, wd in enumerate(w)) + b
            y = 1.0 if labels[i] == labels[j] else 0.0
            p = 1.0 / (1.0 + math.exp(-z))
            total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / (n * (n - 1))


def ref_contrastive_verification(labels, x, margin):
    """Per ordered pair: ½d² if same label, else max(0, m − ½d²); mean over pairs."""
    x = _rows(x)
    n, total = len(x), 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            h = 0.5 * _dist(x[i], x[j]) ** 2
            total += h if labels[i] == labels[j] else max(0.0, margin - h)
    return total / (n * (n - 1))


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _pair(rng, n, dim_t=6, dim_s=6, duplicate=False, unit=False):
    if duplicate:
        # The same image twice in a batch: both models see two identical rows. The rows are on a
        # grid of multiples of 1/8, where float32 distances are exact: the |a|² − 2ab + |b|²
        # expansion of tfembed.ops otherwise leaves ~sqrt(eps32·|a|²) ≈ 5e-4 instead of the 0
        # the definitions give for the duplicated pair, which the references would see.
        t = (rng.integers(-4, 5, size=(n, dim_t)) / 8.0).astype(np.float32)
        s = (rng.integers(-4, 5, size=(n, dim_s)) / 8.0).astype(np.float32)
        t[3], s[3] = t[1], s[1]
        return t, s
    t = rng.normal(size=(n, dim_t)).astype(np.float32)
    s = rng.normal(size=(n, dim_s)).astype(np.float32)
    if unit:
        t, s = _unit(t), _unit(s)
    return t, s


CASES = [
    pytest.param(dict(n=5), id="b5"),
    pytest.param(dict(n=9, dim_s=4), id="b9"),
    pytest.param(dict(n=7, duplicate=True), id="b7-duplicate"),
]


# ------------------------------------------------------------------------------------------------
# Values against the references
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_embedding_losses_match_reference(rng, case):
    t, s = _pair(rng, **case)
    np.testing.assert_allclose(T.relative_teacher_loss(t, s), ref_relative(t, s), RTOL, ATOL)
    np.testing.assert_allclose(T.direct_match_loss(t, s), ref_direct_match(t, s), RTOL, ATOL)
    if t.shape == s.shape:
        np.testing.assert_allclose(T.absolute_teacher_loss(t, s), ref_absolute(t, s), RTOL, ATOL)


def test_direct_match_sums_over_candidates(rng):
    """Eq. 8 sums over a query's B − 1 candidates: B − 1 times the per-pair mean (DESIGN §4), so
    doubling the list doubles the loss of a list of equal terms."""
    for n in (2, 5, 8):
        t, s = _pair(rng, n)
        d2_t = ((t[:, None] - t[None]) ** 2).sum(-1)
        d2_s = ((s[:, None] - s[None]) ** 2).sum(-1)
        off = ~np.eye(n, dtype=bool)
        per_pair_mean = ((d2_s - d2_t) ** 2)[off].mean()
        np.testing.assert_allclose(T.direct_match_loss(t, s), (n - 1) * per_pair_mean, 1e-5)
    assert float(T.direct_match_loss(t[:1], s[:1])) == 0.0


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_hinton_kd_matches_reference(rng, temperature):
    t = rng.normal(scale=3.0, size=(6, 10)).astype(np.float32)
    s = rng.normal(scale=3.0, size=(6, 10)).astype(np.float32)
    np.testing.assert_allclose(T.hinton_kd_loss(t, s, temperature=temperature),
                               ref_hinton(t, s, temperature), RTOL, ATOL)


def test_feature_losses_match_reference(rng):
    t = rng.normal(size=(5, 3, 4, 6)).astype(np.float32)
    s = rng.normal(size=(5, 3, 4, 6)).astype(np.float32)
    s[2] = t[2]  # a sample the student already matches
    np.testing.assert_allclose(F.hint_loss(t, s), ref_hint(t, s), RTOL, ATOL)
    np.testing.assert_allclose(F.attention_transfer_loss(t, s), ref_attention_transfer(t, s),
                               RTOL, ATOL)


def test_attention_transfer_different_channels_and_dead_map(rng):
    t = rng.normal(size=(4, 3, 3, 8)).astype(np.float32)
    s = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
    s[1] = 0.0  # all-zero student map (dead ReLUs): normalises to zeros, not NaN
    loss = F.attention_transfer_loss(t, s)
    np.testing.assert_allclose(loss, ref_attention_transfer(t, s), RTOL, ATOL)
    # Scaling a map changes nothing after the normalisation.
    np.testing.assert_allclose(F.attention_transfer_loss(3.0 * t, s), loss, RTOL, ATOL)


@pytest.mark.parametrize("case", CASES)
def test_darkrank_hard_matches_reference(rng, case):
    t, s = _pair(rng, unit=True, **case)
    np.testing.assert_allclose(R.darkrank_hard_loss(t, s), ref_darkrank_hard(t, s), RTOL, ATOL)
    np.testing.assert_allclose(R.darkrank_hard_loss(t, s, alpha=1.5, beta=1.0),
                               ref_darkrank_hard(t, s, 1.5, 1.0), RTOL, ATOL)


@pytest.mark.parametrize("case", [dict(n=5), dict(n=5, duplicate=True, dim_s=3)],
                         ids=["b5", "b5-duplicate"])
def test_darkrank_soft_matches_reference(rng, case):
    t, s = _pair(rng, unit=True, **case)
    np.testing.assert_allclose(R.darkrank_soft_loss(t, s), ref_darkrank_soft(t, s), RTOL, ATOL)
    np.testing.assert_allclose(R.darkrank_soft_loss(t, s, alpha=2.0, beta=2.0),
                               ref_darkrank_soft(t, s, 2.0, 2.0), RTOL, ATOL)


def test_darkrank_soft_batch_limit():
    limit = R.DARKRANK_SOFT_MAX_BATCH
    ok = tf.math.l2_normalize(tf.random.stateless_normal([limit, 4], seed=[1, 2]), axis=1)
    assert np.isfinite(R.darkrank_soft_loss(ok, ok[::-1]).numpy())
    big = tf.zeros([limit + 1, 4])
    with pytest.raises(ValueError, match=f"DARKRANK_SOFT_MAX_BATCH={limit}"):
        R.darkrank_soft_loss(big, big)
    spec = tf.TensorSpec([None, 4], tf.float32)
    fn = tf.function(R.darkrank_soft_loss, input_signature=[spec, spec])
    with pytest.raises(ValueError, match="static"):
        fn.get_concrete_function()


# ------------------------------------------------------------------------------------------------
# Gradients: finite at zero distances, none for the teacher
# ------------------------------------------------------------------------------------------------


def _dup_rows(rng, n=6, dim=5):
    x = _unit(rng.normal(size=(n, dim)))
    x[4] = x[0]
    return x


def _grad_cases(rng):
    dup = _dup_rows(rng)
    other = _dup_rows(rng)
    maps = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    dead = maps.copy()
    dead[0] = 0.0
    return [
        ("absolute s==t", T.absolute_teacher_loss, dup, dup.copy()),
        ("relative duplicates", T.relative_teacher_loss, other, dup),
        ("relative s==t", T.relative_teacher_loss, dup, dup.copy()),
        ("direct_match duplicates", T.direct_match_loss, other, dup),
        ("hinton s==t", T.hinton_kd_loss, dup, dup.copy()),
        ("hint s==t", F.hint_loss, maps, maps.copy()),
        ("attention s==t", F.attention_transfer_loss, maps, maps.copy()),
        ("attention dead map", F.attention_transfer_loss, maps, dead),
        ("darkrank_hard duplicates", R.darkrank_hard_loss, other, dup),
        ("darkrank_hard beta<2", lambda t, s: R.darkrank_hard_loss(t, s, beta=1.0), dup, dup),
        ("darkrank_soft duplicates", R.darkrank_soft_loss, dup, dup.copy()),
        ("darkrank_soft beta<2", lambda t, s: R.darkrank_soft_loss(t, s, beta=0.5), other, dup),
    ]


def test_gradients_finite_and_teacher_frozen(rng):
    for name, fn, t, s in _grad_cases(rng):
        teacher = tf.Variable(t)
        student = tf.Variable(s)
        with tf.GradientTape(persistent=True) as tape:
            loss = fn(teacher, student)
        g_student = tape.gradient(loss, student)
        g_teacher = tape.gradient(loss, teacher)
        assert np.isfinite(loss.numpy()), name
        assert g_student is not None and np.all(np.isfinite(g_student.numpy())), name
        assert g_teacher is None, name


def test_zero_loss_at_match_has_zero_gradient(rng):
    x = _dup_rows(rng)
    student = tf.Variable(x)
    for fn in (T.absolute_teacher_loss, T.relative_teacher_loss, T.direct_match_loss,
               T.hinton_kd_loss, R.darkrank_soft_loss):
        with tf.GradientTape() as tape:
            loss = fn(tf.constant(x), student)
        np.testing.assert_allclose(loss, 0.0, atol=1e-6)
        np.testing.assert_allclose(tape.gradient(loss, student), 0.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Eager vs tf.function (unknown batch)
# ------------------------------------------------------------------------------------------------


def test_eager_equals_tf_function_with_unknown_batch(rng):
    t, s = _pair(rng, 7, dim_t=6, dim_s=6, duplicate=True, unit=True)
    emb = tf.TensorSpec([None, 6], tf.float32)
    for fn in (T.absolute_teacher_loss, T.relative_teacher_loss, T.direct_match_loss,
               T.hinton_kd_loss, R.darkrank_hard_loss):
        graph_fn = tf.function(fn, input_signature=[emb, emb])
        np.testing.assert_allclose(graph_fn(t, s), fn(t, s), RTOL, ATOL, err_msg=fn.__name__)
    ft = rng.normal(size=(3, 4, 4, 6)).astype(np.float32)
    fs = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    graph_at = tf.function(F.attention_transfer_loss,
                           input_signature=[tf.TensorSpec([None, 4, 4, 6]),
                                            tf.TensorSpec([None, None, None, 2])])
    np.testing.assert_allclose(graph_at(ft, fs), F.attention_transfer_loss(ft, fs), RTOL, ATOL)
    spec = tf.TensorSpec([None, 4, 4, 6])
    graph_hint = tf.function(F.hint_loss, input_signature=[spec, spec])
    np.testing.assert_allclose(graph_hint(ft, ft[::-1]), F.hint_loss(ft, ft[::-1]), RTOL, ATOL)
    # The soft loss needs a static batch; a tf.function with a known one agrees with eager.
    graph_soft = tf.function(R.darkrank_soft_loss)
    np.testing.assert_allclose(graph_soft(t, s), R.darkrank_soft_loss(t, s), RTOL, ATOL)


# ------------------------------------------------------------------------------------------------
# Shape errors
# ------------------------------------------------------------------------------------------------


def test_hint_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as err:
        F.hint_loss(tf.zeros([2, 4, 4, 8]), tf.zeros([2, 4, 4, 3]))
    assert "(2, 4, 4, 8)" in str(err.value) and "(2, 4, 4, 3)" in str(err.value)


def test_attention_spatial_mismatch_errors():
    with pytest.raises(ValueError, match="spatial"):
        F.attention_transfer_loss(tf.zeros([2, 4, 4, 8]), tf.zeros([2, 2, 2, 8]))
    with pytest.raises(ValueError, match="channels last"):
        F.attention_transfer_loss(tf.zeros([2, 8]), tf.zeros([2, 8]))


def test_embedding_shape_errors():
    with pytest.raises(ValueError, match="last dimensions"):
        T.absolute_teacher_loss(tf.zeros([4, 8]), tf.zeros([4, 3]))
    with pytest.raises(ValueError, match="batch sizes"):
        T.relative_teacher_loss(tf.zeros([4, 8]), tf.zeros([5, 8]))
    with pytest.raises(ValueError, match="batch sizes"):
        R.darkrank_hard_loss(tf.zeros([4, 8]), tf.zeros([5, 8]))
    with pytest.raises(ValueError, match="temperature"):
        T.hinton_kd_loss(tf.zeros([4, 8]), tf.zeros([4, 8]), temperature=0.0)


# ------------------------------------------------------------------------------------------------
# Semantics
# ------------------------------------------------------------------------------------------------


def test_relative_is_rotation_invariant_absolute_is_not(rng):
    t, s = _pair(rng, 8, dim_t=5, dim_s=5)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    rotated = (s @ q + 0.3).astype(np.float32)  # a rigid motion of the student
    np.testing.assert_allclose(T.relative_teacher_loss(t, rotated),
                               T.relative_teacher_loss(t, s), rtol=1e-4)
    np.testing.assert_allclose(T.relative_teacher_loss(t, (t @ q).astype(np.float32)), 0.0,
                               atol=1e-5)
    assert abs(float(T.absolute_teacher_loss(t, rotated) - T.absolute_teacher_loss(t, s))) > 1e-2


def test_hinton_kd_zero_for_equal_logits_and_t_squared_scaling(rng):
    t = rng.normal(scale=2.0, size=(5, 7)).astype(np.float32)
    s = rng.normal(scale=2.0, size=(5, 7)).astype(np.float32)
    assert float(T.hinton_kd_loss(t, t, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    # The T² factor: loss(T) = T² · KL at temperature T.
    np.testing.assert_allclose(T.hinton_kd_loss(t, s, temperature=4.0),
                               16.0 * T.hinton_kd_loss(t / 4.0, s / 4.0, temperature=1.0), 1e-5)
    # ... which makes it approach ½·mean_i Var_c(t_i − s_i) for large T instead of vanishing.
    d = (t - s).astype(np.float64)
    limit = 0.5 * np.mean(np.var(d, axis=1))
    np.testing.assert_allclose(T.hinton_kd_loss(t, s, temperature=200.0), limit, rtol=2e-2)


def test_darkrank_hard_prefers_teacher_order():
    teacher = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]], np.float32) / 4.0
    same_order = teacher * 1.5  # distances differ, every query's ranking is the teacher's
    reversed_order = np.array([[0.0], [4.0], [3.0], [2.0], [1.0]], np.float32) / 4.0
    matched = float(R.darkrank_hard_loss(teacher, same_order))
    flipped = float(R.darkrank_hard_loss(teacher, reversed_order))
    assert matched < flipped
    # Same scale, same order vs same scale, reversed order.
    assert float(R.darkrank_hard_loss(teacher, teacher)) < flipped
    # The soft loss agrees, and is exactly 0 when the student is the teacher.
    assert float(R.darkrank_soft_loss(teacher, same_order)) < float(
        R.darkrank_soft_loss(teacher, reversed_order))
    assert float(R.darkrank_soft_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_darkrank_scores_layout():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)
    scores = R.darkrank_scores(x, alpha=2.0, beta=2.0).numpy()
    # Row i: candidates j != i in index order, score −α d².
    np.testing.assert_allclose(scores, [[-2.0, -8.0], [-2.0, -10.0], [-8.0, -10.0]], 1e-6)


# ------------------------------------------------------------------------------------------------
# L-Softmax and verification (DarkRank's supervised companions)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("margin,lam", [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.5)])
def test_large_margin_softmax_matches_reference(rng, margin, lam):
    x = rng.normal(size=(8, 5)).astype(np.float32)
    w = rng.normal(size=(4, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    x[5] = 2.0 * w[1]  # θ_y = 0 exactly (cos = 1)
    x[6] = -w[2]  # θ_y = π
    loss = R.large_margin_softmax_loss(labels, x, w, margin=margin, lam=lam)
    np.testing.assert_allclose(loss, ref_large_margin_softmax(labels, x, w, margin, lam),
                               rtol=1e-5, atol=1e-5)


def test_large_margin_softmax_margin_one_is_softmax_and_margin_costs(rng):
    x = rng.normal(size=(6, 4)).astype(np.float32)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    plain = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, x @ w.T))
    np.testing.assert_allclose(R.large_margin_softmax_loss(labels, x, w, margin=1), plain, 1e-5)
    # ψ(θ) <= cos θ: a margin never makes the true class easier.
    assert float(R.large_margin_softmax_loss(labels, x, w, margin=3)) > float(plain)


def test_verification_matches_reference(rng):
    x = _unit(rng.normal(size=(7, 5)))
    x[4] = x[0]
    labels = np.array([0, 0, 1, 1, 0, 2, 2])
    w = rng.normal(size=(5,)).astype(np.float32)
    np.testing.assert_allclose(R.verification_loss(labels, x, w, 0.3),
                               ref_verification(labels, x, w, 0.3), RTOL, ATOL)
    np.testing.assert_allclose(R.verification_loss(labels, x, np.zeros(5, np.float32), 0.0),
                               math.log(2.0), RTOL)


@pytest.mark.parametrize("margin", [0.9, 0.3])
def test_contrastive_verification_matches_reference(rng, margin):
    x = _unit(rng.normal(size=(7, 5)))
    x[4] = x[0]   # a duplicated image: a positive pair at distance 0
    x[6] = x[2]   # and a negative pair at distance 0 (labels 1 and 2)
    labels = np.array([0, 0, 1, 1, 0, 2, 2])
    np.testing.assert_allclose(R.contrastive_verification_loss(labels, x, margin=margin),
                               ref_contrastive_verification(labels, x, margin), RTOL, ATOL)
    # Unnormalised rows too, and the identity with DESIGN §4's contrastive loss at margin 2m.
    y = rng.normal(size=(6, 3)).astype(np.float32)
    lab = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(R.contrastive_verification_loss(lab, y, margin=margin),
                               ref_contrastive_verification(lab, y, margin), RTOL, ATOL)
    from tfembed.losses.metric import contrastive_loss
    np.testing.assert_allclose(R.contrastive_verification_loss(lab, y, margin=margin),
                               0.5 * contrastive_loss(lab, y, margin=2 * margin), RTOL, ATOL)
    # Gradients finite with duplicated rows; the head's contrastive mode is the function.
    v = tf.Variable(x)
    head = R.VerificationHead(mode="contrastive", margin=margin)
    with tf.GradientTape() as tape:
        loss = head(v, labels)
    g = tape.gradient(loss, v)
    assert np.all(np.isfinite(g.numpy())) and head.trainable_weights == []
    np.testing.assert_allclose(loss, ref_contrastive_verification(labels, x, margin), RTOL, ATOL)
    assert float(R.contrastive_verification_loss(labels[:1], x[:1])) == 0.0
    clone = R.VerificationHead.from_config(head.get_config())
    assert clone.mode == "contrastive" and clone.margin == margin
    with pytest.raises(ValueError, match="mode"):
        R.VerificationHead(mode="hinge")


def test_heads_train_and_round_trip(rng):
    x = tf.Variable(_unit(rng.normal(size=(6, 4))))
    labels = tf.constant([0, 1, 2, 0, 1, 2])
    lsm = R.LargeMarginSoftmaxHead(num_classes=3, margin=3)
    ver = R.VerificationHead()
    with tf.GradientTape() as tape:
        loss = lsm(x, labels) + ver(x, labels)
    variables = [x] + lsm.trainable_variables + ver.trainable_variables
    assert len(variables) == 4
    for g in tape.gradient(loss, variables):
        assert g is not None and np.all(np.isfinite(g.numpy()))
    np.testing.assert_allclose(lsm(x, labels),
                               ref_large_margin_softmax(labels.numpy(), x.numpy(),
                                                        lsm.kernel.numpy(), 3), 1e-5, 1e-5)
    for head in (lsm, ver):
        clone = type(head).from_config(head.get_config())
        assert clone.get_config() == head.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(lsm))
    assert isinstance(restored, R.LargeMarginSoftmaxHead) and restored.margin == 3


# ------------------------------------------------------------------------------------------------
# Keras Loss classes
# ------------------------------------------------------------------------------------------------

LOSS_CLASSES = [
    (T.AbsoluteTeacherLoss, {}),
    (T.RelativeTeacherLoss, {}),
    (T.DirectMatchLoss, {}),
    (T.HintonKDLoss, {"temperature": 2.0}),
    (F.HintLoss, {}),
    (F.AttentionTransferLoss, {}),
    (R.DarkRankHardLoss, {"alpha": 2.0, "beta": 1.5}),
    (R.DarkRankSoftLoss, {"alpha": 1.0, "beta": 2.0}),
]


def test_loss_classes_config_round_trip(rng):
    t, s = _pair(rng, 6, unit=True)
    for cls, kwargs in LOSS_CLASSES:
        loss = cls(**kwargs)
        clone = cls.from_config(loss.get_config())
        assert clone.get_config() == loss.get_config(), cls.__name__
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is cls and restored.get_config() == loss.get_config()
        if cls not in (F.HintLoss, F.AttentionTransferLoss):
            fn_value = loss.fn(t, s, **kwargs)
            np.testing.assert_allclose(loss(t, s), fn_value, RTOL, ATOL, err_msg=cls.__name__)


def _fit_one_step(model, loss, x, y, batch):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(data, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


@pytest.mark.parametrize("cls,kwargs", LOSS_CLASSES, ids=[c.__name__ for c, _ in LOSS_CLASSES])
def test_fit_step_with_loss_class(rng, cls, kwargs):
    keras.utils.set_random_seed(0)
    batch = 8
    if cls in (F.HintLoss, F.AttentionTransferLoss):
        x = rng.normal(size=(batch, 4, 4, 3)).astype(np.float32)
        y = rng.normal(size=(batch, 4, 4, 6 if cls is F.HintLoss else 2)).astype(np.float32)
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(6, 1)])
    else:
        x = rng.normal(size=(batch, 5)).astype(np.float32)
        y = _unit(rng.normal(size=(batch, 4)))  # the teacher's embeddings / logits
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    _fit_one_step(model, cls(**kwargs), x, y, batch)


# ------------------------------------------------------------------------------------------------
# aggregation="frobenius": the authors' reductions (yulu0724/EmbeddingDistillation)
# ------------------------------------------------------------------------------------------------


def ref_absolute_frobenius(t, s):
    t, s = _rows(t), _rows(s)
    return math.sqrt(sum(_dist(s[i], t[i]) ** 2 for i in range(len(t))))


def ref_relative_frobenius(t, s):
    t, s = _rows(t), _rows(s)
    n, total = len(t), 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += (_dist(s[i], s[j]) - _dist(t[i], t[j])) ** 2
    return math.sqrt(total)


def ref_relative_authors_style(t, s):
    """The relative loss computed the way the authors' code builds it (numpy, float64): the
    distance matrix from the |x|² + |y|² − 2xy expansion clamped at 1e-12 before the root (so the
    diagonal holds 1e-6, not 0), then the 2-norm of the whole flattened difference, diagonal
    included, no division by the batch size."""
    def dist(x):
        x = np.asarray(x, np.float64)
        sq = np.sum(x * x, axis=1)
        return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 1e-12))

    return float(np.sqrt(np.sum((dist(s) - dist(t)) ** 2)))


@pytest.mark.parametrize("case", CASES)
def test_frobenius_aggregation_matches_reference(rng, case):
    t, s = _pair(rng, **case)
    np.testing.assert_allclose(T.relative_teacher_loss(t, s, aggregation="frobenius"),
                               ref_relative_frobenius(t, s), RTOL, ATOL)
    np.testing.assert_allclose(T.relative_teacher_loss(t, s, aggregation="frobenius"),
                               ref_relative_authors_style(t, s), 1e-4, 1e-5)
    # The default is unchanged by the new argument.
    np.testing.assert_allclose(T.relative_teacher_loss(t, s, aggregation="mean"),
                               ref_relative(t, s), RTOL, ATOL)
    if t.shape == s.shape:
        np.testing.assert_allclose(T.absolute_teacher_loss(t, s, aggregation="frobenius"),
                                   ref_absolute_frobenius(t, s), RTOL, ATOL)
        np.testing.assert_allclose(T.absolute_teacher_loss(t, s, aggregation="mean"),
                                   ref_absolute(t, s), RTOL, ATOL)


def test_frobenius_scale_against_the_mean():
    """Equal errors on every pair: the Frobenius norm is sqrt(B (B − 1)) times the mean, the
    factor by which the authors' λ differs from one for DESIGN §4's mean."""
    for n in (3, 5):
        t = np.eye(n, dtype=np.float32)             # a regular simplex: all distances sqrt(2)
        s = 2.0 * t                                 # all distances 2·sqrt(2): |ΔD| = sqrt(2)
        mean = float(T.relative_teacher_loss(t, s))
        frob = float(T.relative_teacher_loss(t, s, aggregation="frobenius"))
        np.testing.assert_allclose(mean, math.sqrt(2.0), RTOL)
        np.testing.assert_allclose(frob, math.sqrt(n * (n - 1)) * mean, RTOL)


def test_frobenius_gradients_finite_with_duplicates_and_zero_at_match(rng):
    dup, other = _dup_rows(rng), _dup_rows(rng)
    cases = [
        ("relative frobenius duplicates", T.relative_teacher_loss, other, dup),
        ("relative frobenius s==t", T.relative_teacher_loss, dup, dup.copy()),
        ("absolute frobenius s==t", T.absolute_teacher_loss, dup, dup.copy()),
        ("absolute frobenius duplicates", T.absolute_teacher_loss, other, dup),
    ]
    for name, fn, t, s in cases:
        teacher, student = tf.Variable(t), tf.Variable(s)
        with tf.GradientTape(persistent=True) as tape:
            loss = fn(teacher, student, aggregation="frobenius")
        g = tape.gradient(loss, student)
        assert np.isfinite(loss.numpy()), name
        assert g is not None and np.all(np.isfinite(g.numpy())), name
        assert tape.gradient(loss, teacher) is None, name
        if "s==t" in name:
            np.testing.assert_allclose(loss, 0.0, atol=1e-6, err_msg=name)
            np.testing.assert_allclose(g, 0.0, atol=1e-5, err_msg=name)


def test_frobenius_tiny_batches_and_unknown_batch(rng):
    one = tf.constant([[1.0, 2.0]])
    assert float(T.relative_teacher_loss(one, one + 1.0, aggregation="frobenius")) == 0.0
    t, s = _pair(rng, 7, duplicate=True)
    spec = tf.TensorSpec([None, 6], tf.float32)
    for fn in (T.absolute_teacher_loss, T.relative_teacher_loss):
        graph = tf.function(lambda a, b, fn=fn: fn(a, b, aggregation="frobenius"),
                            input_signature=[spec, spec])
        np.testing.assert_allclose(graph(t, s), fn(t, s, aggregation="frobenius"), RTOL, ATOL)


def test_unknown_aggregation_is_a_clear_error():
    x = tf.zeros([3, 2])
    with pytest.raises(ValueError, match="aggregation must be one of mean, frobenius"):
        T.relative_teacher_loss(x, x, aggregation="frobenious")
    with pytest.raises(ValueError, match="aggregation"):
        T.absolute_teacher_loss(x, x, aggregation="sum")
    with pytest.raises(ValueError, match="RelativeTeacherLoss: aggregation"):
        T.RelativeTeacherLoss(aggregation="Frobenius")


@pytest.mark.parametrize("cls", [T.AbsoluteTeacherLoss, T.RelativeTeacherLoss])
def test_aggregation_survives_serialization_and_fits(rng, cls):
    t, s = _pair(rng, 6, unit=True)
    loss = cls(aggregation="frobenius")
    assert loss.get_config()["aggregation"] == "frobenius"
    assert cls().get_config()["aggregation"] == "mean"
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(t, s), loss.fn(t, s, aggregation="frobenius"), RTOL, ATOL)
    from tfembed.losses import get_loss

    name = "absolute_teacher" if cls is T.AbsoluteTeacherLoss else "relative_teacher"
    assert get_loss(name, aggregation="frobenius").get_config() == loss.get_config()
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    y = _unit(rng.normal(size=(8, 4)))
    _fit_one_step(keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)]), loss, x, y, 8)
