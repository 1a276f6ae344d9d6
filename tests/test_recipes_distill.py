"""The distillation (papers 001 / 004) recipes end to end in smoke mode."""

import os

import keras
import pytest

from tfembed import recipes
from tfembed.models import build_embedder
from tfembed.training import distill

DISTILL_RECIPES = sorted(n for n in recipes.list_recipes()
                         if recipes.resolve(n, []).pipeline == "distill")
PAPER = [n for n in DISTILL_RECIPES if not n.endswith("_demo")]
DEMOS = [n for n in DISTILL_RECIPES if n.endswith("_demo")]


def test_every_family_has_paper_and_demo_recipes():
    for name in ("rel_teacher_resnet18_cub", "rel_teacher_resnet18_cars",
                 "rel_teacher_resnet18_sop", "abs_teacher_resnet18_cub", "abs_teacher_at_resnet18_cub",
                 "rel_teacher_hint_resnet18_cub", "mobilenet025_student_cub", "semi_supervised_cub",
                 "cross_quality_lowres_cub", "cross_quality_uncropped_cub", "darkrank_hard_cub",
                 "darkrank_soft_cub", "darkrank_kd_cub"):
        assert name in PAPER
    assert set(DEMOS) == {"distill_demo", "darkrank_demo", "semi_supervised_demo",
                          "cross_quality_demo"}


@pytest.mark.parametrize("recipe", DISTILL_RECIPES)
def test_full_method_lists_are_valid(recipe):
    """Smoke runs of the demos train a subset of the methods: check every list statically."""
    distill.check_config(recipes.resolve(recipe, []))


