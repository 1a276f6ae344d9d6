"""The DM² (paper 003) recipes end to end in smoke mode, and the cohort pipeline's pieces."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import SMALL_CNN
from tfembed import recipes
from tfembed.cohort import runner as cohort
from tfembed.cohort.config import CohortMethod
from tfembed.data.sources import load_domain

COHORT_RECIPES = sorted(n for n in recipes.list_recipes()
                        if recipes.resolve(n, []).pipeline == "cohort")
PAPER = [n for n in COHORT_RECIPES if not n.endswith("_demo")]


def test_the_issue_recipes_exist():
    assert set(COHORT_RECIPES) == {
        "dm2_cub", "dm2_cars", "dm2_sop", "dm2_inshop", "dm2_md", "dm2_md_td", "dm2_md_vd",
        "dm2_hetero", "dm2_to_rkd", "dm2_demo"}


@pytest.mark.parametrize("recipe", COHORT_RECIPES)
def test_full_configs_are_valid(recipe):
    cohort.check_config(recipes.resolve(recipe, []))


def test_paper_settings():
    c = recipes.resolve("dm2_cub", [])
    assert c.cohort.size == 4 and c.model.embedding_dim == 512
    assert c.model.backbone == "resnet50" and c.model.weights == "imagenet"
    assert (c.train.optimizer, c.train.learning_rate, c.train.weight_decay) == ("adam", 3e-5,
                                                                                5e-4)
    assert c.train.classes_per_batch * c.train.images_per_class == 120
    assert c.train.images_per_class == 5 and c.cohort.freeze_batchnorm
    sop = recipes.resolve("dm2_sop", [])
    assert sop.train.images_per_class == 2 and not sop.cohort.freeze_batchnorm
    assert cohort.relation_weight(c) == 20.0 and c.cohort.warmup_epochs == 3.0
    assert cohort.update_probabilities(c) == [1.0, 0.5, 0.25, 0.125]
    hetero = recipes.resolve("dm2_hetero", [])
    # 003 §4.7: temporal diversity counted per architecture.
    assert cohort.update_probabilities(hetero) == [1.0, 0.5, 0.25, 1.0]
    for loss, weight in (("proxy_nca", 100.0), ("arcface", 2000.0), ("contrastive", 20.0)):
        c.train.loss = loss
        assert cohort.relation_weight(c) == weight


def test_method_names_and_config_errors():
    # Method names and entries: tests/cohort/test_config.py.
    c = recipes.resolve("dm2_demo", ["cohort.methods=md,md+tv"])
    with pytest.raises(ValueError, match="unknown cohort method 'md\\+tv'"):
        cohort.check_config(c)
    assert cohort.export_name("md+td+vd_to_rkd/rkd_student") == "dm2_md_td_vd_to_rkd_rkd_student"
    c = recipes.resolve("dm2_demo", [])
    c.cohort.backbones = ["small_cnn"] * 3
    with pytest.raises(ValueError, match="3 backbones for a cohort of 4"):
        cohort.check_config(c)
    c.cohort.backbones = []
    c.cohort.export = ["md+td+vd/member7"]
    with pytest.raises(ValueError, match="member7"):
        cohort.check_config(c)


def test_view_diversity_reaches_the_batches():
    c = recipes.resolve("dm2_demo", [])
    domain = load_domain("digits")
    x, _ = next(iter(cohort.training_data(domain, c, "md+vd")))
    views = x["views"].numpy()
    assert views.shape[:2] == (60, 4)
    for l in range(1, 4):   # different pixels for different members
        assert np.abs(views[:, l] - views[:, 0]).mean() > 1.0
    plain, _ = next(iter(cohort.training_data(domain, c, "md+td")))
    size = c.model.image_size
    assert isinstance(plain, tf.Tensor) and plain.shape == (60, size, size, 3)


def test_members_differ_and_are_placed(two_replica_strategy):
    del two_replica_strategy  # the conftest's two logical CPUs
    c = recipes.resolve("dm2_demo", ["cohort.size=2"])
    model = cohort.build_cohort("md+td", c, num_classes=50)
    assert model.devices is not None and len(set(model.devices)) == 2
    w = [m.get_layer("embedding_dense").get_weights()[0] for m in model.members]
    assert not np.allclose(w[0], w[1])   # model diversity: different initialisations
    assert model.update_probabilities == [1.0, 0.5]
    assert model.warmup_steps == c.train.steps_per_epoch   # cohort.warmup_epochs = 1


def _check_report(report, tmp_path):
    c = report["config"]["cohort"]
    expected = []
    for m in map(CohortMethod.of, c["methods"]):
        prefix = m.row_prefix
        expected += [f"{prefix}/member{l}" for l in range(c["size"])] + [f"{prefix}/ensemble"]
        if m.distill_rkd:
            expected.append(f"{prefix}/rkd_student")
    assert [r["model"] for r in report["rows"]] == expected
    for r in report["rows"]:
        ks = sorted(int(k.split("@")[1]) for k in r if k.startswith("recall@"))
        recalls = [r[f"recall@{k}"] for k in ks]
        assert all(0.0 <= v <= 1.0 for v in recalls) and recalls == sorted(recalls), r
    for m in c["methods"]:
        assert os.path.isfile(tmp_path / CohortMethod.of(m).row_prefix / "member0.keras")


@pytest.mark.smoke
@pytest.mark.parametrize("recipe", PAPER)
def test_paper_cohort_recipes_in_smoke_mode(recipe, paper_data_dir, run_recipe, tmp_path):
    report = run_recipe(recipe, tmp_path, f"data_dir={paper_data_dir}")
    assert report["config"]["smoke"] is True
    _check_report(report, tmp_path)


@pytest.mark.smoke
def test_demo_in_smoke_mode_distills_and_exports(run_recipe, tmp_path):
    report = run_recipe("dm2_demo", tmp_path)
    _check_report(report, tmp_path)
    for row in report["config"]["cohort"]["export"]:
        path = tmp_path / "saved_models" / cohort.export_name(row) / "1"
        served = tf.saved_model.load(str(path)).signatures["serving_pixels"]
        out = served(pixels=tf.zeros([2, 28, 28, 3]))["embeddings"]
        # Smoke: a cohort of 2 members of 128-d, the ensemble their concatenation.
        assert out.shape == (2, 256 if row.endswith("ensemble") else 128)


@pytest.mark.parametrize("loss,weight", [("arcface", 2000.0), ("proxy_nca", 100.0),
                                         ("binomial_deviance", 20.0), ("contrastive", 20.0)])
def test_other_metric_losses_with_the_papers_weights(loss, weight):
    c = recipes.resolve("dm2_demo", ["cohort.size=2"])
    c.train.loss = loss
    c.train.loss_kwargs = {}
    model = cohort.build_cohort("md", c, num_classes=50)
    assert model.relation_weight == weight
    if loss in cohort.HEADS:   # class weights in one head per member, trained with it
        assert [type(h) for h in model.heads] == [cohort.HEADS[loss]] * 2
        assert model.heads[0].built and model.heads[0] is not model.heads[1]
    else:
        assert not model.heads


def test_pretrained_members_share_the_backbone_and_differ_in_the_projection():
    c = recipes.resolve("dm2_demo", ["cohort.size=2", *SMALL_CNN])
    source = cohort.build_members(c, seed=5)[0]
    model = cohort.build_cohort("md", c, num_classes=50, pretrained=source)
    a, b = model.members
    for name in ("stage1_conv1", "stage4_conv2", "stage2_bn1"):
        for w_src, w_a, w_b in zip(source.get_layer(name).get_weights(),
                                   a.get_layer(name).get_weights(), b.get_layer(name).get_weights()):
            np.testing.assert_array_equal(w_a, w_src)
            np.testing.assert_array_equal(w_b, w_src)
    assert not np.allclose(a.get_layer("embedding_dense").get_weights()[0],
                           b.get_layer("embedding_dense").get_weights()[0])


def test_ensemble_rows_scored_on_the_members_embeddings_equal_the_ensemble_models():
    # evaluate_cohort scores the ensemble on the concatenated member embeddings instead of a
    # forward pass of ensemble_model(): the same rows, for a cohort whose members differ.
    from tfembed.evaluation.protocol import evaluate
    from tfembed.training.builders import image_spec, load_domains

    c = recipes.resolve("dm2_demo", ["cohort.size=3", "eval.max_images_per_split=300",
                                     *SMALL_CNN])
    domains = load_domains(c, single="cohort")
    model = cohort.build_cohort("md", c, num_classes=50)
    out = cohort.evaluate_cohort(model, "md", domains, c)
    assert [n for n, _, _ in out] == ["md/member0", "md/member1", "md/member2", "md/ensemble"]
    ensemble_rows = evaluate(out[-1][1], domains, name="md/ensemble", offsets=[0],
                             ks=tuple(c.eval.ks), fused=False, spec=image_spec(c.model),
                             batch_size=int(c.eval.batch_size))
    assert len(out[-1][2]) == len(ensemble_rows) == 1
    for key, value in ensemble_rows[0].items():
        assert out[-1][2][0][key] == pytest.approx(value), key
    member_r1 = [rows[0]["recall@1"] for _, _, rows in out[:-1]]
    assert len(set(member_r1)) > 1   # untrained members with their own projections


@pytest.mark.smoke
def test_demo_with_a_pretrained_backbone_in_smoke_mode(run_recipe, tmp_path):
    report = run_recipe("dm2_demo", tmp_path, "cohort.pretrain_domain=glyphs",
                        "cohort.methods=md", "cohort.export=", *SMALL_CNN)
    assert os.path.isfile(tmp_path / "pretrained" / "model.keras")
    _check_report(report, tmp_path)


def test_heterogeneous_members_load_their_own_weights_files(tmp_path):
    from tfembed.models import testing as model_testing
    from tfembed.models.backbones import backbone_model

    files = [model_testing.write_backbone_weights(tmp_path / f"{b}.weights.h5", b, (32, 32, 3),
                                                  seed=i)
             for i, b in enumerate(("small_cnn", "resnet18"))]
    c = recipes.resolve("dm2_demo", ["cohort.size=2", "model.image_size=32",
                                     "cohort.backbones=['small_cnn','resnet18']",
                                     f"cohort.weights={files!r}"])
    c.model.backbone_kwargs = {}
    cohort.check_config(c)
    for member, backbone, path in zip(cohort.build_members(c, seed=0), c.cohort.backbones, files):
        reference = backbone_model(backbone, (32, 32, 3), weights=path)
        loaded = [layer for layer in reference.layers if layer.get_weights()]
        assert loaded
        for layer in loaded:
            for got, want in zip(member.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want)
    c.cohort.weights = files[:1]
    with pytest.raises(ValueError, match="cohort.weights lists 1 entries for a cohort of 2"):
        cohort.check_config(c)
