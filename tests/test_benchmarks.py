"""Pure helpers of the issue-7 benchmarks (train_flops, input_pipeline, serving, mixed_precision)
on inputs whose answers are known by hand."""

import os
import sys

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

from input_pipeline import texture_image, write_jpeg_folder  # noqa: E402
from mixed_precision import build_under_policy  # noqa: E402
from serving import time_batches  # noqa: E402
from train_flops import gemm_times, parse_models, train_step_flops  # noqa: E402

B = 3
CONV1 = 8 * 8 * 9 * 2 * 4  # MACs per image: 8x8 output, 3x3x2 kernel, 4 filters
CONV2 = 4 * 4 * 9 * 4 * 4  # 4x4 output (stride 2 on the padded 10x10), 3x3x4 kernel, 4 filters
DENSE = 64 * 5             # 4*4*4 = 64 features -> 5


def _tiny_model():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    # A strided "valid" conv on an explicitly padded input: the profiler's own backprop rule
    # counts 10*10/4 = 25 output positions here instead of 16.
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="valid", use_bias=False)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, use_bias=False)(x)
    return keras.Model(inputs, outputs)


def _sum_loss(labels, outputs):
    return tf.reduce_sum(outputs)  # B*5 - 1 additions


def test_train_step_flops_counts_forward_and_both_gradients_exactly():
    result = train_step_flops(_tiny_model(), _sum_loss, (8, 8, 2), B)
    fwd, bwd = result["by_type"]["forward"], result["by_type"]["backward"]
    assert fwd["Conv2D"] == 2 * B * (CONV1 + CONV2)
    assert fwd["MatMul"] == 2 * B * DENSE
    assert fwd["Sum"] == B * 5 - 1
    # Kernel gradients of both convs; input gradient of the second conv only (the first conv's
    # input is the image: no gradient needed, the runtime prunes that op).
    assert bwd["Conv2DBackpropFilter"] == 2 * B * (CONV1 + CONV2)
    assert bwd["Conv2DBackpropInput"] == 2 * B * CONV2
    assert bwd["MatMul"] == 2 * 2 * B * DENSE  # gradient w.r.t. the kernel and the input
    assert result["forward"] == 2 * B * (CONV1 + CONV2 + DENSE) + B * 5 - 1
    assert result["backward"] == sum(bwd.values())
    assert result["optimizer"] == 0
    assert result["total"] == result["forward"] + result["backward"]
    # The profiler's uncorrected total counts the pruned input gradient of conv 1 and overcounts
    # conv 2's backprops (25 instead of 16 positions).
    pruned = 2 * B * CONV1
    overcount = 2 * 2 * B * (25 - 16) * 9 * 4 * 4
    assert result["profiler_raw"] == result["total"] + pruned + overcount


def test_train_step_flops_with_optimizer_adds_an_update_section_only():
    model = _tiny_model()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    plain = train_step_flops(model, _sum_loss, (8, 8, 2), B)
    full = train_step_flops(model, _sum_loss, (8, 8, 2), B, optimizer)
    assert full["forward"] == plain["forward"] and full["backward"] == plain["backward"]
    params = model.count_params()
    # Adam's elementwise update: a few FLOPs per parameter (Sqrt has no rule).
    assert 4 * params <= full["optimizer"] <= 16 * params
    assert full["total"] == plain["total"] + full["optimizer"]
    assert optimizer.iterations.numpy() == 0  # traced, never run
    assert "Sqrt" in full["no_rule"]


def test_parse_models():
    assert parse_models("resnet18:64:32, resnet50:224:16") == [("resnet18", 64, 32),
                                                              ("resnet50", 224, 16)]


def test_gemm_times_returns_one_positive_time_per_call():
    a = tf.ones([16, 16])
    times = gemm_times(a, a, 3)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_write_jpeg_folder_is_read_by_read_folder(tmp_path):
    from tfembed.data.sources import read_folder

    root, nbytes = write_jpeg_folder(tmp_path / "jpegs", num_classes=3, per_class=2,
                                     size=(24, 40))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert files == [f"class_{c:03d}/img_{k:03d}.jpg" for c in range(3) for k in range(2)]
    assert nbytes == sum((root / f).stat().st_size for f in files)
    domain = read_folder(root, test_fraction=0.0)
    assert len(domain.train) == 6 and sorted(set(domain.train.labels)) == [0, 1, 2]
    image = tf.io.decode_jpeg(tf.io.read_file(str(root / files[0])))
    assert image.shape == (24, 40, 3)


def test_texture_image_is_deterministic_and_textured():
    a = texture_image(np.random.default_rng(1), (32, 48))
    b = texture_image(np.random.default_rng(1), (32, 48))
    assert a.shape == (32, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert a.std() > 10  # not flat


def test_time_batches_calls_once_per_batch():
    seen = []
    assert time_batches(seen.append, [1, 2, 3]) >= 0
    assert seen == [1, 2, 3]


def test_build_under_policy_restores_the_global_policy_and_keeps_float32_embeddings():
    keras.utils.set_random_seed(0)
    from tfembed.models import build_embedder

    weights = build_embedder("small_cnn", 8, input_shape=(16, 16, 3)).get_weights()
    model = build_under_policy("mixed_bfloat16", "small_cnn", 8, 16, weights, False)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    out = model(pixels, training=False)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, atol=1e-3)


def test_uned_benchmark_data_has_uneds_split_structure():
    from uned_eval import synthetic

    from tfembed.data.uned import UNED_DOMAINS, UNED_EVAL_PAIRS

    data = synthetic(4000, 800, 8, np.random.default_rng(0))
    assert list(data) == list(UNED_DOMAINS)
    index = sum(len(data[d][UNED_EVAL_PAIRS[d]["test"][1]][0]) for d in UNED_DOMAINS)
    queries = sum(len(data[d][UNED_EVAL_PAIRS[d]["test"][0]][0]) for d in UNED_DOMAINS)
    assert abs(index - 4000) < 8 and queries == 800
    assert set(data["gldv2"]) == {"test", "index"} and set(data["cars"]) == {"test"}
    assert isinstance(data["met"]["test"][1][0], list)   # a multi-label query
    emb = data["sop"]["test"][0]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
