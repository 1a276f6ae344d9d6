"""Every trainer: one step on 2 replicas = one step on 1 device on the same global batch.

DESIGN §5 / issue 7: the loss scaling must be right under N replicas, and the pairwise and
batch-level losses must see the global batch. Each case builds the same model (same weights) under
the default strategy and under a 2-replica MirroredStrategy (conftest's two logical CPUs), takes
one SGD step with ``fit`` on the same batch, and compares the logged losses and every updated
weight (1e-5 relative). The ``local`` variants (each replica's slice is its own batch) must
differ, which shows the comparison can fail.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.ensemble.test_attention import _tiny_base
from tests.cohort.test_mutual_learning import _dense as _cohort_member
from tests.universal.test_distiller import _batches as _universal_batches
from tests.universal.test_distiller import _dense_embedder, _domains, _teachers
from tfembed import losses as L
from tfembed.distill import Distiller
from tfembed.universal import UniversalDistiller
from tfembed.ensemble import AttentionEnsemble, MultiHeadEnsemble
from tfembed.cohort.mutual_learning import MutualLearningCohort
from tfembed.ops import gather_replicas

RTOL, ATOL = 1e-5, 1e-7
LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int64)


def _images(seed, n=8, size=8):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _dense(seed, dim=6, size=8):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x))


# Each builder returns a compiled model, deterministic in its weights; ``local`` asks for the
# per-replica-slice variant where the trainer has one.

def _embedder(local):
    model = _dense(1)
    loss = L.TripletSemiHardLoss(0.2)
    model.compile(keras.optimizers.SGD(0.5), loss=loss if local else L.GlobalBatchLoss(loss))
    return model


def _distiller(local):
    model = Distiller(_dense(3), _dense(2), "relative_teacher", metric_loss="triplet_semihard",
                      global_batch=not local)
    model.compile(keras.optimizers.SGD(0.5))
    return model


def _universal(local):
    model = UniversalDistiller(_teachers(2), _dense_embedder(seed=3), L.SNDLoss(sigma=0.5),
                               global_batch=not local)
    model.compile(keras.optimizers.SGD(0.5))
    return model


def _abe(local):
    model = AttentionEnsemble(_tiny_base(1), 3, branch="s_out", attention_end="block1",
                              global_batch=not local)
    model.compile(keras.optimizers.SGD(0.5))
    return model


def _mheads(local):
    model = MultiHeadEnsemble(_tiny_base(1), 3, branch="s_out", divergence_weight=1.0,
                              global_batch=not local)
    model.compile(keras.optimizers.SGD(0.5))
    return model


def _cohort(local):
    if local:
        return None
    model = MutualLearningCohort([_cohort_member(0, dim=5), _cohort_member(1, dim=5)],
                                 metric_loss="triplet_semihard", relation_weight=3.0)
    model.compile(keras.optimizers.SGD(0.5))
    return model


def _universal_batch():
    x, y = next(iter(_universal_batches(_domains(np.random.default_rng(0), 2))))
    return x, y


CASES = {
    "specialist": (_embedder, lambda: (_images(0), LABELS)),
    "distiller": (_distiller, lambda: (_images(1), LABELS)),
    "universal": (_universal, _universal_batch),
    "abe": (_abe, lambda: (_images(2), LABELS)),
    "mheads": (_mheads, lambda: (_images(3), LABELS)),
    "cohort": (_cohort, lambda: (_images(4, size=6), LABELS)),
}


def _step(strategy, build, batch, local=False):
    keras.utils.set_random_seed(0)   # layers without a seeded initializer: the same weights
    with strategy.scope():
        model = build(local)
    if model is None:
        return None
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    after = [w.numpy() for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "nothing trained"
    return {k: v[0] for k, v in history.items()}, after


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_on_two_replicas_equals_one_device(case, two_replica_strategy):
    build, batch = CASES[case]
    batch = batch()
    logs1, w1 = _step(tf.distribute.get_strategy(), build, batch)
    logs2, w2 = _step(two_replica_strategy, build, batch)
    assert logs1.keys() == logs2.keys()
    for key in logs1:
        np.testing.assert_allclose(logs2[key], logs1[key], rtol=RTOL, atol=ATOL, err_msg=key)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
    local = _step(two_replica_strategy, build, batch, local=True)
    if local is not None:
        assert any(not np.allclose(a, b, rtol=RTOL, atol=1e-6) for a, b in zip(local[1], w1))


def test_cohort_with_temporal_diversity_is_refused_under_mirrored(two_replica_strategy):
    with two_replica_strategy.scope():
        cohort = MutualLearningCohort([_cohort_member(0), _cohort_member(1)],
                                      update_probabilities=[1.0, 0.5])
        with pytest.raises(ValueError, match="devices"):
            cohort.compile(optimizer="adam")


# --------------------------------------------------- gathered losses = the global-batch loss

_RNG = np.random.default_rng(7)
_E = _RNG.normal(size=(8, 5)).astype("float32")
_E /= np.linalg.norm(_E, axis=1, keepdims=True)
_T = _RNG.normal(size=(8, 4)).astype("float32")
_T /= np.linalg.norm(_T, axis=1, keepdims=True)
_M = _RNG.normal(size=(3, 8, 4)).astype("float32")

PAIRWISE = {
    "triplet_semihard": (L.triplet_semihard_loss, lambda: (LABELS, _E)),
    "multi_similarity": (L.multi_similarity_loss, lambda: (LABELS, _E)),
    "contrastive": (L.contrastive_loss, lambda: (LABELS, _E)),
    "contrastive_pairs": (L.contrastive_pairs_loss, lambda: (LABELS, _E)),
    "binomial_deviance": (L.binomial_deviance_loss, lambda: (LABELS, _E)),
    "snd": (lambda t, s: L.snd_loss(t, s, sigma=0.5), lambda: (_T, _E)),
    "rkd": (L.rkd_loss, lambda: (_T, _E)),
    "relative_teacher": (L.relative_teacher_loss, lambda: (_T, _E)),
    "darkrank_hard": (L.darkrank_hard_loss, lambda: (_T, _E)),
    "darkrank_soft": (L.darkrank_soft_loss, lambda: (_T, _E)),
    "relation": (L.relation_loss, lambda: (_T, _E)),
}


@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_gathered_loss_equals_the_one_device_loss_of_the_global_batch(name, two_replica_strategy):
    fn, args = PAIRWISE[name]
    a, b = args()
    expected = float(fn(tf.constant(a), tf.constant(b)))
    ds = two_replica_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((a, b)))

    @tf.function
    def run(batch):
        return two_replica_strategy.run(lambda x, y: fn(*gather_replicas(x, y)), args=batch)

    per_replica = two_replica_strategy.experimental_local_results(run(next(iter(ds))))
    assert len(per_replica) == 2
    for value in per_replica:
        np.testing.assert_allclose(float(value), expected, rtol=1e-6)
    # The slice alone is a different loss (what an ungathered replica would optimise).
    half = float(fn(tf.constant(a[:4]), tf.constant(b[:4])))
    assert not np.isclose(half, expected, rtol=1e-4)


def test_gathered_divergence_over_learners(two_replica_strategy):
    """ABE's divergence loss takes [M, B, d]: the trainer gathers along the batch axis."""
    expected = float(L.divergence_loss(tf.constant(_M)))
    ds = two_replica_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(np.transpose(_M, (1, 0, 2))))

    @tf.function
    def run(x):
        def fn(per_image):   # [B/2, M, d] → gather → [M, B, d]
            return L.divergence_loss(tf.transpose(gather_replicas(per_image), [1, 0, 2]))
        return two_replica_strategy.run(fn, args=(x,))

    for value in two_replica_strategy.experimental_local_results(run(next(iter(ds)))):
        np.testing.assert_allclose(float(value), expected, rtol=1e-6)
