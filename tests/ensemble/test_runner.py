"""The attention-ensemble (paper 002) recipes end to end in smoke mode, and the pipeline's pieces."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfembed import recipes
from tfembed.ensemble import runner as ensemble
from tfembed.ensemble.config import EnsembleMethod
from tfembed.evaluation.retrieval import recall_at_k

ENSEMBLE_RECIPES = sorted(n for n in recipes.list_recipes()
                          if recipes.resolve(n, []).pipeline == "ensemble")
PAPER = [n for n in ENSEMBLE_RECIPES if not n.endswith("_demo")]


def test_the_issue_recipes_exist():
    assert set(ENSEMBLE_RECIPES) == {
        "abe8_cars", "abe8_cub", "abe8_sop", "abe8_inshop", "abe2_cars", "abe4_cars",
        "mheads8_cars", "abe8_nodiv_cars", "abe_demo"}


@pytest.mark.parametrize("recipe", ENSEMBLE_RECIPES)
def test_full_method_lists_are_valid(recipe):
    ensemble.check_config(recipes.resolve(recipe, []))


def test_paper_settings():
    c = recipes.resolve("abe8_cars", [])
    assert c.model.backbone == "inception_v3" and c.model.embedding_dim == 512
    assert c.model.weights == "imagenet" and c.model.image_size == 224
    assert c.train.loss == "contrastive_pairs" and c.train.loss_kwargs.margin == 1.0
    assert c.train.optimizer == "sgd" and c.train.momentum == 0.9
    assert (c.ensemble.pair_anchors, c.ensemble.pair_positives) == (32, 16)
    assert c.ensemble.sampler == "pairs"
    assert c.ensemble.divergence_weight == c.ensemble.divergence_margin == 1.0
    assert EnsembleMethod.of(c.ensemble.methods[0]) == EnsembleMethod("abe", 8, True)
    assert recipes.resolve("abe8_nodiv_cars", []).ensemble.methods == [
        {"kind": "abe", "learners": 8, "divergence": False}]
    assert [EnsembleMethod.of(m).name for m in
            recipes.resolve("mheads8_cars", []).ensemble.methods] == ["mheads8"]
    assert recipes.resolve("abe8_sop", []).eval.ks == [1, 10, 100, 1000]


def test_figure_titles():
    # Method names and entries: tests/ensemble/test_config.py.
    assert ensemble.title("abe8_nodiv") == "ABE-8 without L_div"
    assert ensemble.title("mheads8_div") == "8-heads with L_div"


def test_config_errors_name_the_problem():
    c = recipes.resolve("abe_demo", [])
    c.ensemble.methods = ["abe3"]
    with pytest.raises(ValueError, match="abe3.*128.*3 learners"):
        ensemble.check_config(c)
    c.ensemble.methods = ["abe4"]
    c.ensemble.sampler = "pair"
    with pytest.raises(ValueError, match="sampler"):
        ensemble.check_config(c)
    c.ensemble.sampler = "pairs"
    c.ensemble.export = ["abe8"]
    with pytest.raises(ValueError, match="export"):
        ensemble.check_config(c)


def test_method_typos_fail_before_training(tmp_path):
    from tfembed import cli

    with pytest.raises(ValueError, match="'abe4_nodiw'"):
        cli.train_main(["tfembed-train", "--recipe", "abe_demo", "--workdir", str(tmp_path),
                        "--set", "smoke=true", "--set", "ensemble.methods=abe2,abe4_nodiw"])
    assert not os.path.exists(tmp_path / "abe2")


def test_ensemble_rows_are_the_ensemble_and_the_mean_over_learners(rng):
    x = rng.normal(size=(40, 12)).astype("float32")
    labels = np.repeat(np.arange(10), 4)
    rows = ensemble.ensemble_rows("abe3", "digits", (x, labels, None, None), (1, 2))
    assert [r["model"] for r in rows] == ["abe3/ensemble", "abe3/learners"]
    assert rows[0]["recall@1"] == recall_at_k(x, labels, (1,))[1]
    per = [recall_at_k(x[:, 4 * m:4 * m + 4], labels, (1, 2)) for m in range(3)]
    assert rows[1]["recall@2"] == pytest.approx(np.mean([p[2] for p in per]))
    assert rows[1]["recall@1_std"] == pytest.approx(np.std([p[1] for p in per]))
    assert rows[1]["learners"] == 3
    # Query / gallery domains slice both sides.
    q_g = ensemble.ensemble_rows("mheads2", "inshop", (x[:20], labels[:20], x[20:], labels[20:]),
                                 (1,))
    want = np.mean([recall_at_k(x[:20, 6 * m:6 * m + 6], labels[:20], (1,),
                                gallery_embeddings=x[20:, 6 * m:6 * m + 6],
                                gallery_labels=labels[20:])[1] for m in range(2)])
    assert q_g[1]["recall@1"] == pytest.approx(want)


def test_learner_slices_invert_the_concatenation(rng):
    from tfembed.ensemble.attention import ensemble_of

    learners = rng.normal(size=(3, 5, 4)).astype("float32")
    concatenated = ensemble_of(tf.constant(learners)).numpy()
    np.testing.assert_array_equal(ensemble.learner_slices(concatenated, 3), learners)


def _check_report(report, tmp_path):
    methods = [EnsembleMethod.of(m).name for m in report["config"]["ensemble"]["methods"]]
    rows = report["rows"]
    assert [r["model"] for r in rows] == [f"{m}/{part}" for m in methods
                                          for part in ("ensemble", "ensemble@best", "learners")]
    with open(tmp_path / "diagnostics" / "recall_history.json") as f:
        curves = json.load(f)["methods"]
    for final, best, learners in zip(rows[::3], rows[1::3], rows[2::3]):
        assert final["selection"] == learners["selection"] == "final"
        assert best["selection"] == "best_of_evals"
        curve = curves[final["model"].split("/")[0]]
        steps = [e["step"] for e in curve]
        assert steps == sorted(set(steps)) and steps[-1] == final["step"] == learners["step"]
        assert curve[-1]["recall@1"] == final["recall@1"]     # the final model is an evaluation
        assert best["step"] in steps and best["evaluations"] == len(curve)
        assert best["recall@1"] == max(e["recall@1"] for e in curve) >= final["recall@1"]
    for r in rows:
        ks = sorted(int(k.split("@")[1]) for k in r if k.startswith("recall@") and
                    not k.endswith("_std"))
        recalls = [r[f"recall@{k}"] for k in ks]
        assert all(0.0 <= v <= 1.0 for v in recalls) and recalls == sorted(recalls), r
    for m in methods:
        assert os.path.isfile(tmp_path / m / "model.keras")


@pytest.mark.smoke
@pytest.mark.parametrize("recipe", PAPER)
def test_paper_ensemble_recipes_in_smoke_mode(recipe, paper_data_dir, run_recipe, tmp_path):
    report = run_recipe(recipe, tmp_path, f"data_dir={paper_data_dir}")
    assert report["config"]["smoke"] is True
    _check_report(report, tmp_path)


@pytest.mark.smoke
def test_demo_in_smoke_mode_writes_diagnostics_and_exports(run_recipe, tmp_path, capsys):
    report = run_recipe("abe_demo", tmp_path)
    _check_report(report, tmp_path)
    with open(tmp_path / "diagnostics" / "recall_history.json") as f:
        curves = json.load(f)["methods"]
    assert [e["step"] for e in curves["abe2"]] == [1, 2]   # every step in smoke mode
    assert "abe2/ensemble@best: the best R@1 of 2 evaluations" in capsys.readouterr().out
    diag = tmp_path / "diagnostics"
    with open(diag / "similarity_histograms.json") as f:
        hist = json.load(f)
    assert set(hist["panels"]) == {"ABE-2", "2-heads"}
    assert hist["panels"]["ABE-2"]["self"]["count"] > 0
    assert os.path.isfile(diag / "attention_masks_abe2.png")
    assert not os.path.exists(diag / "attention_masks_mheads2.png")   # no masks in M-heads
    exported = tmp_path / "saved_models" / ensemble.export_name("abe2") / "1"
    loaded = tf.saved_model.load(str(exported))
    out = loaded.signatures["serving_pixels"](pixels=tf.zeros([2, 28, 28, 3]))["embeddings"]
    assert out.shape == (2, 128)


def test_the_evaluations_before_an_interruption_survive_the_resume(tmp_path, monkeypatch):
    import signal

    import keras

    from tfembed import cli
    from tfembed.training.callbacks import RecallAtKCallback

    evaluate, calls = RecallAtKCallback.evaluate, []

    def sigterm_at_the_second_evaluation(self):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)   # checkpointed after step 3, mid-epoch
        return evaluate(self)

    monkeypatch.setattr(RecallAtKCallback, "evaluate", sigterm_at_the_second_evaluation)
    argv = ["tfembed-train", "--recipe", "abe_demo", "--workdir", str(tmp_path), "--set",
            "smoke=true", "--set", "ensemble.methods=['abe2']", "--set", "ensemble.export=[]",
            "--set", "ensemble.diagnostics=False", "--set", "train.steps=4"]
    keras.backend.clear_session()
    assert cli.train_main(argv) == 143
    with open(tmp_path / "abe2" / "backup" / ensemble.HISTORY_FILENAME) as f:
        before = json.load(f)
    assert [h["step"] for h in before] == [1, 2, 3]
    calls.clear()
    monkeypatch.setattr(RecallAtKCallback, "evaluate",
                        lambda self: calls.append(self.step) or evaluate(self))
    keras.backend.clear_session()
    assert cli.train_main(argv) == 0
    assert calls == [4]     # resumed at step 3: steps 1-3 come from the saved history
    with open(tmp_path / "diagnostics" / ensemble.HISTORY_FILENAME) as f:
        curve = json.load(f)["methods"]["abe2"]
    assert [e["step"] for e in curve] == [1, 2, 3, 4]
    assert [e["recall@1"] for e in curve[:3]] == [h["val_digits_recall@1"] for h in before]
    with open(tmp_path / "report.json") as f:
        best = json.load(f)["rows"][1]
    assert best["recall@1"] == max(e["recall@1"] for e in curve) and best["evaluations"] == 4
