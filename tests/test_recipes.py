"""Recipes and the CLI: overrides, clear errors, and every recipe end to end in smoke mode."""

import os

import pytest

from tfembed import cli, recipes

PAPER_SPECIALISTS = ["specialist_cub", "specialist_cars", "specialist_inshop", "specialist_sop"]


def test_recipes_are_listed():
    names = recipes.list_recipes()
    for name in PAPER_SPECIALISTS + ["snd_universal_demo"]:
        assert name in names
    assert not any(n.startswith("_") for n in names)


def test_every_recipe_states_command_and_expected_result():
    for name in recipes.list_recipes():
        doc = recipes.doc(name)
        assert "tfembed-train --recipe " + name in doc, name
        assert "Expected result" in doc, name


def test_overrides_are_typed():
    c = recipes.resolve("specialist_cub", ["train.learning_rate=3e-5", "train.steps=7",
                                           "train.flip=false", "eval.ks=1,5",
                                           "teachers=a.keras,b.keras", "model.weights=/w.h5"])
    assert c.train.learning_rate == 3e-5 and c.train.steps == 7 and c.train.flip is False
    assert list(c.eval.ks) == [1, 5] and list(c.teachers) == ["a.keras", "b.keras"]
    assert c.model.weights == "/w.h5"


def test_unknown_key_names_the_key_and_valid_ones():
    with pytest.raises(recipes.RecipeError) as e:
        recipes.resolve("specialist_cub", ["train.learnig_rate=1"])
    msg = str(e.value)
    assert "train.learnig_rate" in msg and "learning_rate" in msg and "Did you mean" in msg


def test_a_recipe_carries_only_its_pipelines_blocks():
    blocks = {"specialist_cub": set(), "snd_universal_demo": {"universal", "teacher_cache"},
              "distill_demo": {"teacher", "distill", "teacher_cache"}, "abe_demo": {"ensemble"},
              "dm2_demo": {"cohort"}}
    method_blocks = {"universal", "teacher_cache", "teacher", "distill", "ensemble", "cohort"}
    for name, own in blocks.items():
        assert set(recipes.resolve(name).keys()) & method_blocks == own, name
    with pytest.raises(recipes.RecipeError, match="unknown key 'ensemble.methods'"):
        recipes.resolve("snd_universal_demo", ["ensemble.methods=abe8"])


def test_methods_are_structured_entries_and_names_still_work():
    c = recipes.resolve("distill_demo")
    assert c.distill.methods[1] == {"terms": ["ml", "abs"]}
    c = recipes.resolve("distill_demo", ["distill.methods=ml,ml+rel@semi"])
    from tfembed.distill.config import DistillMethod

    assert [DistillMethod.of(m) for m in c.distill.methods] == [
        DistillMethod(("ml",)), DistillMethod(("ml", "rel"), "semi")]


def test_wrong_type_names_the_key():
    with pytest.raises(recipes.RecipeError, match="train.steps.*integer"):
        recipes.resolve("specialist_cub", ["train.steps=many"])
    with pytest.raises(recipes.RecipeError, match="smoke.*boolean"):
        recipes.resolve("specialist_cub", ["smoke=perhaps"])


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(recipes.RecipeError, match="specialist_cub"):
        recipes.get_recipe("specialist_cbu")


def test_smoke_applies_unless_set_explicitly():
    c = recipes.resolve("specialist_cub", ["smoke=true", "train.steps=3"])
    assert c.train.steps == 3 and c.model.image_size == 32 and c.model.weights == ""


def test_cli_reports_bad_key_with_exit_code_2(capsys):
    code = cli.train_main(["tfembed-train", "--recipe", "specialist_cub", "--set", "modle.x=1"])
    assert code == 2
    assert "modle.x" in capsys.readouterr().err


@pytest.mark.smoke
@pytest.mark.parametrize("recipe", PAPER_SPECIALISTS)
def test_paper_specialist_recipes_in_smoke_mode(recipe, paper_data_dir, run_recipe,
                                                tmp_path):
    # The four recipes differ in their domain only: one builds, trains and exports the paper's
    # ResNet-50; the others swap in the small CNN to keep the suite in its time budget.
    extra = [] if recipe == "specialist_cub" else ["model.backbone=small_cnn"]
    report = run_recipe(recipe, tmp_path, f"data_dir={paper_data_dir}", *extra)
    assert report["recipe"] == recipe
    assert report["config"]["smoke"] is True
    domain = recipe.split("_", 1)[1]
    rows = [r for r in report["rows"] if r["gallery"] == "domain"]
    assert [(r["model"], r["domain"]) for r in rows] == [(f"specialist/{domain}", domain)]
    assert 0.0 <= rows[0]["recall@1"] <= rows[0]["recall@8"] <= 1.0
    assert os.path.isfile(tmp_path / "specialists" / domain / "model.keras")
    assert os.path.isfile(tmp_path / "saved_models" / f"specialist_{domain}" / "1" /
                          "saved_model.pb")


