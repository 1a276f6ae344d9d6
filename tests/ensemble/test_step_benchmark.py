"""The FLOP counter of benchmarks/abe_step.py on layers whose FLOPs are known by hand."""

import os
import sys

import keras

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "benchmarks"))

from abe_step import forward_flops  # noqa: E402


def test_forward_flops_counts_two_per_multiply_add_per_image():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)   # 8·8·9·2·4 MACs
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, use_bias=False)(x)                      # 256·5 MACs
    model = keras.Model(inputs, outputs)
    expected = 2 * (8 * 8 * 9 * 2 * 4 + 256 * 5)
    assert forward_flops(model, (8, 8, 2)) == expected
    assert forward_flops(model, (8, 8, 2), batch=3) == expected
