"""The distillation (papers 001 / 004) recipes end to end in smoke mode."""

import os

import keras
import pytest

from tfembed import recipes
from tfembed.distill import runner as distill
from tfembed.models import build_embedder

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
    assert c.train.loss == "triplet_batch_hard" and c.train.learning_rate == 1e-5
    assert c.train.classes_per_batch * c.train.images_per_class == 32
    assert c.distill.methods == [{"terms": ["ml"]}, {"terms": ["ml", "rel"]}]
    m = recipes.resolve("mobilenet025_student_cub", [])
    assert m.model.backbone == "mobilenet" and m.model.backbone_kwargs.alpha == 0.25
    d = recipes.resolve("darkrank_soft_cub", [])
    assert d.distill.loss_kwargs.darkrank_soft.to_dict() == {"alpha": 3.0, "beta": 3.0}
    assert d.distill.weights.darkrank_soft == 2.0
    assert d.train.classes_per_batch * d.train.images_per_class == 8
    assert recipes.resolve("semi_supervised_cub", []).distill.labelled_fraction == 0.5


def test_paper_001_settings_from_the_authors_code():
    """What 001 leaves open, as yulu0724/EmbeddingDistillation has it (see _distill.paper_001):
    batch-hard triplet with margin 0, 4 classes × 8 images, Adam with PyTorch's coupled weight
    decay 2e-4 on everything, 2000 / 3000 / 50 sampler epochs, lr 1e-6 for the SOP students."""
    from tfembed.losses import TripletBatchHardLoss, get_loss

    expected = {"cub": (50000, 500, 12500), "cars": (72000, 480, 18240),
                "sop": (141450, 2829, 36777)}
    for name in PAPER:
        c = recipes.resolve(name, [])
        if name.startswith("darkrank"):
            continue
        domain = c.domains[0]
        assert c.train.loss == "triplet_batch_hard", name
        assert c.train.loss_kwargs.to_dict() == {"margin": 0.0}, name
        assert isinstance(get_loss(c.train.loss, **c.train.loss_kwargs), TripletBatchHardLoss)
        assert (c.train.classes_per_batch, c.train.images_per_class) == (4, 8), name
        assert c.train.optimizer == "adam" and c.train.weight_decay == 2e-4, name
        assert c.train.weight_decay_mode == "coupled", name
        assert list(c.train.weight_decay_exclude) == [], name
        steps, steps_per_epoch, trial = expected[domain]
        assert (c.train.steps, c.train.steps_per_epoch) == (steps, steps_per_epoch), name
        assert c.distill.lambda_search.steps == trial, name
        assert steps % steps_per_epoch == 0 and trial % steps_per_epoch == 0, name
        teacher = distill.teacher_config(c)
        assert teacher.train.loss == "triplet_batch_hard" and teacher.train.steps == steps
        if domain == "sop":
            assert c.train.learning_rate == 1e-6 and teacher.train.learning_rate == 1e-5
        else:
            assert c.train.learning_rate == teacher.train.learning_rate == 1e-5
    # The epoch arithmetic: floor(training classes × 8 / 32) steps per sampler epoch.
    from tfembed.configs._distill import authors_schedule_001

    assert [authors_schedule_001(d)[0] for d in ("cub", "cars", "sop")] == [
        2000 * (100 * 8 // 32), 3000 * (98 * 8 // 32), 50 * (11318 * 8 // 32)]
    # Smoke mode keeps tiny batches (4 × 2: every anchor has a positive) and two steps.
    smoke = recipes.resolve("rel_teacher_resnet18_sop", ["smoke=true"])
    assert (smoke.train.classes_per_batch, smoke.train.images_per_class) == (4, 2)
    assert smoke.train.steps == 2 and smoke.distill.lambda_search.steps == 1


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


@pytest.mark.smoke
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
    # 001 recipes: a λ selection record per searched student (smoke: a no-op one-value grid,
    # except rel_teacher_resnet18_cub's two values); 004 recipes: none.
    settings = distill.lambda_search_settings(recipes.resolve(recipe, ["smoke=true", *sets]))
    searched = {distill.row_name(m) for m in report["config"]["distill"]["methods"]
                if distill.searched_term(m, settings)}
    assert set(report.get("selection", {})) == searched
    assert bool(searched) == (not recipe.startswith("darkrank")), recipe
    for record in report.get("selection", {}).values():
        assert record["chosen"] in record["grid"]
        assert len(record["trials"]) == (len(record["grid"]) if record["searched"] else 0)
    for m in report["config"]["distill"]["methods"]:
        assert os.path.isfile(tmp_path / distill.row_name(m) / "model.keras")
    export = report["config"]["export"]["enabled"]
    for m in report["config"]["distill"]["export"] if export else []:
        assert os.path.isfile(tmp_path / "saved_models" / distill.export_name(m) / "1" /
                              "saved_model.pb")


@pytest.mark.smoke
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


# ------------------------------------------------------------------------ 004 (DarkRank) fidelity


def test_paper_004_settings():
    """004 §4 and the sources each detail follows (see _distill.paper_004's docstring)."""
    for name in ("darkrank_hard_cub", "darkrank_soft_cub", "darkrank_kd_cub"):
        c = recipes.resolve(name, [])
        assert c.model.weights == "" and c.teacher.weights == ""   # from scratch on CUB
        assert c.train.optimizer == "sgd" and c.train.weight_decay == 1e-4
        assert c.train.weight_decay_mode == "coupled"               # MXNet wd
        assert list(c.train.weight_decay_exclude) == ["bias", "beta"]
        assert c.distill.teacher_heads is True
        heads = c.distill.heads.to_dict()
        assert heads["lsoftmax"] == {"weight": 1.0, "margin": 3}
        assert heads["verification"] == {"weight": 5.0, "mode": "contrastive", "margin": 0.9}
        assert c.train.loss_kwargs.margin == 0.9 and c.distill.metric_weight == 0.1
        built = distill.build_heads(c, 100)
        (lsoftmax, _), (verification, w) = built
        assert lsoftmax.features == "fc" and verification.features == "embedding"
        assert verification.mode == "contrastive" and verification.margin == 0.9 and w == 5.0
    # The demo keeps its documented teacher (a plain specialist) and logistic verification.
    demo = recipes.resolve("darkrank_demo", [])
    assert demo.distill.teacher_heads is False
    assert "mode" not in demo.distill.heads.verification


def test_teacher_trains_with_the_students_heads(monkeypatch, tmp_path):
    """distill.teacher_heads: the teacher is trained as method ``ml`` is (triplet × 0.1 plus
    L-Softmax × 1 and verification × 5), a Distiller without a teacher; off: a specialist."""
    import numpy as np

    from tfembed.data.types import Domain, Split
    from tfembed.distill import Distiller
    from tfembed.training.builders import build_model

    calls = []

    def fake_train_specialist(domain, config, run_dir, strategy, name=None, trainer=None):
        calls.append((domain, config, name, trainer))
        return None, {}

    monkeypatch.setattr(distill, "train_specialist", fake_train_specialist)
    labels = np.repeat(np.arange(5), 2)
    split = Split(labels, paths=[f"{i}.jpg" for i in range(10)])
    domain = Domain("cub", {"train": split, "test": split}, 5)
    c = recipes.resolve("darkrank_hard_cub", ["smoke=true"])
    distill.train_teacher(domain, c, str(tmp_path), None)
    _, t_config, name, trainer = calls[-1]
    assert name == "teacher" and t_config.train.learning_rate == 0.01   # teacher_train
    assert trainer is not None
    keras.utils.set_random_seed(0)
    model = build_model(t_config.model, name="teacher")
    wrapped = trainer(model)
    assert isinstance(wrapped, Distiller) and wrapped.teacher is None
    assert wrapped.student is model and wrapped.metric_weight == 0.1
    assert [h.name for h in wrapped.heads] == ["lsoftmax_loss", "verification_loss"]
    assert wrapped.head_weights == [1.0, 5.0]
    assert wrapped.heads[0].num_classes == 5
    c.distill.teacher_heads = False
    distill.train_teacher(domain, c, str(tmp_path), None)
    assert calls[-1][3] is None
    c.distill.teacher_heads = True
    c.distill.heads = {}
    with pytest.raises(ValueError, match="teacher_heads"):
        distill.check_config(c)


def test_darkrank_teacher_trained_with_heads_in_smoke_mode(paper_data_dir, run_recipe, tmp_path):
    """The whole 004 pipeline with its teacher trained (no ``teachers=``): the teacher's
    training logs the heads' losses, and its saved model is the plain embedder."""
    import glob

    import tensorflow as tf

    report = run_recipe("darkrank_hard_cub", tmp_path, f"data_dir={paper_data_dir}",
                        "distill.methods=['ml+darkrank_hard']")
    _check_report(report)
    teacher = keras.models.load_model(str(tmp_path / "teacher" / "model.keras"))
    assert teacher.name == "teacher" and teacher.output_shape == (None, 128)
    tags = set()
    for path in glob.glob(str(tmp_path / "teacher" / "logs" / "train" / "*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_lsoftmax_loss", "epoch_verification_loss", "epoch_metric_loss"} <= tags
