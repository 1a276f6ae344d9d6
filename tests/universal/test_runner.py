"""The universal (paper 000) recipes end to end in smoke mode, and what they leave behind."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

from tests.conftest import SMALL_CNN
from tfembed import cli
from tfembed.models import build_embedder
from tfembed.universal.config import UniversalMethod

PAPER_UNIVERSAL = {
    # recipe: (domains, methods)
    "snd_universal": (["cub", "cars", "inshop"], ["snd"]),
    "rkd_universal": (["cub", "cars", "inshop"], ["rkd"]),
    "baseline_concat_pca": (["cub", "cars", "inshop"], ["concat_pca"]),
    "baseline_triplet_fused": (["cub", "cars", "inshop"],
                               ["triplet_naive", "triplet_ds", "triplet_bal"]),
    "universal_table2": (["cub", "cars", "inshop"], ["concat_pca", "triplet_naive", "triplet_ds",
                                                     "triplet_bal", "rkd", "snd"]),
    "universal_table4": (["cub", "cars", "inshop"], ["concat_pca", "ms_naive", "ms_ds", "ms_bal",
                                                     "rkd", "snd"]),
    "snd_universal_sop_vid_inshop": (["sop", "vehicleid", "inshop"], ["snd"]),
    "snd_imagenet_cub": (["imagenet", "cub"], ["concat_pca", "triplet_weighted", "rkd", "snd"]),
    "snd_imagenet_cars": (["imagenet", "cars"], ["concat_pca", "triplet_weighted", "rkd", "snd"]),
}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Untrained smoke-sized specialists (what --set teachers=... takes), one file per domain."""
    root = tmp_path_factory.mktemp("teachers")
    paths = {}
    for i, name in enumerate(["cub", "cars", "inshop", "sop", "vehicleid", "imagenet"]):
        keras.utils.set_random_seed(i)
        # Default names on purpose: teachers loaded from files often share one.
        model = build_embedder("small_cnn", 128, (32, 32, 3))
        paths[name] = str(root / f"{name}.keras")
        model.save(paths[name])
    return paths


def _assert_rows(rows, models, domains, galleries):
    have = {(r["model"], r["domain"], r["gallery"]) for r in rows}
    for model in models:
        for d in domains:
            for g in galleries:
                assert (model, d, g) in have, (model, d, g)
    for r in rows:
        values = [r[k] for k in sorted(r) if k.startswith("recall@")]
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values), r


@pytest.mark.smoke
@pytest.mark.parametrize("recipe", sorted(PAPER_UNIVERSAL))
def test_paper_universal_recipes_in_smoke_mode(recipe, paper_data_dir, teachers, run_recipe,
                                                tmp_path):
    domains, methods = PAPER_UNIVERSAL[recipe]
    report = run_recipe(recipe, tmp_path, f"data_dir={paper_data_dir}",
                  "teachers=" + ",".join(teachers[d] for d in domains))
    assert report["config"]["smoke"] is True and [
        UniversalMethod.of(m).name for m in report["config"]["universal"]["methods"]] == methods
    fused = report["config"]["eval"]["fused"]
    galleries = ("domain", "fused") if fused else ("domain",)
    _assert_rows(report["rows"], [f"specialist/{d}" for d in domains] +
                 [UniversalMethod.of(m).row for m in methods], domains, galleries)
    if not fused:  # ImageNet shares categories with CUB/CARS: no fused gallery (000 §5.3)
        assert all(r["gallery"] == "domain" for r in report["rows"])
    for m in report["config"]["universal"]["export"]:
        assert os.path.isfile(tmp_path / "saved_models" / f"universal_{m}" / "1" /
                              "saved_model.pb")


def test_universal_recipe_trains_its_specialists_without_teachers(paper_data_dir, run_recipe,
                                                                  tmp_path):
    report = run_recipe("snd_universal", tmp_path, f"data_dir={paper_data_dir}",
                        "domains=cub,cars")
    for d in ("cub", "cars"):
        assert os.path.isfile(tmp_path / "specialists" / d / "model.keras")
    _assert_rows(report["rows"], ["specialist/cub", "specialist/cars", "universal/snd"],
                 ["cub", "cars"], ("domain", "fused"))


def test_teacher_count_must_match_domains(paper_data_dir, teachers, tmp_path):
    argv = ["tfembed-train", "--recipe", "snd_universal", "--workdir", str(tmp_path), "--set",
            "smoke=true", "--set", f"data_dir={paper_data_dir}", "--set",
            f"teachers={teachers['cub']}"]
    with pytest.raises(ValueError, match="teachers has 1 entries but the recipe has 3 domains"):
        cli.train_main(argv)


def test_unknown_method_is_named(paper_data_dir, tmp_path):
    argv = ["tfembed-train", "--recipe", "snd_universal", "--workdir", str(tmp_path), "--set",
            "smoke=true", "--set", f"data_dir={paper_data_dir}", "--set",
            "universal.methods=snd,trplet_ds"]
    with pytest.raises(ValueError, match="universal method 'trplet_ds'.*fused_losses"):
        cli.train_main(argv)


