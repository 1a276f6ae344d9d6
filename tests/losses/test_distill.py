"""tfembed.losses.distill against brute-force float64 references written from DESIGN §4."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed import ops
from tfembed.losses import distill as D

RTOL, ATOL = 1e-5, 1e-6
DIM_T, DIM_S = 8, 5


# ------------------------------------------------------------------------------------------------
# Brute-force references (float64, explicit loops, straight from the definitions)
# ------------------------------------------------------------------------------------------------


def _row(value, n):
    value = np.asarray(value, np.float64)
    return np.full(n, float(value)) if value.ndim == 0 else value


def ref_neighbour_probs(x, sigma):
    """Rows of p_ij = softmax_{j != i}(-|x_i - x_j|^2 / (2 sigma_i^2)); p_ii = 0."""
    x = np.asarray(x, np.float64)
    n = len(x)
    sigma = _row(sigma, n)
    p = np.zeros((n, n))
    for i in range(n):
        logits = {}
        for j in range(n):
            if j != i:
                logits[j] = -np.sum((x[i] - x[j]) ** 2) / (2.0 * sigma[i] ** 2)
        top = max(logits.values())
        norm = sum(math.exp(v - top) for v in logits.values())
        for j, v in logits.items():
            p[i, j] = math.exp(v - top) / norm
    return p


def ref_snd(teacher, student, sigma, student_sigma=None):
    n = len(teacher)
    student_sigma = sigma if student_sigma is None else student_sigma
    p = ref_neighbour_probs(teacher, sigma)
    q = ref_neighbour_probs(student, student_sigma)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if j != i and p[i, j] > 0:
                total += p[i, j] * (math.log(p[i, j]) - math.log(q[i, j]))
    return total / n


def ref_huber(x, delta):
    return 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)


def _ref_normalised_distances(x):
    x = np.asarray(x, np.float64)
    n = len(x)
    d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(n)] for i in range(n)])
    mean = sum(d[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return d / mean


def ref_rkd_distance(teacher, student, delta=1.0):
    n = len(teacher)
    dt, ds = _ref_normalised_distances(teacher), _ref_normalised_distances(student)
    terms = [ref_huber(ds[i, j] - dt[i, j], delta) for i in range(n) for j in range(n) if i != j]
    return sum(terms) / len(terms)


def _ref_unit(x, i, j):
    v = x[i] - x[j]
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else np.zeros_like(v)  # coinciding rows: no direction


def ref_rkd_angle(teacher, student, delta=1.0):
    t, s = np.asarray(teacher, np.float64), np.asarray(student, np.float64)
    n = len(t)
    terms = []
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if i == j or k == j:
                    continue
                cos_t = np.dot(_ref_unit(t, i, j), _ref_unit(t, k, j))
                cos_s = np.dot(_ref_unit(s, i, j), _ref_unit(s, k, j))
                terms.append(ref_huber(cos_s - cos_t, delta))
    return sum(terms) / len(terms)


def ref_perplexity(p_row):
    p_row = p_row[p_row > 0]
    return 2.0 ** (-np.sum(p_row * np.log2(p_row)))


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------


def _make_cases():
    rng = np.random.default_rng(0)
    cases = {}
    for b in (6, 12):
        cases[f"random_{b}"] = (
            (0.6 * rng.normal(size=(b, DIM_T))).astype(np.float32),
            (0.6 * rng.normal(size=(b, DIM_S))).astype(np.float32),
        )
    t = (0.6 * rng.normal(size=(9, DIM_T))).astype(np.float32)
    s = (0.6 * rng.normal(size=(9, DIM_S))).astype(np.float32)
    t[5], s[5] = t[2], s[2]  # the same image twice in the batch
    cases["duplicates"] = (t, s)
    return cases


CASES = _make_cases()
SIGMAS = np.random.default_rng(1).uniform(0.5, 1.5, size=16).astype(np.float32)

SPECS = {
    "snd_scalar": (
        lambda t, s: D.snd_loss(t, s, sigma=0.8),
        lambda t, s: ref_snd(t, s, 0.8),
    ),
    "snd_row_sigma": (
        lambda t, s: D.snd_loss(t, s, sigma=tf.constant(SIGMAS[: len(t)])),
        lambda t, s: ref_snd(t, s, SIGMAS[: len(t)]),
    ),
    "snd_student_sigma": (
        lambda t, s: D.snd_loss(t, s, sigma=0.9, student_sigma=0.6),
        lambda t, s: ref_snd(t, s, 0.9, 0.6),
    ),
    "snd_row_student_sigma": (
        lambda t, s: D.snd_loss(t, s, sigma=SIGMAS[: len(t)], student_sigma=SIGMAS[::-1][: len(t)]),
        lambda t, s: ref_snd(t, s, SIGMAS[: len(t)], SIGMAS[::-1][: len(t)]),
    ),
    "rkd_distance": (
        lambda t, s: D.rkd_distance_loss(t, s),
        lambda t, s: ref_rkd_distance(t, s),
    ),
    "rkd_distance_small_delta": (  # most pairs in the linear branch of the Huber loss
        lambda t, s: D.rkd_distance_loss(t, s, delta=0.1),
        lambda t, s: ref_rkd_distance(t, s, 0.1),
    ),
    "rkd_angle": (
        lambda t, s: D.rkd_angle_loss(t, s),
        lambda t, s: ref_rkd_angle(t, s),
    ),
    "rkd_angle_small_delta": (
        lambda t, s: D.rkd_angle_loss(t, s, delta=0.3),
        lambda t, s: ref_rkd_angle(t, s, 0.3),
    ),
    "rkd_combined": (
        lambda t, s: D.rkd_loss(t, s, distance_weight=0.5, angle_weight=3.0, delta=0.5),
        lambda t, s: 0.5 * ref_rkd_distance(t, s, 0.5) + 3.0 * ref_rkd_angle(t, s, 0.5),
    ),
}

# Functions with the (teacher, student) signature only, for the graph/gradient tests.
FUNCTIONS = {
    "snd": lambda t, s: D.snd_loss(t, s, sigma=0.8),
    "snd_student_sigma": lambda t, s: D.snd_loss(t, s, sigma=0.9, student_sigma=0.6),
    "snd_perplexity": lambda t, s: D.snd_loss(t, s, perplexity=3.0),
    "rkd_distance": D.rkd_distance_loss,
    "rkd_angle": D.rkd_angle_loss,
    "rkd": D.rkd_loss,
}


# ------------------------------------------------------------------------------------------------
# Against the references
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(SPECS))
def test_matches_bruteforce_reference(name, case):
    t, s = CASES[case]
    tf_fn, ref_fn = SPECS[name]
    got = tf_fn(tf.constant(t), tf.constant(s))
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), ref_fn(t, s), rtol=RTOL, atol=ATOL)


def test_snd_gradient_matches_sne_closed_form():
    # 000_* Eq. 5 (SNE gradient), for a shared sigma: dL/ds_i =
    # 2 beta sum_j (s_i - s_j)(p_ij - q_ij + p_ji - q_ji) with beta = 1/(2 sigma^2), / B for the
    # mean over rows. A wrong kernel, a swapped KL or a leaking diagonal all break it.
    t, s = CASES["random_12"]
    sigma = 0.7
    s_var = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = D.snd_loss(t, s_var, sigma=sigma)
    grad = tape.gradient(loss, s_var).numpy()
    p, q = ref_neighbour_probs(t, sigma), ref_neighbour_probs(s, sigma)
    beta, n = 0.5 / sigma**2, len(s)
    s64 = s.astype(np.float64)
    expected = np.zeros_like(s64)
    for i in range(n):
        for j in range(n):
            expected[i] += 2 * beta * (s64[i] - s64[j]) * (p[i, j] - q[i, j] + p[j, i] - q[j, i])
    expected /= n
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Perplexity calibration
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["random_12", "duplicates"])
def test_calibrated_sigma_reaches_target_perplexity(case):
    t, _ = CASES[case]
    n = len(t)
    d2 = ops.pairwise_squared_distances(t)
    for target in (2.0, 5.0, n - 2.0):
        sigma = D.calibrate_sigma(d2, target).numpy()
        assert sigma.shape == (n,) and np.all(np.isfinite(sigma)) and np.all(sigma > 0)
        p = ref_neighbour_probs(t, sigma.astype(np.float64))
        perplexities = np.array([ref_perplexity(p[i]) for i in range(n)])
        np.testing.assert_allclose(perplexities, target, rtol=1e-3)


def test_calibrated_sigma_scales_with_the_distances():
    t, _ = CASES["random_12"]
    d2 = ops.pairwise_squared_distances(t)
    sigma = D.calibrate_sigma(d2, 4.0).numpy()
    np.testing.assert_allclose(D.calibrate_sigma(9.0 * d2, 4.0).numpy(), 3.0 * sigma, rtol=1e-4)


@pytest.mark.parametrize("case", ["random_12", "duplicates"])
def test_perplexity_loss_equals_reference_with_calibrated_sigma(case):
    t, s = CASES[case]
    sigma = D.calibrate_sigma(ops.pairwise_squared_distances(t), 4.0).numpy().astype(np.float64)
    got = float(D.snd_loss(t, s, perplexity=4.0))
    np.testing.assert_allclose(got, ref_snd(t, s, sigma, sigma), rtol=1e-4, atol=ATOL)
    # The student uses the teacher's calibrated sigma: student == teacher gives exactly 0.
    assert float(D.snd_loss(t, t, perplexity=4.0)) == 0.0


def test_perplexity_edge_cases_are_finite():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(8, DIM_S)).astype(np.float32)
    same = np.tile(rng.normal(size=(1, DIM_T)), (8, 1)).astype(np.float32)
    # Every row at distance 0 from every other: P_i is uniform for any sigma.
    sigma = D.calibrate_sigma(ops.pairwise_squared_distances(same), 3.0).numpy()
    np.testing.assert_allclose(sigma, 1.0)
    assert np.isfinite(float(D.snd_loss(same, s, perplexity=3.0)))
    # Unreachable targets (above B - 1, or below the one nearest neighbour) clamp, never NaN.
    t = CASES["random_12"][0][:8]
    for target in (7.0, 50.0, 1.0):
        sigma = D.calibrate_sigma(ops.pairwise_squared_distances(t), target).numpy()
        assert np.all(np.isfinite(sigma)) and np.all(sigma > 0)
        assert np.isfinite(float(D.snd_loss(t, s, perplexity=target)))
    p = ref_neighbour_probs(t, D.calibrate_sigma(ops.pairwise_squared_distances(t), 50.0).numpy())
    np.testing.assert_allclose(p[~np.eye(8, dtype=bool)], 1.0 / 7.0, rtol=1e-4)  # uniform
    # B = 2: one neighbour per row, nothing to calibrate.
    assert np.isfinite(float(D.snd_loss(t[:2], s[:2], perplexity=3.0)))


def test_perplexity_argument_validation():
    t, s = CASES["random_6"]
    with pytest.raises(ValueError, match="student_sigma"):
        D.snd_loss(t, s, perplexity=3.0, student_sigma=0.5)
    with pytest.raises(ValueError, match="perplexity"):
        D.snd_loss(t, s, perplexity=0.5)
    with pytest.raises(ValueError):
        D.SNDLoss(perplexity=3.0, student_sigma=0.5)


# ------------------------------------------------------------------------------------------------
# Gradients, graph mode, dtypes
# ------------------------------------------------------------------------------------------------


def _gradients(fn, t, s):
    t_var, s_var = tf.Variable(t), tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = fn(t_var, s_var)
    g_t, g_s = tape.gradient(loss, [t_var, s_var])
    return loss, g_t, g_s


@pytest.mark.parametrize("layout", ["duplicates", "all_identical", "random"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_gradients_finite_and_teacher_frozen(name, layout):
    rng = np.random.default_rng(4)
    if layout == "duplicates":
        t, s = CASES["duplicates"]
    elif layout == "all_identical":
        t = np.tile(rng.normal(size=(1, DIM_T)), (6, 1)).astype(np.float32)
        s = np.tile(rng.normal(size=(1, DIM_S)), (6, 1)).astype(np.float32)
    else:
        t, s = CASES["random_6"]
    loss, g_t, g_s = _gradients(FUNCTIONS[name], t, s)
    assert np.isfinite(float(loss))
    assert g_t is None or not np.any(g_t.numpy())  # teachers are frozen targets
    assert g_s is not None and np.all(np.isfinite(g_s.numpy()))
    if layout == "random":
        assert np.any(g_s.numpy())


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_single_row_batch_is_zero_with_finite_gradient(name):
    t, s = CASES["random_6"]
    loss, _, g_s = _gradients(FUNCTIONS[name], t[:1], s[:1])
    assert float(loss) == 0.0 and np.all(np.isfinite(g_s.numpy()))


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_graph_with_unknown_batch_matches_eager(name):
    fn = FUNCTIONS[name]
    graph_fn = tf.function(fn, input_signature=[
        tf.TensorSpec([None, DIM_T], tf.float32), tf.TensorSpec([None, DIM_S], tf.float32)])
    for case in ("random_6", "duplicates"):  # two batch sizes, one trace
        t, s = (tf.constant(v) for v in CASES[case])
        np.testing.assert_allclose(float(graph_fn(t, s)), float(fn(t, s)), rtol=1e-6, atol=1e-7)
    assert graph_fn.experimental_get_tracing_count() == 1


def test_graph_with_per_row_sigma():
    graph_fn = tf.function(
        lambda t, s, sigma: D.snd_loss(t, s, sigma=sigma, student_sigma=2.0 * sigma),
        input_signature=[tf.TensorSpec([None, DIM_T]), tf.TensorSpec([None, DIM_S]),
                         tf.TensorSpec([None])])
    for case in ("random_6", "random_12"):
        t, s = CASES[case]
        sigma = SIGMAS[: len(t)]
        np.testing.assert_allclose(
            float(graph_fn(t, s, sigma)), ref_snd(t, s, sigma, 2.0 * sigma), rtol=RTOL, atol=ATOL)


def test_float16_inputs_are_computed_in_float32():
    t, s = CASES["random_6"]
    for name, fn in FUNCTIONS.items():
        got = fn(tf.constant(t, tf.float16), tf.constant(s, tf.float16))
        assert got.dtype == tf.float32, name
        expected = fn(tf.constant(t.astype(np.float16), tf.float32),
                      tf.constant(s.astype(np.float16), tf.float32))
        np.testing.assert_allclose(float(got), float(expected), rtol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------------------
# Semantics
# ------------------------------------------------------------------------------------------------


def test_snd_is_zero_for_a_perfect_student_and_positive_otherwise():
    t, s = CASES["random_12"]
    assert float(D.snd_loss(t, t, sigma=0.7)) == 0.0
    assert float(D.snd_loss(t, t, sigma=SIGMAS[:12])) == 0.0
    assert float(D.snd_loss(t, s, sigma=0.7)) > 0.0
    # A different student sigma makes even the perfect student pay.
    assert float(D.snd_loss(t, t, sigma=0.7, student_sigma=1.4)) > 1e-3


def test_snd_scale_invariance_needs_sigma_to_scale():
    t, s = CASES["random_12"]
    base = float(D.snd_loss(t, s, sigma=0.7, student_sigma=0.9))
    scaled = float(D.snd_loss(3.0 * t, s, sigma=2.1, student_sigma=0.9))
    assert scaled == pytest.approx(base, rel=1e-5)
    assert abs(float(D.snd_loss(3.0 * t, s, sigma=0.7, student_sigma=0.9)) - base) > 1e-2
    # Calibrated sigmas scale with the teacher on their own; translation never matters.
    calibrated = float(D.snd_loss(t, s, perplexity=4.0))
    for t2, s2 in ((t + 5.0, s - 2.0), (3.0 * t, 3.0 * s)):
        assert float(D.snd_loss(t2, s2, perplexity=4.0)) == pytest.approx(calibrated, rel=1e-4)


def test_rkd_distance_is_scale_free_but_not_shape_free():
    t, s = CASES["random_12"]
    base = float(D.rkd_distance_loss(t, s))
    assert float(D.rkd_distance_loss(t, 7.0 * s + 1.0)) == pytest.approx(base, rel=1e-5)
    assert float(D.rkd_distance_loss(0.2 * t, s)) == pytest.approx(base, rel=1e-5)
    assert float(D.rkd_distance_loss(t, 4.0 * t)) < 1e-10
    # Stretching one axis changes the relative distances.
    stretched = t * np.array([5.0] + [1.0] * (DIM_T - 1), np.float32)
    assert float(D.rkd_distance_loss(t, stretched)) > 1e-3


def test_rkd_angle_is_invariant_to_similarity_transforms():
    t, s = CASES["random_12"]
    base = float(D.rkd_angle_loss(t, s))
    assert float(D.rkd_angle_loss(t, 0.1 * s - 3.0)) == pytest.approx(base, rel=1e-5)
    rotation = np.linalg.qr(np.random.default_rng(5).normal(size=(DIM_T, DIM_T)))[0]
    teacher_rotated = (2.5 * t @ rotation + 1.0).astype(np.float32)
    assert float(D.rkd_angle_loss(teacher_rotated, s)) == pytest.approx(base, rel=1e-4)
    assert float(D.rkd_angle_loss(t, teacher_rotated)) < 1e-9
    stretched = t * np.array([5.0] + [1.0] * (DIM_T - 1), np.float32)
    assert float(D.rkd_angle_loss(t, stretched)) > 1e-3


# ------------------------------------------------------------------------------------------------
# Loss classes
# ------------------------------------------------------------------------------------------------

LOSS_OBJECTS = {
    "snd": (lambda: D.SNDLoss(sigma=0.8, student_sigma=0.6), D.snd_loss,
            {"sigma": 0.8, "student_sigma": 0.6, "perplexity": None}),
    "snd_perplexity": (lambda: D.SNDLoss(perplexity=4.0, num_iters=40), D.snd_loss,
                       {"perplexity": 4.0, "num_iters": 40, "student_sigma": None}),
    "rkd_distance": (lambda: D.RKDDistanceLoss(delta=0.5), D.rkd_distance_loss, {"delta": 0.5}),
    "rkd_angle": (lambda: D.RKDAngleLoss(delta=0.5), D.rkd_angle_loss, {"delta": 0.5}),
    "rkd": (lambda: D.RKDLoss(distance_weight=2.0, angle_weight=1.0, delta=0.5), D.rkd_loss,
            {"distance_weight": 2.0, "angle_weight": 1.0, "delta": 0.5}),
}


@pytest.mark.parametrize("key", sorted(LOSS_OBJECTS))
def test_loss_class_matches_function_and_roundtrips(key):
    make, fn, hyper = LOSS_OBJECTS[key]
    loss = make()
    t, s = CASES["random_12"]
    expected = float(fn(t, s, **{k: v for k, v in hyper.items() if v is not None}))
    assert float(loss(tf.constant(t), tf.constant(s))) == pytest.approx(expected, rel=1e-6)

    config = loss.get_config()
    for k, v in hyper.items():
        assert config[k] == v
    for restored in (
        type(loss).from_config(config),
        keras.losses.deserialize(keras.losses.serialize(loss)),
        keras.losses.get({"class_name": f"tfembed>{type(loss).__name__}", "config": config}),
    ):
        assert type(restored) is type(loss)
        assert restored.get_config() == config
        assert restored.fn is fn
    assert keras.saving.get_registered_object(f"tfembed>{type(loss).__name__}") is type(loss)


@pytest.mark.parametrize("key", sorted(LOSS_OBJECTS))
def test_loss_class_compile_fit(key):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    teacher = rng.normal(size=(32, DIM_T)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    student = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(DIM_S), keras.layers.UnitNormalization()])
    student.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS_OBJECTS[key][0]())
    before = student.get_weights()[0].copy()
    history = student.fit(x, teacher, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, student.get_weights()[0])