def test_paper_settings():
    c = recipes.resolve("rel_teacher_resnet18_cub", [])
    assert (c.teacher.backbone, c.model.backbone) == ("resnet101", "resnet18")
    assert c.model.embedding_dim == c.teacher.embedding_dim == 512
    assert c.train.loss == "triplet_hard" and c.train.learning_rate == 1e-5
    assert c.train.classes_per_batch * c.train.images_per_class == 32
    assert c.distill.methods == ["ml", "ml+rel"]
    m = recipes.resolve("mobilenet025_student_cub", [])
    assert m.model.backbone == "mobilenet" and m.model.backbone_kwargs.alpha == 0.25
    d = recipes.resolve("darkrank_soft_cub", [])
    assert d.distill.loss_kwargs.darkrank_soft.to_dict() == {"alpha": 3.0, "beta": 3.0}
    assert d.distill.weights.darkrank_soft == 2.0
    assert d.train.classes_per_batch * d.train.images_per_class == 8
    assert recipes.resolve("semi_supervised_cub", []).distill.labelled_fraction == 0.5


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An untrained smoke-sized teacher (what --set teachers=... takes)."""
    keras.utils.set_random_seed(0)
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.keras")
    build_embedder("small_cnn", 128, (32, 32, 3), width=0.25).save(path)
    return path


def _check_report(report, with_teacher_row=True):
    config = report["config"]
    methods = config["distill"]["methods"]
    rows = report["rows"]
    expected = [distill.row_name(m) for m in methods]
    if with_teacher_row:
        expected.insert(0, f"teacher/{config['teacher']['backbone']}")
    assert [r["model"] for r in rows] == expected
    for r in rows:
        ks = sorted(int(k.split("@")[1]) for k in r if k.startswith("recall@"))
        recalls = [r[f"recall@{k}"] for k in ks]
        assert all(0.0 <= v <= 1.0 for v in recalls) and recalls == sorted(recalls), r
        if config["distill"]["clustering"]:
            assert 0.0 <= r["nmi"] <= 1.0 and 0.0 <= r["f1"] <= 1.0


@pytest.mark.parametrize("recipe", PAPER)
def test_paper_distill_recipes_in_smoke_mode(recipe, paper_data_dir, teacher, run_recipe,
                                             tmp_path):
    sets = [f"data_dir={paper_data_dir}"]
    # The box-crop teacher is trained here (train.crop_boxes); the others load a teacher file.
    if recipe != "cross_quality_uncropped_cub":
        sets.append(f"teachers={teacher}")
    report = run_recipe(recipe, tmp_path, *sets)
    assert report["config"]["smoke"] is True
    _check_report(report)
    for m in report["config"]["distill"]["methods"]:
        assert os.path.isfile(tmp_path / distill.row_name(m) / "model.keras")
    export = report["config"]["export"]["enabled"]
    for m in report["config"]["distill"]["export"] if export else []:
        assert os.path.isfile(tmp_path / "saved_models" / distill.export_name(m) / "1" /
                              "saved_model.pb")


@pytest.mark.parametrize("recipe", DEMOS)
def test_demo_distill_recipes_in_smoke_mode(recipe, run_recipe, tmp_path):
    report = run_recipe(recipe, tmp_path)
    _check_report(report)
    assert os.path.isfile(tmp_path / "teacher" / "model.keras")  # trained, not loaded
    for m in report["config"]["distill"]["export"]:
        assert os.path.isfile(tmp_path / "saved_models" / distill.export_name(m) / "1" /
                              "saved_model.pb")


def test_method_typos_fail_before_the_teacher_trains(tmp_path):
    from tfembed import cli

    with pytest.raises(ValueError, match="'ml\\+rell'"):
        cli.train_main(["tfembed-train", "--recipe", "distill_demo", "--workdir", str(tmp_path),
                        "--set", "smoke=true", "--set", "distill.methods=ml,ml+rell"])
    assert not os.path.exists(tmp_path / "teacher")
    with pytest.raises(ValueError, match="'ml\\+rell'"):
        distill.parse_method("ml+rell")
    with pytest.raises(ValueError, match="more than one"):
        distill.parse_method("ml+abs+rel")
    with pytest.raises(ValueError, match="no labels"):
        distill.parse_method("ml@unlabelled")
    assert distill.parse_method("ml+rel+at@semi") == (["ml", "rel", "at"], "semi")
    assert distill.export_name("ml+rel@semi") == "student_ml_rel_semi"


def test_teacher_train_overrides_and_typos():
    c = recipes.resolve("darkrank_hard_cub", [])
    teacher = distill.teacher_config(c)
    assert teacher.train.learning_rate == 0.01 and c.train.learning_rate == 5e-4
    assert teacher.model.backbone == "resnet50"
    c.distill.teacher_train = {"learnig_rate": 0.1}
    with pytest.raises(ValueError, match="learnig_rate"):
        distill.teacher_config(c)


def test_distill_recipe_with_a_teacher_cache_in_memory(paper_data_dir, teacher, run_recipe,
                                                       tmp_path):
    report = run_recipe("rel_teacher_resnet18_cub", tmp_path, f"data_dir={paper_data_dir}",
                        f"teachers={teacher}", "teacher_cache.mode=memory")
    _check_report(report)
    assert {r["model"] for r in report["rows"]} >= {"student/ml", "student/ml+rel"}
    assert not any("teacher_cache" in p for p in os.listdir(tmp_path))   # memory: nothing written


def test_teacher_cache_refuses_hint_and_semi_supervised_methods(tmp_path):
    from tfembed import cli

    for method, extra in (("ml+rel+at", ["distill.attention_layers=[['a','b']]"]),
                          ("ml+rel@semi", ["distill.labelled_fraction=0.5"])):
        with pytest.raises(ValueError, match="cannot use teacher_cache.mode='disk'"):
            cli.train_main(["tfembed-train", "--recipe", "distill_demo", "--workdir",
                            str(tmp_path), "--set", "smoke=true", "--set",
                            f"distill.methods={method}", "--set", "teacher_cache.mode=disk",
                            *[a for s in extra for a in ("--set", s)]])
    assert not os.path.exists(tmp_path / "teacher")
