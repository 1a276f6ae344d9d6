"""concat_pca baseline: PCA against numpy, the model against the formula, Table-2 printout."""

import keras
import numpy as np
import pytest

from tfembed.evaluation.report import format_paper_table
from tfembed.models import build_embedder
from tfembed.models.concat import concat_pca_embedder, fit_pca


def test_fit_pca_matches_svd(rng):
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    mean, comp = fit_pca(x, 5)
    np.testing.assert_allclose(mean, x.mean(0))
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    # Same subspace, same order, unit columns (signs are fixed by convention, so compare |·|).
    np.testing.assert_allclose(np.abs(comp.T @ vt[:5].T), np.eye(5), atol=1e-8)
    proj_var = ((x - mean) @ comp).var(0, ddof=1)
    np.testing.assert_allclose(proj_var, s[:5] ** 2 / (len(x) - 1), rtol=1e-8)
    with pytest.raises(ValueError, match="must be in"):
        fit_pca(x, 13)


def test_concat_pca_model_is_the_formula(rng):
    specialists = []
    for i in range(3):
        keras.utils.set_random_seed(i)
        # Same name on purpose: specialists loaded from files often share one.
        specialists.append(build_embedder("small_cnn", 8, (16, 16, 3), width=0.25))
    images = rng.uniform(0, 255, (20, 16, 16, 3)).astype(np.float32)
    concat = np.concatenate([s.predict(images, verbose=0) for s in specialists], 1)
    mean, comp = fit_pca(concat, 6)
    model = concat_pca_embedder(specialists, mean, comp)
    expected = (concat - mean) @ comp
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)
    assert model.trainable_weights == []
    with pytest.raises(ValueError, match="fitted on 5-d"):
        concat_pca_embedder(specialists, mean[:5], comp[:5])


def test_paper_table_layout():
    rows = [
        {"model": "specialist/a", "domain": "a", "gallery": "fused", "recall@1": 0.5},
        {"model": "specialist/a", "domain": "b", "gallery": "fused", "recall@1": 0.1},
        {"model": "universal/snd", "domain": "a", "gallery": "fused", "recall@1": 0.6},
        {"model": "universal/snd", "domain": "b", "gallery": "fused", "recall@1": 0.8},
        {"model": "universal/snd", "domain": "a", "gallery": "domain", "recall@1": 0.9},
    ]
    lines = format_paper_table(rows, "fused", ks=[1]).splitlines()
    assert lines[0] == "[gallery: fused]"
    assert lines[1].split() == ["model", "a", "R@1", "b", "R@1", "average", "R@1"]
    assert lines[3].split() == ["specialist/a", "50.0", "10.0", "30.0"]
    assert lines[4].split() == ["universal/snd", "60.0", "80.0", "70.0"]
