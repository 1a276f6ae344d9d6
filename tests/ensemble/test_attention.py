"""AttentionEnsemble (ABE-M, paper 002) and MultiHeadEnsemble: structure, loss terms, replicas,
serialization and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed import export as export_lib
from tfembed.losses import contrastive_loss, divergence_loss, triplet_semihard_loss
from tfembed.ensemble import (
    AttentionEnsemble,
    MultiHeadEnsemble,
    build_attention_ensemble,
    build_multihead_ensemble,
)
from tfembed.models import build_embedder

SHAPE = (28, 28, 3)
LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def _images(rng, n=8, shape=SHAPE):
    return rng.uniform(0, 255, size=(n, *shape)).astype("float32")


def _abe(m=4, dim=32, **kwargs):
    return build_attention_ensemble("small_cnn", m, dim, input_shape=SHAPE,
                                    backbone_kwargs={"width": 0.25}, **kwargs)


def test_learners_are_unit_norm_and_the_ensemble_is_their_concatenation(rng):
    model = _abe(4, 32)
    x = _images(rng, 5)
    out = model.learner_outputs(x)
    learners, masks = out["learners"].numpy(), out["masks"].numpy()
    assert learners.shape == (4, 5, 8)
    np.testing.assert_allclose(np.linalg.norm(learners, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["ensemble"].numpy(),
                                  np.concatenate(list(learners), axis=1))
    np.testing.assert_allclose(model.predict(x, verbose=0), out["ensemble"].numpy(), atol=1e-6)
    # Masks: one per learner over S's channels at S's resolution (stage2 of 28 px: 7×7×16).
    assert masks.shape == (5, 7, 7, 4, 16)
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert np.abs(masks[..., 0, :] - masks[..., 1, :]).max() > 1e-3  # learners differ


def test_masks_fixed_to_one_give_the_plain_backbone_per_learner(rng):
    model = _abe(3, 24)
    kernel, bias = model.attention_heads.get_weights()
    # sigmoid(100) == 1.0 in float32: every mask is exactly 1, so B_m(x) = G(S(x)) = base(x).
    model.attention_heads.set_weights([np.zeros_like(kernel), np.full_like(bias, 100.0)])
    x = _images(rng, 4)
    learners = model.learner_embeddings(x).numpy()
    plain = model.base(x, training=False).numpy()
    for m in range(3):
        np.testing.assert_allclose(learners[m], plain, atol=1e-6)


def test_global_embedding_runs_once_over_the_folded_batch(rng):
    model = _abe(4, 32)
    calls = []
    g = model._parts.global_embedding
    model._parts.global_embedding = lambda x, training=False: (calls.append(tuple(x.shape)),
                                                                g(x, training=training))[1]
    model.learner_embeddings(_images(rng, 5))
    assert calls == [(20, 7, 7, 16)]  # M·B rows, one call
    # The traced graph: G's projection (the only MatMul) appears once, on M·B rows, and every
    # convolution of S, the trunk, A' and G appears exactly once.
    fn = tf.function(lambda t: model.learner_embeddings(t))
    graph = fn.get_concrete_function(tf.TensorSpec([5, *SHAPE], tf.float32)).graph
    matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
    assert len(matmuls) == 1 and matmuls[0].inputs[0].shape[0] == 20
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    n_conv = sum(isinstance(l, keras.layers.Conv2D) for l in model.base.layers)
    n_trunk = sum(isinstance(l, keras.layers.Conv2D) for l in model.trunk.layers)
    assert len(convs) == n_conv + n_trunk + 1


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet", "inception_v3"])
def test_attention_trunk_keeps_the_spatial_size_and_the_backbone_weights(backbone, rng):
    side = {"inception_v3": 128}.get(backbone, 64)
    model = build_attention_ensemble(backbone, 2, 16, input_shape=(side, side, 3))
    s = model._parts.spatial.output.shape
    assert model.trunk.output.shape[1:3] == s[1:3]
    # The trunk's convolutions start from the backbone's (strides removed, weights kept).
    convs = [l for l in model.trunk.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs
    for layer in convs[:3]:
        original = model.base.get_layer(layer.name[len("attention_"):])
        np.testing.assert_array_equal(layer.get_weights()[0], original.get_weights()[0])
        assert original is not layer
    assert model.attention_heads.filters == 2 * s[-1]


def test_attention_blocks_counts_backbone_blocks():
    model = build_attention_ensemble("resnet18", 2, 16, input_shape=(64, 64, 3),
                                     attention_blocks=1)
    assert model.attention_end == "stage3_block1_out"
    with pytest.raises(ValueError, match="stage3_block1_out"):
        build_attention_ensemble("resnet18", 2, 16, input_shape=(64, 64, 3), attention_blocks=9)
    with pytest.raises(ValueError, match="multiple"):
        _abe(3, 32)
    with pytest.raises(ValueError, match="branch 'nope'"):
        _abe(2, 32, branch="nope")


def test_train_step_is_the_sum_of_learner_losses_plus_weighted_divergence(rng):
    x = _images(rng)
    model = _abe(4, 32, divergence_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.numpy() for w in model.trainable_variables]
    learners = model.learner_embeddings(x, training=True)   # the step's forward pass
    metric = sum(float(contrastive_loss(LABELS, learners[m])) for m in range(4))
    div = float(divergence_loss(learners))
    logs = model.train_on_batch(x, LABELS, return_dict=True)
    assert logs["metric_loss"] == pytest.approx(metric, rel=1e-4)
    assert logs["divergence_loss"] == pytest.approx(div, rel=1e-4)
    assert logs["loss"] == pytest.approx(metric + 0.5 * div, rel=1e-4)
    after = model.trainable_variables
    changed = {v.path.split("/")[0] for v, b in zip(after, before)
               if not np.allclose(v.numpy(), b)}
    # S and G (the base's layers), the trunk and the attention heads all learn.
    assert {"attention_heads", "stage1_conv1", "embedding_dense", "attention_stage3_conv1"} <= changed


def test_each_term_can_be_switched_off(rng):
    x = _images(rng)
    no_div = _abe(4, 32, divergence_weight=0.0)
    no_div.compile(optimizer="sgd")
    logs = no_div.train_on_batch(x, LABELS, return_dict=True)
    assert "divergence_loss" not in logs and logs["loss"] == pytest.approx(logs["metric_loss"])
    div_only = _abe(4, 32, metric_loss=None)
    div_only.compile(optimizer="sgd")
    logs = div_only.train_on_batch(x, LABELS, return_dict=True)
    assert "metric_loss" not in logs
    assert logs["loss"] == pytest.approx(logs["divergence_loss"])
    # One learner has no divergence (002: ABE-1), whatever λ_div.
    assert "divergence_loss" not in [m.name for m in _abe(1, 32).metrics]
    with pytest.raises(ValueError, match="no loss term"):
        _abe(1, 32, metric_loss=None)


def test_any_metric_loss_can_replace_contrastive(rng):
    x = _images(rng)
    model = _abe(2, 32, metric_loss="triplet_semihard", divergence_weight=0.0)
    model.compile(optimizer="sgd")
    learners = model.learner_embeddings(x, training=True)
    want = sum(float(triplet_semihard_loss(LABELS, learners[m])) for m in range(2))
    logs = model.train_on_batch(x, LABELS, return_dict=True)
    assert logs["metric_loss"] == pytest.approx(want, rel=1e-4)


def _tiny_base(seed):
    """A BatchNorm-free embedder (per-replica batch statistics would differ across replicas)."""
    init = keras.initializers.GlorotUniform(seed)
    inputs = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=init,
                            name="s_out")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=init, name="block1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = keras.layers.Dense(5, kernel_initializer=init, name="embedding_dense")(x)
    return keras.Model(inputs, keras.layers.UnitNormalization(name="l2_norm")(x))


def test_multihead_heads_are_separate(rng):
    model = build_multihead_ensemble("small_cnn", 3, 24, input_shape=SHAPE,
                                     backbone_kwargs={"width": 0.25}, weights=None)
    assert model.head_init == "fresh" and len(model.heads) == 2
    learners = model.learner_embeddings(_images(rng, 4)).numpy()
    assert learners.shape == (3, 4, 8)
    np.testing.assert_allclose(np.linalg.norm(learners, axis=-1), 1.0, atol=1e-5)
    assert "divergence_loss" not in [m.name for m in model.metrics]  # the paper's M-heads
    abe = _abe(3, 24)
    assert model.count_params() > abe.count_params()  # M copies of G vs one
    copy = MultiHeadEnsemble(build_embedder("small_cnn", 8, input_shape=SHAPE, width=0.25), 3,
                             head_init="copy")
    conv = copy.base.get_layer("stage3_conv1").get_weights()[0]
    np.testing.assert_array_equal(copy.heads[0].get_layer("head1_stage3_conv1").get_weights()[0],
                                  conv)
    assert not np.allclose(copy.heads[0].get_layer("head1_embedding_dense").get_weights()[0],
                           copy.base.get_layer("embedding_dense").get_weights()[0])


@pytest.mark.parametrize("kind", ["abe", "mheads"])
def test_save_and_load_round_trip(kind, tmp_path, rng):
    model = (_abe(2, 16, divergence_weight=0.3) if kind == "abe" else
             build_multihead_ensemble("small_cnn", 2, 16, input_shape=SHAPE,
                                      backbone_kwargs={"width": 0.25}))
    model.compile(optimizer="adam")
    model.train_on_batch(_images(rng), LABELS)
    path = str(tmp_path / "ensemble.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.divergence_weight == model.divergence_weight
    x = _images(rng, 3)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_a_plain_callable_loss_saves_but_refuses_to_load():
    model = _abe(2, 16, metric_loss=lambda labels, emb: tf.reduce_mean(emb))
    config = model.get_config()
    assert config["metric_loss"] == {"callable": "<lambda>"}
    with pytest.raises(ValueError, match="plain callable '<lambda>'"):
        AttentionEnsemble.from_config(config)


def test_export_loads_with_tensorflow_alone(tmp_path, rng):
    model = _abe(2, 16)
    path = export_lib.export_model(model, str(tmp_path), "abe", image_size=(28, 28),
                                   resize_size=(32, 32))
    loaded = tf.saved_model.load(path)
    x = _images(rng, 3)
    got = loaded.signatures["serving_pixels"](pixels=tf.constant(x))["embeddings"].numpy()
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
    assert got.shape == (3, 16)
