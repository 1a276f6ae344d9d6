"""The "Concatenation" baseline of paper 000 §5: concatenate the specialists, PCA to 128-d.

Every image is embedded by all m specialists, the m vectors are concatenated and projected onto
the top principal components of the concatenated training embeddings, then L2-normalised. It
costs m forward passes per image; the paper reports it well below the specialists on the fused
gallery because two thirds of each vector describe the image with out-of-domain models.

The result is an ordinary functional Keras model (frozen specialists → Concatenate → a frozen
Dense holding the PCA projection → L2 normalisation), so it is evaluated, saved and exported like
any embedder.
"""

from typing import Sequence

import keras
import numpy as np

from tfembed.training.step import freeze


def fit_pca(embeddings, dim):
    """Mean and top-``dim`` principal axes of ``embeddings`` ``[N, D]``.

    Returns:
      ``(mean [D], components [D, dim])`` (float64), components ordered by decreasing variance,
      each column's sign fixed so its largest-magnitude entry is positive (deterministic output).
    """
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"fit_pca needs [N >= 2, D] embeddings, got shape {x.shape}")
    if not 1 <= dim <= x.shape[1]:
        raise ValueError(f"PCA dimension {dim} must be in [1, {x.shape[1]}] (the concatenated "
                         "dimension)")
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    vectors = vectors[:, np.argsort(values)[::-1][:dim]]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), 0), np.arange(dim)])
    return mean, vectors * np.where(signs == 0, 1.0, signs)


def unique_names(models, prefix="specialist"):
    """Frozen views of ``models`` with distinct names (functional models need unique layer names,
    and specialists loaded from files are often all called ``embedder_<backbone>``)."""
    out = []
    for i, model in enumerate(models):
        freeze(model)
        single = lambda t: t[0] if len(t) == 1 else t  # noqa: E731
        out.append(keras.Model(single(model.inputs), single(model.outputs),
                               name=f"{prefix}{i}_{model.name}"))
    return out


def largest_input(specialists: Sequence[keras.Model]) -> int:
    """Index of the specialist with the largest input (the concatenation's input size)."""
    shapes = [tuple(s.input_shape[1:3]) for s in specialists]
    return max(range(len(shapes)), key=lambda i: (shapes[i][0] * shapes[i][1], shapes[i]))


def concat_features(specialists: Sequence[keras.Model], name="concat"):
    """A frozen model ``images -> concat_i f_i(images)``.

    Specialists from different teams may take different sizes (DESIGN §7): the model takes the
    largest specialist's images and resizes them (bilinear, anti-aliased, as the evaluation
    transform) for each smaller one.
    """
    specialists = unique_names(specialists)
    shape = tuple(specialists[largest_input(specialists)].input_shape[1:])
    inputs = keras.Input(shape, name="images")
    parts = []
    for s in specialists:
        own = tuple(s.input_shape[1:])
        if own[-1] != shape[-1]:
            raise ValueError(f"specialist {s.name} takes {own[-1]}-channel images, another "
                             f"takes {shape[-1]}")
        x = inputs if own == shape else keras.layers.Resizing(
            own[0], own[1], antialias=True, name=f"resize_{s.name}")(inputs)
        parts.append(s(x, training=False))
    x = keras.layers.Concatenate(name="concat")(parts) if len(parts) > 1 else parts[0]
    return keras.Model(inputs, x, name=name)


def concat_pca_embedder(specialists: Sequence[keras.Model], mean, components,
                        name="concat_pca"):
    """A model ``images -> L2norm((concat_i f_i(images) - mean) @ components)``.

    Args:
      specialists: the m specialist embedders, frozen; of other input sizes, each gets the
        largest one's images resized to its own (:func:`concat_features`).
      mean, components: from :func:`fit_pca` on concatenated training embeddings.
      name: model name.
    """
    joint = concat_features(specialists)
    components = np.asarray(components, np.float32)
    inputs = keras.Input(joint.input_shape[1:], name="images")
    x = joint(inputs, training=False)
    if x.shape[-1] != components.shape[0]:
        raise ValueError(f"PCA was fitted on {components.shape[0]}-d vectors but the specialists "
                         f"concatenate to {x.shape[-1]}-d")
    projection = keras.layers.Dense(components.shape[1], name="pca", trainable=False)
    x = projection(x)
    projection.set_weights([components, -np.asarray(mean, np.float32) @ components])
    outputs = keras.layers.UnitNormalization(name="l2_norm")(x)
    return keras.Model(inputs, outputs, name=name)
