"""λ chosen by cross-validation in the distill pipeline (001 §4 "learned by cross validation",
DESIGN §6): the held-out validation classes, the test split never read, the report, the
one-value grid, the reduced teacher, the semi-supervised partition, and the config errors."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from tfembed import recipes
from tfembed.data import testing
from tfembed.data.sources import load_domain
from tfembed.models import build_embedder
from tfembed.distill import runner as distill
from tfembed.training.strategy import get_strategy

# CUB ids 1-100 are training classes and 101-200 test classes (001 §5.1's split).
TRAIN_IDS = tuple(range(1, 11))
TEST_IDS = (101, 102, 103)


@pytest.fixture(scope="module")
def cub_dir(tmp_path_factory):
    """A CUB layout with 10 training classes (so 30 % held out is 3 classes) and 3 test ones."""
    root = tmp_path_factory.mktemp("lambda_search_data")
    testing.make_cub_layout(root / "CUB_200_2011", classes=TRAIN_IDS + TEST_IDS, per_class=4)
    return root


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = str(tmp_path_factory.mktemp("search_teacher") / "teacher.keras")
    build_embedder("small_cnn", 128, (32, 32, 3), width=0.25).save(path)
    return path


def _config(cub_dir, *sets):
    return recipes.resolve("rel_teacher_resnet18_cub",
                           ["smoke=true", f"data_dir={cub_dir}", *sets])


def _paths(split):
    return set(map(str, split.paths))


# ------------------------------------------------------------------------- validation split


def test_validation_classes_are_a_class_disjoint_part_of_the_training_classes(cub_dir):
    domain = load_domain("cub", data_dir=str(cub_dir))
    config = _config(cub_dir)
    searched = distill.search_domain(domain, config, 0.3)
    train, test = set(domain.train.classes), set(domain.splits["test"].classes)
    rest, val = set(searched.train.classes), set(searched.splits["test"].classes)
    assert len(train) == 10 and len(val) == 3 and len(rest) == 7
    assert val < train and rest < train and not val & rest and val | rest == train
    assert not val & test and not rest & test
    # Images: exactly the training images, cut by class; no test image anywhere.
    assert set(searched.splits) == {"train", "test"}
    assert _paths(searched.train) | _paths(searched.splits["test"]) == _paths(domain.train)
    assert not _paths(searched.train) & _paths(searched.splits["test"])
    assert not (_paths(searched.train) | _paths(searched.splits["test"])) & \
        _paths(domain.splits["test"])
    assert searched.partition is None
    # Seeded: the same seed gives the same classes, other seeds other classes.
    again = distill.search_domain(domain, config, 0.3)
    assert set(again.splits["test"].classes) == val
    draws = {tuple(distill.validation_classes(domain.train, seed, 0.3)[1]) for seed in range(6)}
    assert len(draws) > 1


def test_validation_class_counts():
    from tfembed.data.types import Split

    def split(n_classes):
        labels = np.repeat(np.arange(n_classes), 2)
        return Split(labels=labels, paths=np.array([f"{i}.jpg" for i in range(len(labels))]))

    assert [len(v) for v in distill.validation_classes(split(10), 0, 0.2)] == [8, 2]
    assert [len(v) for v in distill.validation_classes(split(2), 0, 0.2)] == [1, 1]
    assert [len(v) for v in distill.validation_classes(split(5), 0, 0.01)] == [4, 1]
    assert [len(v) for v in distill.validation_classes(split(5), 0, 0.99)] == [1, 4]
    with pytest.raises(ValueError, match="at least 2"):
        distill.validation_classes(split(1), 0, 0.2)


def test_semi_supervised_search_keeps_the_runs_labelled_draw(cub_dir):
    domain = load_domain("cub", data_dir=str(cub_dir))
    config = _config(cub_dir, "distill.labelled_fraction=0.5")
    labelled, unlabelled = distill.labelled_parts(domain, config)
    searched = distill.search_domain(domain, config, 0.3)
    val = set(searched.splits["test"].classes)
    lab, unl = distill.labelled_parts(searched, config)   # what the trial students train on
    in_rest = lambda split: {p for p, y in zip(map(str, split.paths), split.labels)  # noqa: E731
                             if y not in val}
    assert _paths(lab) == in_rest(labelled) and _paths(unl) == in_rest(unlabelled)
    # Validation: the labelled images of the held-out classes only.
    assert _paths(searched.splits["test"]) == _paths(labelled) - in_rest(labelled)
    # The reduced teacher would see the labelled part of the remaining classes.
    assert _paths(distill.teacher_domain(searched, config).train) == _paths(lab)


# ------------------------------------------------------------------------------- settings


def test_settings_off_by_default_and_parsed():
    base = recipes.resolve("semi_supervised_demo", [])
    assert distill.lambda_search_settings(base) is None   # terms empty: off
    demo = distill.lambda_search_settings(recipes.resolve("distill_demo", []))
    assert demo["terms"] == ["abs", "rel"] and demo["grids"]["rel"] == [0.1, 1.0, 10.0]
    c = recipes.resolve("rel_teacher_resnet18_cub", [])
    s = distill.lambda_search_settings(c)
    assert s == {"terms": ["abs", "rel"], "grids": {"abs": [0.1, 0.3, 1.0, 3.0, 10.0],
                                                     "rel": [0.1, 0.3, 1.0, 3.0, 10.0]},
                 "val_fraction": 0.2, "steps": 12500, "teacher": "full"}
    c.distill.lambda_search.term_grids = {"abs": [3.0, 1.0, 3.0]}
    assert distill.lambda_search_settings(c)["grids"]["abs"] == [1.0, 3.0]
    assert distill.searched_term("ml+rel+at@semi", s) == "rel"
    assert distill.searched_term("ml", s) is None
    assert distill.searched_term("ml+direct", s) is None


def test_every_001_recipe_searches_and_uses_the_authors_reductions():
    for name in recipes.list_recipes():
        c = recipes.resolve(name, [])
        if c.pipeline != "distill" or name.endswith("_demo") or name.startswith("darkrank"):
            continue
        s = distill.lambda_search_settings(c)
        assert s is not None and s["terms"] == ["abs", "rel"], name
        assert c.distill.loss_kwargs.rel.aggregation == "frobenius", name
        assert c.distill.loss_kwargs.abs.aggregation == "mean", name
        searched = [m for m in c.distill.methods if distill.searched_term(m, s)]
        assert searched, name
    sop = recipes.resolve("rel_teacher_resnet18_sop", [])
    assert (sop.distill.weights.abs, sop.distill.weights.rel) == (2.0, 1.0)  # run_main.sh
    assert distill.lambda_search_settings(recipes.resolve("darkrank_hard_cub", [])) is None


@pytest.mark.parametrize("key,value,match", [
    ("tems", ["rel"], r"distill\.lambda_search\.tems is not a lambda_search key"),
    ("terms", ["rell"], r"distill\.lambda_search\.terms: 'rell' is not an embedding-level"),
    ("term_grids", {"rell": [1.0]}, r"distill\.lambda_search\.term_grids: 'rell'"),
    ("grid", [], r"distill\.lambda_search\.grid must be a non-empty list"),
    ("grid", [0.3, -1.0], r"distill\.lambda_search\.grid must be"),
    ("term_grids", {"rel": [0.0]}, r"distill\.lambda_search\.term_grids\.rel must be"),
    ("val_fraction", 1.0, r"distill\.lambda_search\.val_fraction must be in \(0, 1\)"),
    ("steps", -1, r"distill\.lambda_search\.steps must be"),
    ("teacher", "half", r"distill\.lambda_search\.teacher must be one of full, reduced"),
])
def test_settings_errors_name_the_key(key, value, match):
    c = recipes.resolve("rel_teacher_resnet18_cub", [])
    block = c.distill.lambda_search.to_dict()
    block[key] = value
    with c.distill.unlocked():
        c.distill.lambda_search = block
    with pytest.raises(ValueError, match=match):
        distill.check_config(c)


def test_typos_fail_before_the_teacher_trains(cub_dir, tmp_path):
    from tfembed import cli

    for bad, match in (("distill.lambda_search.terms=abs,rell", "distill.lambda_search.terms"),
                       ("distill.loss_kwargs.rel.aggregation=frobenious",
                        "aggregation must be one of mean, frobenius, got 'frobenious'")):
        with pytest.raises(ValueError, match=match):
            cli.train_main(["tfembed-train", "--recipe", "rel_teacher_resnet18_cub", "--workdir",
                            str(tmp_path), "--set", "smoke=true", "--set",
                            f"data_dir={cub_dir}", "--set", bad])
        assert not os.path.exists(tmp_path / "teacher")


# ------------------------------------------------------------------------------- the choice


def test_choose_lambda_ties():
    trials = [(0.1, 0.5), (0.3, 0.7), (1.0, 0.7), (3.0, 0.7)]
    assert distill.choose_lambda(trials, default=0.3) == 0.3
    assert distill.choose_lambda(trials, default=10.0) == 3.0
    assert distill.choose_lambda(trials, default=1.0) == 1.0
    assert distill.choose_lambda(trials, default=0.01) == 0.3
    assert distill.choose_lambda([(0.1, 0.9), (1.0, 0.2)], default=1.0) == 0.1   # no tie
    assert distill.choose_lambda([(0.1, 0.5), (10.0, 0.5)], default=1.0) == 0.1  # equidistant


def test_a_grid_of_one_value_is_a_no_op(cub_dir, tmp_path):
    config = _config(cub_dir, "distill.lambda_search.grid=[0.7]")
    domain = load_domain("cub", data_dir=str(cub_dir))
    search = distill.LambdaSearch(domain, None, config, str(tmp_path), get_strategy("default"))
    method_config, record = search.configure("ml+rel")
    assert record["searched"] is False and record["chosen"] == 0.7 and record["trials"] == []
    assert method_config.distill.weights.rel == 0.7 and config.distill.weights.rel == 0.3
    assert search.records == {"student/ml+rel": record}
    assert search.configure("ml") == (config, None)
    assert not os.path.exists(tmp_path / "lambda_search")   # nothing trained
    assert search._search_domain is None                    # nor split


# ----------------------------------------------------------------- end to end, test labels


def _permute_test_labels(src, dst):
    """A copy of the CUB layout ``src`` whose test images' class ids are shuffled among them."""
    shutil.copytree(src, dst)
    path = dst / "CUB_200_2011" / "image_class_labels.txt"
    lines = [line.split() for line in path.read_text().splitlines()]
    test_rows = [i for i, (_, c) in enumerate(lines) if int(c) > 100]
    classes = [lines[i][1] for i in test_rows]
    shuffled = list(np.random.default_rng(3).permutation(classes))
    assert shuffled != classes
    for i, c in zip(test_rows, shuffled):
        lines[i][1] = c
    path.write_text("\n".join(" ".join(x) for x in lines) + "\n")
    return dst