def _served_embeddings(saved_model, work):
    """Embeds two PNGs with the SavedModel in a process where keras/tfembed cannot be imported."""
    files = []
    for i in range(2):
        path = os.path.join(work, f"{i}.png")
        Image.fromarray((np.arange(28 * 28).reshape(28, 28) * (i + 1) % 255).astype(np.uint8)
                        ).save(path)
        files.append(path)
    code = textwrap.dedent(f"""
        import json, sys
        for name in ("keras", "tf_keras", "tfembed"):
            sys.modules[name] = None
        import tensorflow as tf
        m = tf.saved_model.load({saved_model!r})
        images = tf.constant([open(f, "rb").read() for f in {files!r}])
        out = m.signatures["serving_default"](images=images)["embeddings"].numpy()
        print(json.dumps(out.tolist()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.smoke
def test_demo_recipe_full_pipeline_in_smoke_mode(run_recipe, tmp_path):
    report = run_recipe("snd_universal_demo", tmp_path, "eval.ks=1,2")
    domains = ["digits", "fashion", "glyphs"]
    models = ([f"specialist/{d}" for d in domains] + ["baseline/pretrained",
              "baseline/concat_pca", "baseline/triplet_naive", "baseline/triplet_ds",
              "universal/snd"])
    _assert_rows(report["rows"], models, domains, ("domain", "fused"))
    for name in ("recall_curves", "tsne", "pca_spectra", "distance_ratios"):
        png = tmp_path / "diagnostics" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((tmp_path / "diagnostics" / f"{name}.json").read_text())
    curves = json.loads((tmp_path / "diagnostics" / "recall_curves.json").read_text())
    assert set(curves["models"]) == {"baseline/triplet_naive", "baseline/triplet_ds",
                                     "universal/snd"}
    served = _served_embeddings(str(tmp_path / "saved_models" / "universal_snd" / "1"),
                                str(tmp_path))
    assert served.shape == (2, 128) and np.allclose(np.linalg.norm(served, axis=1), 1, atol=1e-4)
    student = keras.models.load_model(tmp_path / "universal" / "snd" / "model.keras")
    assert student.output_shape == (None, 128)


def test_sigma_selfdistill_demo_in_smoke_mode(run_recipe, tmp_path):
    report = run_recipe("snd_sigma_selfdistill_demo", tmp_path, "eval.ks=1")
    models = {r["model"] for r in report["rows"]}
    assert models == {"specialist/glyphs", "self_distill/sigma=0.5", "self_distill/sigma=1"}


def test_universal_recipe_with_a_teacher_cache_on_disk(paper_data_dir, teachers, run_recipe,
                                                       tmp_path):
    domains = ["cub", "cars", "inshop"]
    report = run_recipe("snd_universal", tmp_path, f"data_dir={paper_data_dir}",
                        "teachers=" + ",".join(teachers[d] for d in domains),
                        "universal.methods=rkd,snd", "teacher_cache.mode=disk",
                        "teacher_cache.views=2")
    _assert_rows(report["rows"], [UniversalMethod.of(m).row for m in ("rkd", "snd")], domains, ("domain",))
    # One cache for both students: every domain's training split × 2 views.
    meta = json.load(open(tmp_path / "universal" / "teacher_cache" / "meta.json"))
    assert meta["teacher_views"] == 2 and meta["domain_names"] == domains
    assert sorted(os.listdir(tmp_path / "universal" / "teacher_cache")) == [
        "0.npy", "1.npy", "2.npy", "meta.json"]


def test_teacher_cache_mode_typo_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="teacher_cache.mode must be one of"):
        cli.train_main(["tfembed-train", "--recipe", "snd_universal_demo", "--workdir",
                        str(tmp_path), "--set", "smoke=true", "--set", "teacher_cache.mode=dsik"])
    assert not os.path.exists(tmp_path / "specialists")


@pytest.mark.parametrize("cache", ["off", "memory"])
def test_demo_distills_specialists_of_other_dimensions_and_sizes(run_recipe, tmp_path, cache):
    # Specialists "from three teams" (DESIGN §7): 16/32/64-d at 28/36/44 px, none the student's
    # size. Each is evaluated and distilled at its own size, the concatenation resizes for the
    # smaller ones, and the student keeps its own.
    paths = []
    for i, (dim, size) in enumerate([(16, 28), (32, 36), (64, 44)]):
        keras.utils.set_random_seed(i)
        model = build_embedder("small_cnn", dim, (size, size, 3), resize_size=size + 4,
                               width=0.25)
        paths.append(str(tmp_path / f"team{i}.keras"))
        model.save(paths[-1])
    # The student on the small CNN (the machinery is under test, not the pretrained network).
    report = run_recipe("snd_universal_demo", tmp_path / "run", "eval.ks=1", *SMALL_CNN,
                        "teachers=" + ",".join(paths), "universal.methods=concat_pca,snd",
                        f"teacher_cache.mode={cache}", "teacher_cache.views=1",
                        "universal.diagnostics=false", "export.enabled=false")
    domains = ["digits", "fashion", "glyphs"]
    _assert_rows(report["rows"], [f"specialist/{d}" for d in domains] +
                 ["baseline/concat_pca", "universal/snd"], domains, ("domain", "fused"))
    student = keras.models.load_model(tmp_path / "run" / "universal" / "snd" / "model.keras")
    assert student.output_shape == (None, 128)


def test_demo_with_dynamic_domain_sampling_writes_its_history(run_recipe, tmp_path):
    """``snd_dynamic`` next to ``snd`` (the recipe's DS): one run, the same specialists, each
    student under its own policy; only the dynamic one has a sampling history."""
    report = run_recipe("snd_universal_demo", tmp_path, "eval.ks=1", *SMALL_CNN,
                        "universal.methods=snd,snd_dynamic", "universal.steps=4",
                        "universal.steps_per_epoch=2", "universal.diagnostics=false",
                        "export.enabled=false")
    assert {"universal/snd", "universal/snd_dynamic"} <= {r["model"] for r in report["rows"]}
    assert not os.path.exists(tmp_path / "universal" / "snd" / "sampling.json")
    log = json.load(open(tmp_path / "universal" / "snd_dynamic" / "sampling.json"))
    assert [h["step"] for h in log["history"]] == [0, 2, 4]
    assert log["initial"] == "balanced" and log["interval"] == 2
    for h in log["history"]:
        assert sum(h["weights"]) == pytest.approx(1.0)