def test_a_short_recipe_run_learns(run_recipe, tmp_path):
    """The smoke runs above check that every recipe runs; this one checks that training through
    the recipe path learns: 100 steps of the demo specialist (the pretrained EfficientNet-Lite0
    at the smoke runs' 32 px) on digits against the same network before training (both evaluated
    by the pipeline on the same 300 test images; on digits ImageNet features are weak).

    Measured on an AMD EPYC (2 cores), R@1 before → after, seeds 0 / 1 / 2: 0.10 → 0.30,
    0.14 → 0.32, 0.11 → 0.23 at 100 steps; at the 60 steps this test used before, 0.10 → 0.19,
    0.14 → 0.23, 0.11 → 0.16 on that machine — a gain at the 0.10 margin's edge, which passed on
    the Xeon it was written on and failed there."""
    report = run_recipe("universal:demo", tmp_path, "pipeline=specialists", "domains=digits",
                        "train.steps=100", "train.steps_per_epoch=100", "export.enabled=false",
                        "eval.random_init_baseline=true", "eval.ks=1",
                        "eval.max_images_per_split=300")
    r1 = {r["model"]: r["recall@1"] for r in report["rows"] if r["gallery"] == "domain"}
    assert r1["specialist/digits"] > r1["baseline/pretrained"] + 0.1, r1


@pytest.fixture(scope="module")
def uned_dir(tmp_path_factory):
    from tfembed.data.testing import make_uned_layout

    root = tmp_path_factory.mktemp("uned")
    make_uned_layout(root, train_classes=3, test_classes=3, per_class=4)
    return root


def _uned_rows(report, model):
    return {(r["gallery"], r["domain"]): r for r in report["rows"] if r["model"] == model}


@pytest.mark.smoke
def test_snd_uned_in_smoke_mode_reports_uneds_protocol(uned_dir, run_recipe, tmp_path):
    """Specialists, SND student and export on three UnED domains (test → test, test → index,
    and met's pairs), scored by UnED's separate and merged index instead of 000's galleries."""
    report = run_recipe("snd_uned", tmp_path, f"data_dir={uned_dir}",
                        "domains=uned:cars,uned:inshop,uned:met")
    for model in ("specialist/cars", "specialist/inshop", "specialist/met", "universal/snd"):
        rows = _uned_rows(report, model)
        assert set(rows) == {(g, d) for g in ("uned_separate", "uned_merged")
                             for d in ("cars", "inshop", "met")}, model
        for row in rows.values():
            assert 0.0 <= row["recall@1"] <= 1.0 and 0.0 <= row["mmp@5"] <= 1.0
    assert not [r for r in report["rows"] if r["gallery"] in ("domain", "fused")]
    assert os.path.isfile(tmp_path / "saved_models" / "universal_snd" / "1" / "saved_model.pb")


def test_uned_specialist_then_evaluation_only_recipe(uned_dir, run_recipe, tmp_path):
    """A UnED specialist (watched on its val pair every epoch), then ``uned_eval`` on its file:
    the evaluation-only recipe reproduces the training run's UnED rows."""
    trained = run_recipe("specialist_uned_met", tmp_path / "train", f"data_dir={uned_dir}",
                         "eval.every_n_epochs=1", "export.enabled=false")
    model = tmp_path / "train" / "specialists" / "met" / "model.keras"
    scored = run_recipe("uned_eval", tmp_path / "eval", f"data_dir={uned_dir}",
                        "domains=uned:met", f"models={model}")
    a, b = _uned_rows(trained, "specialist/met"), _uned_rows(scored, "met")
    assert set(a) == set(b) and a
    for key in a:
        for metric in ("recall@1", "mmp@5", "map@5"):
            assert b[key][metric] == pytest.approx(a[key][metric]), (key, metric)
    with pytest.raises(ValueError, match="models="):
        from tfembed import recipes as r
        from tfembed.evaluation.runner import run_evaluate

        run_evaluate(r.resolve("uned_eval", [f"data_dir={uned_dir}"]), str(tmp_path / "none"))