def test_selection_never_reads_test_labels_and_lands_in_the_report(cub_dir, teacher_file,
                                                                     run_recipe, tmp_path):
    permuted = _permute_test_labels(cub_dir, tmp_path / "permuted_data")
    a, b = (load_domain("cub", data_dir=str(d)) for d in (cub_dir, permuted))
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert not np.array_equal(a.splits["test"].labels, b.splits["test"].labels)

    reports = []
    for name, data in (("original", cub_dir), ("permuted", permuted)):
        reports.append(run_recipe(
            "rel_teacher_resnet18_cub", tmp_path / name, f"data_dir={data}",
            f"teachers={teacher_file}", "distill.methods=ml+rel",
            "distill.lambda_search.val_fraction=0.3"))
    original, shuffled = reports
    # Same choice, same per-λ validation Recall@1, whatever the test labels are...
    assert original["selection"] == shuffled["selection"]
    # ...while anything that reads them sees the difference (the test rows).
    assert original["rows"] != shuffled["rows"]

    assert list(original) == ["recipe", "config", "rows", "selection"]
    assert [r["model"] for r in original["rows"]] == ["teacher/small_cnn", "student/ml+rel"]
    assert all({"model", "domain", "gallery", "recall@1"} <= set(r) for r in original["rows"])
    record = original["selection"]["student/ml+rel"]
    assert record["parameter"] == "distill.weights.rel" and record["term"] == "rel"
    assert record["grid"] == [0.3, 1.0] and record["searched"] is True
    assert [t["lambda"] for t in record["trials"]] == [0.3, 1.0]
    assert all(0.0 <= t["val_recall@1"] <= 1.0 for t in record["trials"])
    best = max(t["val_recall@1"] for t in record["trials"])
    assert record["chosen"] in [t["lambda"] for t in record["trials"]
                                if t["val_recall@1"] == best]
    assert (record["val_classes"], record["train_classes"]) == (3, 7)
    assert (record["val_images"], record["train_images"]) == (12, 28)
    assert (record["steps"], record["teacher"], record["default"]) == (1, "full", 0.3)
    for value in ("0.3", "1"):
        assert os.path.isfile(tmp_path / "original" / "lambda_search" / "student_ml_rel" /
                              f"lambda_{value}" / "model.keras")
    with open(tmp_path / "original" / "report.json") as f:
        assert json.load(f)["selection"] == original["selection"]


