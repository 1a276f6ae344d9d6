"""ImageSpec: a model carries the sizes of its images; pipelines, evaluation and export read them."""


import keras
import numpy as np
import pytest

import tfembed as te
from tfembed.data.types import Domain, ImageSpec, Split, resolve_sizes
from tfembed.evaluation.protocol import evaluate
from tfembed.export import export_model, read_metadata


def _domain(rng, name="toy", classes=6, per_class=4, size=40):
    labels = np.repeat(np.arange(classes), per_class)
    images = rng.integers(0, 255, (len(labels), size, size, 3), dtype=np.uint8)
    train = Split(labels=labels[: len(labels) // 2], images=images[: len(labels) // 2])
    test = Split(labels=labels[len(labels) // 2:], images=images[len(labels) // 2:])
    return Domain(name, {"train": train, "test": test}, num_classes=classes)


def _model(size=32, resize=36, **kwargs):
    keras.utils.set_random_seed(0)
    return te.models.build_embedder("small_cnn", 8, input_shape=(size, size, 3),
                                    resize_size=resize, width=0.25, **kwargs)


def test_spec_values_and_defaults():
    assert ImageSpec(28) == ImageSpec((28, 28), (32, 32))   # 256/224 ratio by default
    assert ImageSpec().size == (224, 224) and ImageSpec().resize == (256, 256)
    assert ImageSpec(28, 40).resize == (40, 40)
    with pytest.raises(ValueError, match="at least its size"):
        ImageSpec(32, 28)
    with pytest.raises(ValueError, match="pair"):
        ImageSpec((1, 2, 3))
    assert resolve_sizes() == ((224, 224), (256, 256))
    assert resolve_sizes(28, 30) == ((28, 28), (30, 30))
    assert resolve_sizes(28) == ((28, 28), (32, 32))   # a size alone: the 256/224 ratio


def test_embedder_carries_its_spec_through_save_and_load(tmp_path):
    model = _model()
    spec = ImageSpec.of(model)
    assert (spec.size, spec.resize, spec.channels, spec.normalisation) == (
        (32, 32), (36, 36), 3, "unit")
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert ImageSpec.of(te.models.load_embedder(path)) == spec
    # Without a recorded resize (a model saved before ImageSpec): the standard ratio.
    plain = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.GlobalAveragePooling2D()])
    assert ImageSpec.of(plain).resize == (32, 32)
    with pytest.raises(ValueError, match="no single image input"):
        ImageSpec.of(keras.Sequential([keras.Input((None, None, 3))]))


def test_pipelines_read_the_spec(rng):
    domain = _domain(rng)
    model = _model()
    x, _ = next(iter(te.data.training_batches([domain.train], 2, 2, spec=model)))
    assert x.shape == (4, 32, 32, 3)
    x, _ = next(iter(te.data.eval_dataset(domain.splits["test"], 4, spec=model)))
    assert x.shape == (4, 32, 32, 3)
    # The eval view is the resize-36-then-centre-crop-32 transform, as explicit sizes give.
    explicit, _ = next(iter(te.data.eval_dataset(domain.splits["test"], 4,
                                                 spec=ImageSpec(32, 36))))
    np.testing.assert_array_equal(x, explicit)
    # Pipelines take one spec now; an explicit size that contradicts the model's is refused.
    with pytest.raises(ValueError, match="contradicts the model's ImageSpec"):
        ImageSpec.of(model).sizes(image_size=28)
    with pytest.raises(ValueError, match="contradicts"):
        ImageSpec.of(model).sizes(resize_size=40)


def test_evaluate_is_evaluate_model_with_the_models_sizes(rng):
    domains = [_domain(rng, "a"), _domain(rng, "b")]
    model = _model()
    rows = te.evaluation.evaluate(model, domains, ks=(1, 2), name="m")
    expected = evaluate(model, domains, name="m", offsets=[0, 6], spec=ImageSpec(32, 36),
                        ks=(1, 2))
    assert rows == expected
    assert {(r["domain"], r["gallery"]) for r in rows} == {
        ("a", "domain"), ("b", "domain"), ("a", "fused"), ("b", "fused")}
    one = te.evaluation.evaluate(model, domains[0], ks=(1,))
    assert [(r["model"], r["domain"], r["gallery"]) for r in one] == [("model", "a", "domain")]


def test_export_defaults_to_the_spec(tmp_path):
    path = export_model(_model(), str(tmp_path), "m")
    meta = read_metadata(path)
    assert meta["image_size"] == [32, 32] and meta["resize_size"] == [36, 36]


def test_ensembles_and_trainers_state_their_embedders_spec():
    abe = te.ensemble.build_attention_ensemble("small_cnn", num_learners=2, embedding_dim=8,
                                             input_shape=(32, 32, 3), resize_size=40,
                                             backbone_kwargs={"width": 0.25})
    assert ImageSpec.of(abe).sizes() == ((32, 32), (40, 40))
    student = _model()
    distiller = te.distill.Distiller(_model(), student, "relative_teacher")
    assert ImageSpec.of(distiller) == ImageSpec.of(student)
    cohort = te.cohort.MutualLearningCohort([_model(name="m0"), _model(name="m1")],
                                            metric_loss="triplet_semihard")
    assert ImageSpec.of(cohort).sizes() == ((32, 32), (36, 36))
