"""Diagnostics plots (paper 000 Fig. 2, 4, 5): numbers against brute force, files on disk."""

import json
import os

import numpy as np
import pytest

from tfembed.evaluation import diagnostics as diag

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png_and_json(png_path):
    with open(png_path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC
    assert os.path.getsize(png_path) > 1000
    json_path = os.path.splitext(png_path)[0] + ".json"
    with open(json_path) as f:
        data = json.load(f)
    # No temporary files left behind by the atomic writes.
    leftovers = [n for n in os.listdir(os.path.dirname(png_path)) if n.endswith(".tmp")]
    assert leftovers == []
    return data


def _clusters(rng, n_per_domain=(40, 30, 50), dim=16, spread=0.1, offset=20.0):
    return {f"d{i}": rng.normal(size=(n, dim)) * spread + offset * np.eye(dim)[i]
            for i, n in enumerate(n_per_domain)}


# ---------------------------------------------------------------------------------- PCA


def test_pca_spectrum_matches_eigvalsh_of_cov(rng):
    for shape in [(50, 8), (6, 20)]:  # covariance path and (fewer points than dims) SVD path
        x = rng.normal(size=shape) @ rng.normal(size=(shape[1], shape[1]))
        expected = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
        got = diag.pca_spectrum(x)
        assert got.dtype == np.float64 and got.shape == (shape[1],)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * expected[0])
        assert np.all(np.diff(got) <= 0)
        np.testing.assert_allclose(diag.pca_spectrum(x, n=3), got[:3])