# ------------------------------------------------------------ reduced teacher, semi-supervised


def test_reduced_teacher_and_semi_supervised_trials(cub_dir, teacher_file, tmp_path,
                                                    monkeypatch):
    keras.backend.clear_session()
    config = _config(cub_dir, "distill.labelled_fraction=0.5",
                     "distill.lambda_search.teacher=reduced",
                     "distill.lambda_search.val_fraction=0.3", "distill.methods=ml+rel@semi")
    distill.check_config(config)
    domain = load_domain("cub", data_dir=str(cub_dir))
    teacher_domains, trial_domains = [], []
    real_specialist, real_student = distill.train_specialist, distill.train_student

    def specialist(dom, *args, **kwargs):
        teacher_domains.append(dom)
        return real_specialist(dom, *args, **kwargs)

    def student(method, dom, *args, **kwargs):
        trial_domains.append(dom)
        return real_student(method, dom, *args, **kwargs)

    monkeypatch.setattr(distill, "train_specialist", specialist)
    monkeypatch.setattr(distill, "train_student", student)
    run_teacher = keras.models.load_model(teacher_file)
    search = distill.LambdaSearch(domain, run_teacher, config, str(tmp_path),
                                  get_strategy("default"))
    method_config, record = search.configure("ml+rel@semi")

    searched = search.search_domain
    val = set(searched.splits["test"].classes)
    (reduced,) = teacher_domains   # one teacher, trained once, on the remaining labelled images
    assert not set(reduced.train.classes) & val
    assert _paths(reduced.train) == _paths(distill.labelled_parts(searched, config)[0])
    assert os.path.isfile(tmp_path / "lambda_search" / "teacher" / "model.keras")
    assert len(trial_domains) == 2 and all(d is searched for d in trial_domains)
    assert record["teacher"] == "reduced" and len(record["trials"]) == 2
    assert record["val_images"] == len(val) * 2   # the labelled half of 4 images per class
    assert method_config.distill.weights.rel == record["chosen"]


