"""Report rows over several seeds: mean, sample standard deviation and the seeds (DESIGN §4)."""

import numpy as np
import pytest

from tfembed.evaluation.report import aggregate_seeds, format_table


def _rows(rng, models=("specialist/a", "universal/snd"), domains=("a", "b")):
    return [{"model": m, "domain": d, "gallery": g, "recall@1": float(rng.uniform()),
             "recall@2": float(rng.uniform()), "step": 100, "selection": "final",
             "note": str(rng.integers(3))}
            for m in models for d in domains for g in ("domain", "fused")]


def test_mean_and_sample_std_per_row_against_numpy():
    rng = np.random.default_rng(0)
    per_seed = {s: _rows(rng) for s in (0, 1, 5)}
    # A later seed's rows in another order: rows are matched by (model, domain, gallery).
    per_seed[5] = per_seed[5][::-1]
    rows = aggregate_seeds(per_seed)
    assert [(r["model"], r["domain"], r["gallery"]) for r in rows] == [
        (r["model"], r["domain"], r["gallery"]) for r in per_seed[0]]
    for row in rows:
        same = [next(r for r in per_seed[s] if (r["model"], r["domain"], r["gallery"]) ==
                     (row["model"], row["domain"], row["gallery"])) for s in (0, 1, 5)]
        for metric in ("recall@1", "recall@2"):
            values = np.array([r[metric] for r in same])
            assert row[metric] == pytest.approx(values.mean())
            assert row[f"{metric}_std"] == pytest.approx(
                np.sqrt(((values - values.mean()) ** 2).sum() / 2))
        assert row["step"] == 100 and row["step_std"] == 0.0 and row["seeds"] == [0, 1, 5]
        assert row["selection"] == "final"
        # A non-numeric field the seeds disagree on is dropped, not picked from one seed.
        assert ("note" in row) == (len({r["note"] for r in same}) == 1)


def test_one_seed_has_zero_std_and_a_missing_row_is_named():
    rng = np.random.default_rng(1)
    rows = aggregate_seeds({3: _rows(rng)})
    assert all(r["recall@1_std"] == 0.0 and r["seeds"] == [3] for r in rows)
    with pytest.raises(ValueError, match=r"universal/snd.*seed\(s\) \[1\]"):
        aggregate_seeds({0: _rows(rng), 1: _rows(rng, models=("specialist/a",))})


def test_table_prints_mean_and_std():
    rows = aggregate_seeds({0: [{"model": "m", "domain": "a", "gallery": "domain",
                                 "recall@1": 0.5}],
                            1: [{"model": "m", "domain": "a", "gallery": "domain",
                                 "recall@1": 0.7}]})
    assert "60.0±14.1" in format_table(rows, ks=(1,))
