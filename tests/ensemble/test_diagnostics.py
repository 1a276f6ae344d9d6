"""Ensemble diagnostics (paper 002 Fig. 5, 6): numbers against brute force, files on disk."""

import json
import os

import numpy as np
import pytest

from tfembed.ensemble import diagnostics as ed

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png_and_json(png_path):
    with open(png_path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(png_path) > 1000
    with open(os.path.splitext(png_path)[0] + ".json") as f:
        data = json.load(f)
    assert [n for n in os.listdir(os.path.dirname(png_path)) if n.endswith(".tmp")] == []
    return data


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(np.dot(a, b) / (na * nb))


def _brute_force(emb, labels):
    """The three kinds by explicit loops, each value keyed by its pair (for membership checks)."""
    m_count, n, _ = emb.shape
    out = {"positive": {}, "negative": {}, "self": {}}
    for m in range(m_count):
        for i in range(n):
            for j in range(i + 1, n):
                kind = "positive" if labels[i] == labels[j] else "negative"
                out[kind][(m, i, j)] = _cos(emb[m, i], emb[m, j])
    for i in range(n):
        for p in range(m_count):
            for q in range(p + 1, m_count):
                out["self"][(i, p, q)] = _cos(emb[p, i], emb[q, i])
    return out


def _small_inputs(rng, m=3, n=9, d=4):
    emb = rng.normal(size=(m, n, d))
    emb[:, 4] = emb[:, 1]  # duplicate rows: cosine exactly 1 with each other
    emb[-1, 2] = 0.0  # a zero vector: cosine 0, no NaN
    labels = np.array([0, 1, 0, 2, 1, 1, 2, 0, 3])
    return emb, labels


# ------------------------------------------------------------------------- pair_similarities


@pytest.mark.parametrize("m", [1, 2, 3])
def test_pair_similarities_match_brute_force(rng, m):
    emb, labels = _small_inputs(rng, m=m)
    got = ed.pair_similarities(emb, labels)
    expected = _brute_force(emb, labels)
    for kind in ed.PAIR_KINDS:
        ref = np.sort(np.array(list(expected[kind].values()), dtype=np.float64))
        assert got[kind].dtype == np.float64
        assert not np.any(np.isnan(got[kind]))
        np.testing.assert_allclose(np.sort(got[kind]), ref, atol=1e-12)
    if m == 1:
        assert got["self"].shape == (0,)
    else:
        assert np.sum(np.isclose(got["positive"], 1.0)) >= m  # the duplicated pair, per learner


def test_pair_similarities_string_labels_and_one_class(rng):
    emb = rng.normal(size=(2, 6, 3))
    one_class = ed.pair_similarities(emb, ["a"] * 6)
    assert one_class["negative"].shape == (0,)
    assert one_class["positive"].shape == (2 * 15,)
    assert one_class["self"].shape == (6,)
    labels = np.array(["b", "a", "b", "c", "a", "b"])
    got = ed.pair_similarities(emb, labels)
    expected = _brute_force(emb, labels)
    for kind in ed.PAIR_KINDS:
        np.testing.assert_allclose(np.sort(got[kind]),
                                   np.sort(list(expected[kind].values())), atol=1e-12)
    single = ed.pair_similarities(emb[:, :1], [0])
    assert single["positive"].size == single["negative"].size == 0
    assert single["self"].shape == (1,)


def test_pair_similarities_subsample_is_a_seeded_subset(rng):
    m, n = 3, 60
    emb = rng.normal(size=(m, n, 5))
    labels = rng.integers(0, 7, size=n)
    expected = _brute_force(emb, labels)
    max_pairs = 150
    a = ed.pair_similarities(emb, labels, max_pairs=max_pairs, seed=1)
    b = ed.pair_similarities(emb, labels, max_pairs=max_pairs, seed=1)
    c = ed.pair_similarities(emb, labels, max_pairs=max_pairs, seed=2)
    for kind in ed.PAIR_KINDS:
        true = np.array(list(expected[kind].values()))
        assert true.shape[0] > max_pairs
        assert a[kind].shape == (max_pairs,)
        np.testing.assert_array_equal(a[kind], b[kind])
        assert not np.array_equal(np.sort(a[kind]), np.sort(c[kind]))
        # Every drawn value is one of the true set, and distinct pairs were drawn (the
        # values of random Gaussian pairs are distinct almost surely).
        dist = np.min(np.abs(a[kind][:, None] - true[None, :]), axis=1)
        assert np.all(dist < 1e-12)
        assert np.unique(np.round(a[kind], 12)).shape[0] == max_pairs
    # At the exact count no subsampling happens.
    full = ed.pair_similarities(emb, labels, max_pairs=len(expected["self"]), seed=3)
    np.testing.assert_allclose(np.sort(full["self"]), np.sort(list(expected["self"].values())))


def test_pair_similarities_subsample_is_roughly_uniform():
    # Points on a half circle (one class): a uniform subset of the pairs has about the mean
    # cosine of all pairs; a subset biased towards low or high pair numbers would not.
    n = 200
    labels = np.zeros(n, dtype=int)
    angle = np.linspace(0.0, np.pi, n)
    emb = np.stack([np.stack([np.cos(angle), np.sin(angle)], axis=1),
                    np.stack([np.cos(angle), -np.sin(angle)], axis=1)])
    got = ed.pair_similarities(emb, labels, max_pairs=4000, seed=0)["positive"]
    assert got.shape == (4000,)
    # cos of the angle difference is the same for both learners; its distribution over all
    # pairs i < j is known: compare the means.
    i, j = np.triu_indices(n, k=1)
    true_mean = np.mean(np.cos(angle[j] - angle[i]))
    assert abs(np.mean(got) - true_mean) < 0.05


def test_pair_similarities_rejects_bad_input(rng):
    with pytest.raises(ValueError, match="learner_embeddings"):
        ed.pair_similarities(rng.normal(size=(5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="learner_embeddings.*NaN"):
        ed.pair_similarities(np.full((2, 3, 4), np.nan), np.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        ed.pair_similarities(rng.normal(size=(2, 3, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="max_pairs"):
        ed.pair_similarities(rng.normal(size=(2, 3, 4)), np.zeros(3), max_pairs=0)


# ------------------------------------------------------------------ similarity histograms


def test_plot_similarity_histograms_stats_and_files(tmp_path, rng):
    emb, labels = _small_inputs(rng, m=4, n=30, d=8)
    labels = rng.integers(0, 4, size=30)
    diverse = ed.pair_similarities(emb, labels)
    same = ed.pair_similarities(np.repeat(emb[:1], 4, axis=0), labels)  # coinciding learners
    path = str(tmp_path / "fig5.png")
    out = ed.plot_similarity_histograms({"ABE-8": diverse, "ABE-8 without L_div": same}, path,
                                        bins=20)
    data = _assert_png_and_json(path)
    assert data == json.loads(json.dumps(out))
    assert data["bins"] == 20 and len(data["edges"]) == 21
    for title, sims in [("ABE-8", diverse), ("ABE-8 without L_div", same)]:
        panel = data["panels"][title]
        for kind in ed.PAIR_KINDS:
            s = sims[kind]
            st = panel[kind]
            assert st["count"] == s.shape[0]
            assert st["mean"] == pytest.approx(np.mean(s))
            assert st["median"] == pytest.approx(np.median(s))
            assert st["std"] == pytest.approx(np.std(s))
            assert st["p05"] == pytest.approx(np.percentile(s, 5))
            assert st["p95"] == pytest.approx(np.percentile(s, 95))
            dens = np.asarray(panel["density"][kind])
            assert np.sum(dens) * (2.0 / 20) == pytest.approx(1.0)
        assert panel["separation"] == pytest.approx(np.mean(sims["positive"])
                                                    - np.mean(sims["negative"]))
    assert data["panels"]["ABE-8 without L_div"]["self"]["mean"] == pytest.approx(1.0)
    assert data["panels"]["ABE-8"]["self"]["mean"] < 0.9


def test_plot_similarity_histograms_empty_kinds_and_errors(tmp_path, rng):
    sims = ed.pair_similarities(rng.normal(size=(1, 5, 3)), np.zeros(5))  # no negative, no self
    out = ed.plot_similarity_histograms({"1 learner": sims}, tmp_path / "one")
    _assert_png_and_json(str(tmp_path / "one.png"))
    panel = out["panels"]["1 learner"]
    assert panel["negative"]["count"] == 0 and panel["negative"]["mean"] is None
    assert panel["self"]["count"] == 0 and panel["separation"] is None
    with pytest.raises(ValueError, match="panels"):
        ed.plot_similarity_histograms({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="lacks 'negative'"):
        ed.plot_similarity_histograms({"a": {"positive": [0.5]}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\['a'\]\['positive'\].*\[-1, 1\]"):
        ed.plot_similarity_histograms({"a": {"positive": [1.5], "negative": [0.0]}},
                                      tmp_path / "x.png")
    with pytest.raises(ValueError, match="bins"):
        ed.plot_similarity_histograms({"a": sims}, tmp_path / "x.png", bins=0)
    assert not os.path.exists(tmp_path / "x.png")


# ------------------------------------------------------------------------ attention masks


def test_bilinear_resize_constant_identity_and_midpoints(rng):
    a = rng.uniform(size=(4, 5))
    np.testing.assert_allclose(ed.bilinear_resize(a, 4, 5), a)
    np.testing.assert_allclose(ed.bilinear_resize(np.full((3, 3), 0.7), 12, 9), 0.7)
    up = ed.bilinear_resize(np.array([[0.0, 1.0]]), 1, 4)  # half-pixel centres, clamped edges
    np.testing.assert_allclose(up, [[0.0, 0.25, 0.75, 1.0]])
    stacked = ed.bilinear_resize(np.stack([a, 2 * a], axis=-1), 8, 10)
    np.testing.assert_allclose(stacked[..., 1], 2 * ed.bilinear_resize(a, 8, 10))


def _masks(rng, n=4, h=7, w=7, m=4, c=6):
    masks = np.repeat(rng.uniform(size=(n, h, w, 1, c)), m, axis=3)  # identical across learners
    return masks


def test_plot_attention_masks_files_and_identical_learners(tmp_path, rng):
    images = rng.uniform(0, 255, size=(4, 28, 28, 3))
    masks = _masks(rng)
    path = str(tmp_path / "fig6.png")
    out = ed.plot_attention_masks(images, masks, path, max_images=2)
    data = _assert_png_and_json(path)
    assert data == json.loads(json.dumps(out))
    assert data["learners"] == [0, 1, 2]
    assert len(data["channels"]) == 2
    assert data["images_shown"] == 2
    np.testing.assert_allclose(data["pairwise_mask_distance"], np.zeros((4, 4)), atol=1e-15)
    assert data["mean_pairwise_mask_distance"] == pytest.approx(0.0)
    np.testing.assert_allclose(data["mean_mask"], [masks.mean()] * 4)


def test_plot_attention_masks_distinct_learners_and_channel_choice(tmp_path, rng):
    n, h, w, m, c = 3, 5, 6, 4, 5
    masks = _masks(rng, n, h, w, m, c)
    masks[..., 3] = rng.uniform(size=(n, h, w, m))  # only channel 3 differs across learners
    masks[..., 1, 1] = np.clip(masks[..., 1, 1] + 0.05, 0, 1)  # channel 1 a little
    images = rng.uniform(0, 255, size=(n, 20, 24, 3))
    out = ed.plot_attention_masks(images, masks, tmp_path / "m.png", max_images=2)
    assert out["channels"] == [3, 1]
    assert out["images_shown"] == 2
    d = np.asarray(out["pairwise_mask_distance"])
    expected = np.array([[np.mean(np.abs(masks[:, :, :, p] - masks[:, :, :, q]))
                          for q in range(m)] for p in range(m)])
    np.testing.assert_allclose(d, expected, rtol=1e-12, atol=1e-15)
    assert np.all(d[~np.eye(m, dtype=bool)] > 0) and np.all(np.diag(d) == 0)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(out["mean_mask"], masks.mean(axis=(0, 1, 2, 4)))
    var = np.var(masks, axis=3).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(out["channel_learner_variance"], var[[3, 1]])
    # Explicit learners / channels are kept as given.
    out = ed.plot_attention_masks(images, masks, tmp_path / "e.png", learners=[3, 0],
                                  channels=[])
    assert out["learners"] == [3, 0] and out["channels"] == []


def test_plot_attention_masks_grey_images(tmp_path, rng):
    images = rng.uniform(0, 255, size=(2, 16, 16, 1))
    masks = rng.uniform(size=(2, 16, 16, 1, 3))  # single learner, mask at full resolution
    out = ed.plot_attention_masks(images, masks, tmp_path / "g.png")
    _assert_png_and_json(str(tmp_path / "g.png"))
    assert out["learners"] == [0]
    assert out["pairwise_mask_distance"] == [[0.0]]
    assert out["mean_pairwise_mask_distance"] is None


def test_plot_attention_masks_rejects_bad_input(tmp_path, rng):
    images = rng.uniform(0, 255, size=(2, 16, 16, 3))
    masks = rng.uniform(size=(2, 4, 4, 2, 3))
    p = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="images"):
        ed.plot_attention_masks(images[..., :2], masks, p)
    with pytest.raises(ValueError, match="images must be 4-D"):
        ed.plot_attention_masks(images[0], masks, p)
    with pytest.raises(ValueError, match="images: pixels"):
        ed.plot_attention_masks(images + 300, masks, p)
    with pytest.raises(ValueError, match="masks must be 5-D"):
        ed.plot_attention_masks(images, masks[..., 0], p)
    with pytest.raises(ValueError, match="masks has 1 images"):
        ed.plot_attention_masks(images, masks[:1], p)
    with pytest.raises(ValueError, match="masks resolution"):
        ed.plot_attention_masks(images, rng.uniform(size=(2, 32, 4, 2, 3)), p)
    with pytest.raises(ValueError, match=r"masks: values"):
        ed.plot_attention_masks(images, masks * 2 + 0.1, p)
    with pytest.raises(ValueError, match="masks.*NaN"):
        ed.plot_attention_masks(images, np.full_like(masks, np.nan), p)
    with pytest.raises(ValueError, match="learners"):
        ed.plot_attention_masks(images, masks, p, learners=[2])
    with pytest.raises(ValueError, match="channels"):
        ed.plot_attention_masks(images, masks, p, channels=[0, 0])
    with pytest.raises(ValueError, match="max_images"):
        ed.plot_attention_masks(images, masks, p, max_images=0)
    assert not os.path.exists(p)