def test_full_teacher_trials_have_heads_as_wide_as_its_kd_classifier(cub_dir, teacher_file,
                                                                     tmp_path, monkeypatch):
    # The full teacher's KD classifier covers every training class; a trial student sized on
    # the remaining classes alone would compare logits of another width whenever the highest
    # class id is held out.
    config = _config(cub_dir, "distill.lambda_search.val_fraction=0.3", "distill.methods=ml+rel")
    domain = load_domain("cub", data_dir=str(cub_dir))
    seen = []

    def student(method, dom, *args, num_classes=None, **kwargs):
        seen.append((dom, num_classes, kwargs["teacher_classifier"]))
        return "student", None

    monkeypatch.setattr(distill, "train_student", student)
    monkeypatch.setattr(distill.LambdaSearch, "validation_recall", lambda self, s: 0.5)
    classifier = object()
    search = distill.LambdaSearch(domain, keras.models.load_model(teacher_file), config,
                                  str(tmp_path), get_strategy("default"),
                                  teacher_classifier=classifier)
    search.configure("ml+rel")
    assert len(seen) == 2
    for dom, num_classes, given in seen:
        assert dom is search.search_domain and given is classifier
        assert num_classes == distill.num_train_classes(domain.train) == len(TRAIN_IDS)
        assert distill.num_train_classes(dom.train) <= num_classes


def test_write_report_extra_keys(tmp_path):
    from tfembed.evaluation.report import read_report, write_report

    row = {"model": "student/ml", "domain": "cub", "gallery": "domain", "recall@1": 0.5}
    write_report(tmp_path, "r", {}, [row], echo=False, extra=None)
    assert list(read_report(tmp_path)) == ["recipe", "config", "rows"]
    write_report(tmp_path, "r", {}, [row], echo=False,
                 extra={"selection": {"student/ml+rel": {"chosen": np.float32(0.3)}}})
    report = read_report(tmp_path)
    assert list(report) == ["recipe", "config", "rows", "selection"]
    assert report["selection"]["student/ml+rel"]["chosen"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="'rows'"):
        write_report(tmp_path, "r", {}, [row], echo=False, extra={"rows": []})
