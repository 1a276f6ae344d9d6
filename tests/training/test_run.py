"""``tfembed-train`` over several seeds: one run per seed, report.json with mean ± std."""

import json

from tests.conftest import SMALL_CNN
from tfembed.evaluation.report import read_report
from tfembed.training import run as run_lib

SETS = [*SMALL_CNN, "pipeline=specialists", "domains=glyphs", "train.steps=3", "train.steps_per_epoch=3",
        "export.enabled=false", "eval.ks=1,2", "eval.max_images_per_split=40",
        "eval.random_init_baseline=false"]


def test_seeds_run_separately_and_the_report_aggregates_them(run_recipe, tmp_path,
                                                            monkeypatch):
    run_recipe("universal:demo", tmp_path, *SETS, "seeds=0")
    # A rerun with another seed skips the finished seed and runs only the new one.
    ran = []
    real = run_lib._run_one
    monkeypatch.setattr(run_lib, "_run_one", lambda c, w: ran.append(c.seed) or real(c, w))
    report = run_recipe("universal:demo", tmp_path, *SETS, "seeds=0,1")
    assert ran == [1]
    with open(tmp_path / "seed_1" / run_lib.SEED_DONE) as f:
        assert json.load(f) == {"seed": 1}

    per_seed = [read_report(tmp_path / f"seed_{s}" / "report.json") for s in (0, 1)]
    assert [r["config"]["seed"] for r in per_seed] == [0, 1]
    (row,) = report["rows"]
    values = [r["rows"][0]["recall@1"] for r in per_seed]
    assert row["model"] == "specialist/glyphs" and row["seeds"] == [0, 1]
    assert row["recall@1"] == sum(values) / 2
    assert abs(row["recall@1_std"] - abs(values[0] - values[1]) / 2 ** 0.5) < 1e-12
    assert report["seed_runs"] == {"0": "seed_0", "1": "seed_1"}
    assert report["config"]["seeds"] == [0, 1]