def test_pca_spectrum_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        diag.pca_spectrum(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="embeddings.*NaN"):
        diag.pca_spectrum(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        diag.pca_spectrum(np.ones((1, 4)))


def test_plot_pca_spectra_stats_and_files(tmp_path, rng):
    eig_flat = np.ones(10)  # participation ratio = 10, 90 % needs 9 components
    eig_one = np.array([5.0, 0.0, 0.0])  # one direction only
    emb = rng.normal(size=(40, 6)) * np.array([3, 2, 1, 0.5, 0.1, 0.1])
    spectra = {"cub": {"specialist": eig_flat, "universal": eig_one[::-1]},  # unsorted input
               "cars": {"random": emb, "single": emb[:1]}}
    data = diag.plot_pca_spectra(spectra, tmp_path / "pca.png", top=4)
    on_disk = _assert_png_and_json(str(tmp_path / "pca.png"))
    assert on_disk == json.loads(json.dumps(data))
    cub = on_disk["domains"]["cub"]
    assert cub["specialist"]["n_components_90"] == 9
    assert cub["specialist"]["participation_ratio"] == pytest.approx(10.0)
    assert cub["universal"]["eigenvalues"] == [5.0, 0.0, 0.0]
    assert cub["universal"]["n_components_90"] == 1
    assert cub["universal"]["participation_ratio"] == pytest.approx(1.0)
    # A 2-D array is embeddings; a single embedding is skipped (warned), not an error.
    assert set(on_disk["domains"]["cars"]) == {"random"}
    np.testing.assert_allclose(on_disk["domains"]["cars"]["random"]["eigenvalues"],
                               diag.pca_spectrum(emb))
    with pytest.raises(ValueError, match="'cub'.*'m'.*NaN"):
        diag.plot_pca_spectra({"cub": {"m": np.array([1.0, np.nan])}}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="empty"):
        diag.plot_pca_spectra({}, tmp_path / "bad.png")


# ---------------------------------------------------------------------------------- distance ratios


def _brute_force_ratios(teacher, student, labels):
    intra, inter = [], []
    n = len(labels)
    for i in range(n):
        for j in range(i + 1, n):
            dt = np.linalg.norm(teacher[i] - teacher[j])
            if dt < 1e-12:
                continue
            r = np.linalg.norm(student[i] - student[j]) / dt
            (intra if labels[i] == labels[j] else inter).append(r)
    return np.sort(intra), np.sort(inter)


def test_distance_ratios_match_double_loop(rng):
    teacher = rng.normal(size=(13, 5))
    teacher[7] = teacher[3]  # a duplicate pair: teacher distance 0, skipped
    student = rng.normal(size=(13, 9))  # another dimension is fine
    labels = rng.integers(0, 3, size=13)
    out = diag.distance_ratios(teacher, student, labels)
    intra, inter = _brute_force_ratios(teacher, student, labels)
    np.testing.assert_allclose(np.sort(out["intra"]), intra, rtol=1e-12)
    np.testing.assert_allclose(np.sort(out["inter"]), inter, rtol=1e-12)
    assert len(out["intra"]) + len(out["inter"]) == 13 * 12 // 2 - 1


def test_distance_ratios_subsample_is_seeded_subset(rng):
    teacher, student = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    labels = rng.integers(0, 4, size=30)
    full = diag.distance_ratios(teacher, student, labels)
    a = diag.distance_ratios(teacher, student, labels, max_pairs=100, seed=1)
    b = diag.distance_ratios(teacher, student, labels, max_pairs=100, seed=1)
    assert len(a["intra"]) + len(a["inter"]) == 100
    np.testing.assert_array_equal(a["inter"], b["inter"])
    # Every sampled ratio is one of the true ones (pair decoding is right), drawn without repeats.
    all_ratios = np.concatenate([full["intra"], full["inter"]])
    sampled = np.concatenate([a["intra"], a["inter"]])
    assert np.all(np.min(np.abs(sampled[:, None] - all_ratios[None, :]), axis=1) < 1e-12)
    assert len(np.unique(np.round(sampled, 12))) == 100
    assert np.all(np.isin(np.round(a["intra"], 12), np.round(full["intra"], 12)))


def test_proportional_distances_give_constant_ratio(tmp_path, rng):
    teacher = rng.normal(size=(20, 6))
    out = diag.distance_ratios(teacher, 2.0 * teacher, rng.integers(0, 3, size=20))
    np.testing.assert_allclose(out["intra"], 2.0)
    np.testing.assert_allclose(out["inter"], 2.0)
    data = diag.plot_distance_ratio_density({"proportional": out}, tmp_path / "ratio.png")
    for kind in ("intra", "inter"):
        stats = data["titles"]["proportional"][kind]
        assert stats["mean"] == pytest.approx(2.0)
        assert stats["cv"] == pytest.approx(0.0, abs=1e-12)
        assert data["titles"]["proportional"]["density"][kind] is None  # point mass: a line
    _assert_png_and_json(str(tmp_path / "ratio.png"))


def test_plot_distance_ratio_density_keys_and_stats(tmp_path, rng):
    teacher = rng.normal(size=(60, 8))
    labels = np.repeat(np.arange(6), 10)
    student = teacher * rng.uniform(0.3, 1.0, size=(60, 1)) + 0.2 * rng.normal(size=(60, 8))
    ratios = diag.distance_ratios(teacher, student, labels)
    lone = diag.distance_ratios(teacher[:1], student[:1], labels[:1])  # no pairs: warned, empty
    assert lone["intra"].size == 0 and lone["inter"].size == 0
    data = diag.plot_distance_ratio_density({"imagenet / cub": ratios, "lone": lone},
                                            str(tmp_path / "ratios.png"))
    on_disk = _assert_png_and_json(str(tmp_path / "ratios.png"))
    assert on_disk == json.loads(json.dumps(data))
    entry = on_disk["titles"]["imagenet / cub"]
    for kind in ("intra", "inter"):
        r = ratios[kind]
        stats = entry[kind]
        assert set(stats) == {"count", "mean", "median", "std", "p05", "p95", "cv"}
        assert stats["count"] == len(r)
        assert stats["median"] == pytest.approx(np.median(r))
        assert stats["p05"] == pytest.approx(np.percentile(r, 5))
        assert stats["cv"] == pytest.approx(np.std(r) / np.mean(r))
        dens = np.asarray(entry["density"][kind])
        grid = np.asarray(entry["density"]["grid"])
        assert dens.shape == grid.shape and np.all(dens >= 0)
    assert on_disk["titles"]["lone"]["intra"]["count"] == 0
    with pytest.raises(ValueError, match="'t'.*'inter'.*NaN"):
        diag.plot_distance_ratio_density({"t": {"intra": [1.0], "inter": [np.nan]}},
                                         tmp_path / "bad.png")


def test_density_without_scipy_falls_back_to_histogram(tmp_path, rng, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # makes the import raise ImportError
    ratios = {"intra": rng.normal(1.0, 0.1, size=500), "inter": rng.normal(0.6, 0.1, size=2000)}
    data = diag.plot_distance_ratio_density({"t": ratios}, tmp_path / "hist.png")
    density = data["titles"]["t"]["density"]
    assert density["method"] == "histogram"
    grid = np.asarray(density["grid"])
    for kind in ("intra", "inter"):
        dens = np.asarray(density[kind])
        assert np.all(dens >= 0)
        assert np.sum(dens) * (grid[1] - grid[0]) == pytest.approx(1.0, abs=0.1)
        # The mode is where the samples were drawn around.
        assert grid[np.argmax(dens)] == pytest.approx(np.mean(ratios[kind]), abs=0.1)
    _assert_png_and_json(str(tmp_path / "hist.png"))


def test_distance_ratios_rejects_bad_input(rng):
    with pytest.raises(ValueError, match="teacher_emb.*empty"):
        diag.distance_ratios(np.zeros((0, 3)), np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="student_emb.*NaN"):
        diag.distance_ratios(np.ones((3, 2)), np.array([[1, 2], [np.nan, 1], [0, 0]]), [0, 1, 2])
    with pytest.raises(ValueError, match="same length"):
        diag.distance_ratios(np.ones((3, 2)), np.ones((3, 2)), [0, 1])


# ---------------------------------------------------------------------------------- purity, t-SNE


def test_domain_nn_purity_separated_and_mixed(rng):
    clusters = _clusters(rng, n_per_domain=(300, 200, 250))
    x = np.concatenate(list(clusters.values()))
    ids = np.repeat([0, 1, 2], [300, 200, 250])
    assert diag.domain_nn_purity(x, ids, block_size=64) == 1.0
    # Same points, domain labels shuffled: the neighbour's domain is random.
    mixed = rng.permutation(ids)
    chance = diag.chance_nn_purity(mixed)
    sizes = np.array([300, 200, 250])
    assert chance == pytest.approx(np.sum(sizes * (sizes - 1)) / (750 * 749))
    assert abs(diag.domain_nn_purity(x, mixed, block_size=64) - chance) < 0.06
    # Blockwise result equals the brute-force N x N computation.
    y = rng.normal(size=(97, 5))
    lab = rng.integers(0, 3, size=97)
    d = np.linalg.norm(y[:, None] - y[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    brute = np.mean(lab[np.argmin(d, axis=1)] == lab)
    assert diag.domain_nn_purity(y, lab, block_size=10) == pytest.approx(brute)


def test_tsne_embeddings_shapes_subsample_and_single_point(rng):
    by_domain = _clusters(rng, n_per_domain=(80, 30))
    by_domain["lonely"] = rng.normal(size=(1, 16))  # skipped with a warning
    points, ids, names = diag.tsne_embeddings(by_domain, perplexity=50,
                                              max_points_per_domain=50, seed=0)
    assert names == ["d0", "d1"]
    assert points.shape == (80, 2) and ids.shape == (80,)
    assert np.bincount(ids).tolist() == [50, 30]
    assert np.all(np.isfinite(points))
    with pytest.raises(ValueError, match="'d1'.*NaN"):
        diag.tsne_embeddings({"d0": np.ones((4, 2)), "d1": np.array([[np.nan, 0.0]] * 3)})
    with pytest.raises(ValueError, match="empty"):
        diag.tsne_embeddings({})


def test_plot_tsne_writes_files_and_purity(tmp_path, rng):
    separated = _clusters(rng, n_per_domain=(30, 25, 20))
    mixed = {k: rng.normal(size=(len(v), 16)) for k, v in separated.items()}
    data = diag.plot_tsne({"specialists": separated, "random init": mixed},
                          tmp_path / "tsne.png", perplexity=50, seed=0)
    on_disk = _assert_png_and_json(str(tmp_path / "tsne.png"))
    assert on_disk == json.loads(json.dumps(data))
    panel = on_disk["panels"]["specialists"]
    assert set(panel) >= {"points", "domain_ids", "domain_names", "domain_nn_purity",
                          "chance_nn_purity", "perplexity"}
    assert len(panel["points"]) == len(panel["domain_ids"]) == 75
    assert panel["domain_names"] == ["d0", "d1", "d2"]
    assert panel["perplexity"] == pytest.approx(74 / 3)  # clipped for 75 points
    assert panel["domain_nn_purity"] == 1.0
    assert on_disk["panels"]["random init"]["domain_nn_purity"] < 0.7


# ---------------------------------------------------------------------------------- recall curves


def test_plot_recall_curves_best_epoch(tmp_path):
    histories = {
        "fused/naive": {
            "cub": [(1, 0.40), (2, 0.55), (3, 0.50), (4, 0.45)],   # overfits: best at epoch 2
            "inshop": [(4, 0.80), (1, 0.50), (2, 0.60), (3, 0.70)],  # unsorted, best at the end
            "cars": [(1, 0.30), (2, 0.35), (3, 0.35)],  # tie: earliest epoch counts
        },
        "fused/bal": {"cub": [(10, 0.5)]},  # a single evaluation is kept
    }
    data = diag.plot_recall_curves(histories, tmp_path / "recall.png", k=1)
    on_disk = _assert_png_and_json(str(tmp_path / "recall.png"))
    assert on_disk == json.loads(json.dumps(data))
    assert on_disk["k"] == 1
    cub = on_disk["models"]["fused/naive"]["cub"]
    assert (cub["best"], cub["best_epoch"], cub["last"], cub["last_epoch"]) == (0.55, 2, 0.45, 4)
    assert cub["drop_from_best"] == pytest.approx(0.10)
    inshop = on_disk["models"]["fused/naive"]["inshop"]
    assert inshop["best_epoch"] == 4 and inshop["points"][0] == [1, 0.5]
    assert on_disk["models"]["fused/naive"]["cars"]["best_epoch"] == 2
    assert on_disk["models"]["fused/bal"]["cub"]["best_epoch"] == 10


def test_plot_recall_curves_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        diag.plot_recall_curves({}, tmp_path / "r.png")
    with pytest.raises(ValueError, match="'m'.*'cub'.*empty"):
        diag.plot_recall_curves({"m": {"cub": []}}, tmp_path / "r.png")
    with pytest.raises(ValueError, match="'m'.*'cub'.*NaN"):
        diag.plot_recall_curves({"m": {"cub": [(1, np.nan)]}}, tmp_path / "r.png")
    with pytest.raises(ValueError, match="fractions"):
        diag.plot_recall_curves({"m": {"cub": [(1, 65.3)]}}, tmp_path / "r.png")
    assert not os.path.exists(tmp_path / "r.png")


# ---------------------------------------------------------------------------------- index


def test_write_diagnostics_index(tmp_path):
    diag.plot_recall_curves({"m": {"cub": [(1, 0.5), (2, 0.6)]}}, tmp_path / "recall.png")
    diag.write_diagnostics_index(tmp_path, [str(tmp_path / "recall.png")])
    data = diag.write_diagnostics_index(tmp_path, {"pca": "pca.png"})  # updates, keeps recall
    with open(tmp_path / "diagnostics.json") as f:
        assert json.load(f) == data
    assert data["diagnostics"]["recall"] == {"png": "recall.png", "json": "recall.json"}
    assert data["diagnostics"]["pca"] == {"png": "pca.png", "json": None}
