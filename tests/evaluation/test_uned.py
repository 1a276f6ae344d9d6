"""UnED's k-NN metrics against a brute-force transcription of DESIGN §8 (one query at a time)."""

import numpy as np
import pytest

from tfembed.evaluation.uned import UNED_DOMAINS, UNED_EVAL_PAIRS, uned_evaluate, uned_knn_metrics


def _as_set(label):
    return set(np.atleast_1d(label).tolist())


def reference(q, ql, qd, g, gl, gd, throw_first, top_k=5):
    """DESIGN §8, literally: a sorted list per query, Python loops, no blocks."""
    retrieved = top_k + (1 if throw_first else 0)
    r1 = mp = ap = 0.0
    n_used = skipped = 0
    for i in range(len(q)):
        sims = g.astype(np.float64) @ q[i].astype(np.float64)
        order = sorted(range(len(g)), key=lambda j: (-sims[j], j))[:retrieved]
        labels = _as_set(ql[i])
        correct = [gd[j] == qd[i] and bool(labels & _as_set(gl[j])) for j in order]
        correct += [False] * (retrieved - len(correct))
        in_index = sum(sum(1 for j in range(len(g)) if gd[j] == qd[i] and lab in _as_set(gl[j]))
                       for lab in np.atleast_1d(ql[i]).tolist())
        n_q = in_index - (1 if throw_first else 0)
        if n_q <= 0:
            skipped += 1
            continue
        n_used += 1
        hits = sum(correct[:min(retrieved, in_index)]) - (1 if throw_first else 0)
        kept = correct[1:] if throw_first else correct
        r1 += kept[0]
        mp += hits / min(n_q, top_k)
        cum, s = 0, 0.0
        for rank, c in enumerate(kept, start=1):
            cum += c
            s += cum / rank if c else 0.0
        ap += s / min(n_q, top_k)
    return {"recall@1": r1 / n_used, f"mmp@{top_k}": mp / n_used, f"map@{top_k}": ap / n_used,
            "num_queries": n_used, "skipped_queries": skipped}


def _problem(rng, n, dim=6, classes=7, domains=3, multi=False):
    # Small-integer embeddings: dot products are exact in float32, so ties are real ties and
    # the lower-index-first rule is tested, not float noise.
    emb = rng.integers(-2, 3, size=(n, dim)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)   # every domain uses the same label ids
    if multi:
        labels = [sorted(set(rng.integers(0, classes, size=rng.integers(1, 4)).tolist()))
                  if rng.random() < 0.4 else int(lab) for lab in labels]
    else:
        labels = labels.tolist()
    dom = rng.integers(0, domains, size=n)
    return emb, labels, dom


def _check(got, want):
    assert got["num_queries"] == want["num_queries"]
    assert got["skipped_queries"] == want["skipped_queries"]
    for key in ("recall@1", "mmp@5", "map@5"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_throw_first_matches_reference(seed, multi):
    rng = np.random.default_rng(seed)
    emb, labels, dom = _problem(rng, 120, multi=multi)
    emb[5] = emb[17]   # exact duplicates: the query may not be its own first neighbour
    emb[40] = emb[41]
    want = reference(emb, labels, dom, emb, labels, dom, True)
    for block in (None, 7):
        got = uned_knn_metrics(emb, labels, dom, emb, labels, dom, throw_first=True,
                               block_size=block)
        _check(got, want)


@pytest.mark.parametrize("multi", [False, True])
def test_query_index_split_matches_reference(multi):
    rng = np.random.default_rng(3)
    q, ql, qd = _problem(rng, 50, multi=multi)
    g, gl, gd = _problem(rng, 90, multi=multi)
    want = reference(q, ql, qd, g, gl, gd, False)
    _check(uned_knn_metrics(q, ql, qd, g, gl, gd, throw_first=False, block_size=11), want)
    assert want["skipped_queries"] >= 0


def test_long_index_uses_chunked_topk_and_matches_reference():
    # 2,000 index items: long enough for the two-stage (chunked) top-k of retrieval.py.
    from tfembed.evaluation.retrieval import _chunk_size

    assert _chunk_size(2000, 6) > 0
    rng = np.random.default_rng(4)
    g, gl, gd = _problem(rng, 2000, dim=5, classes=40)
    q, ql, qd = g[:60], gl[:60], gd[:60]
    want = reference(q, ql, qd, g, gl, gd, True)
    _check(uned_knn_metrics(q, ql, qd, g, gl, gd, throw_first=True, block_size=16), want)


def test_memory_budget_bounds_the_score_block(monkeypatch):
    # The ranked blocks never hold more rows than the budget allows: a [rows, N] float32 block.
    import tfembed.evaluation.uned as uned

    seen = []
    real = uned._rank_block

    def spy(q_aug, g_aug, k, chunk):
        seen.append(q_aug.shape[0] * g_aug.shape[0] * 4)
        return real(q_aug, g_aug, k, chunk)

    monkeypatch.setattr(uned, "_rank_block", spy)
    rng = np.random.default_rng(5)
    g, gl, gd = _problem(rng, 3000, dim=4)
    budget = 64 * 3100 * 4   # ~64 rows of this index per block
    uned_knn_metrics(g[:500], gl[:500], gd[:500], g, gl, gd, True, memory_budget_bytes=budget)
    assert len(seen) > 1 and max(seen) <= budget


def test_domains_keep_equal_labels_apart():
    # Two items with the same label id and identical embeddings in different domains: not a hit.
    q = np.array([[1.0, 0.0]], np.float32)
    g = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], np.float32)
    got = uned_knn_metrics(q, [3], [0], g, [3, 3, 3], [1, 0, 0], throw_first=False)
    assert got["recall@1"] == 0.0            # first neighbour is domain 1's class 3
    # n_q = 2 (domain 0's items only): of the first two ranks one is correct.
    assert got["mmp@5"] == pytest.approx(0.5)
    assert got["map@5"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_a_query_without_relevant_items_is_skipped():
    g = np.eye(3, dtype=np.float32)
    got = uned_knn_metrics(g, [0, 1, 1], [0, 0, 0], g, [0, 1, 1], [0, 0, 0], throw_first=True)
    assert got["skipped_queries"] == 1 and got["num_queries"] == 2


def _split(rng, n, classes=5):
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), rng.integers(0, classes, n).tolist()


def test_separate_and_merged_modes_follow_the_evaluation_pairs():
    rng = np.random.default_rng(6)
    embedded = {"cars": {"test": _split(rng, 40)},
                "inshop": {"test": _split(rng, 30), "index": _split(rng, 50)},
                "met": {"test": _split(rng, 20), "index": _split(rng, 60)}}
    out = uned_evaluate(embedded)
    ids = {d: UNED_DOMAINS.index(d) for d in embedded}
    for d in embedded:
        qs, xs = UNED_EVAL_PAIRS[d]["test"]
        (q, ql), (g, gl) = embedded[d][qs], embedded[d][xs]
        want = reference(q, ql, [ids[d]] * len(q), g, gl, [ids[d]] * len(g), qs == xs)
        _check(out["separate"][d], want)
    # Merged: every domain's index split concatenated (cars' is its test split), in UnED order.
    order = ["cars", "inshop", "met"]
    parts = [embedded[d][UNED_EVAL_PAIRS[d]["test"][1]] for d in order]
    g = np.concatenate([p[0] for p in parts])
    gl = sum((p[1] for p in parts), [])
    gd = sum(([ids[d]] * len(p[0]) for d, p in zip(order, parts)), [])
    for d in order:
        qs, xs = UNED_EVAL_PAIRS[d]["test"]
        q, ql = embedded[d][qs]
        _check(out["merged"][d], reference(q, ql, [ids[d]] * len(q), g, gl, gd, qs == xs))
    for mode in ("separate", "merged"):
        assert out[mode]["average"]["recall@1"] == pytest.approx(
            np.mean([out[mode][d]["recall@1"] for d in order]))


def test_evaluate_names_a_missing_split_and_unknown_domains():
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="'index'"):
        uned_evaluate({"gldv2": {"test": _split(rng, 10)}})
    with pytest.raises(ValueError, match="unknown UnED domain"):
        uned_evaluate({"birds": {"test": _split(rng, 10)}})
    with pytest.raises(ValueError, match="small_index"):
        uned_evaluate({"met": {"val": _split(rng, 10)}}, evaluation="val")


def test_tfembed_eval_scores_uned_domains_with_the_models_own_input_spec(tmp_path, capsys):
    # A .keras embedder at 24 px on a miniature UnED: the CLI reads only the evaluation splits,
    # embeds them with the model's ImageSpec and reports separate and merged rows that equal
    # uned_evaluate on the same embeddings.
    from tfembed import cli
    from tfembed.data.testing import make_uned_layout
    from tfembed.data.uned import read_uned_domain
    from tfembed.evaluation.report import read_report
    from tfembed.evaluation.uned import embed_uned
    from tfembed.models import build_embedder

    root = make_uned_layout(tmp_path / "uned", domains=["cars", "inshop", "met"])
    model = build_embedder("small_cnn", embedding_dim=8, input_shape=(24, 24, 3),
                           resize_size=28, width=0.25)
    model.save(tmp_path / "m.keras")
    argv = ["tfembed-eval", "--model", str(tmp_path / "m.keras"), "--data_dir", str(root),
            "--domains", "uned:cars,uned:inshop,uned:met", "--workdir", str(tmp_path)]
    assert cli.eval_main(argv) == 0
    assert "mMP@5" in capsys.readouterr().out
    rows = read_report(tmp_path)["rows"]
    assert {(r["gallery"], r["domain"]) for r in rows} == {
        (g, d) for g in ("uned_separate", "uned_merged") for d in ("cars", "inshop", "met")}
    domains = [read_uned_domain(root, d) for d in ("cars", "inshop", "met")]
    want = uned_evaluate(embed_uned(model, domains))
    for r in rows:
        expect = want[r["gallery"][len("uned_"):]][r["domain"]]
        for key in ("recall@1", "mmp@5", "map@5"):
            assert r[key] == pytest.approx(expect[key], abs=1e-6)


def test_protocol_evaluate_routes_uned_domains_and_refuses_a_mix(tmp_path):
    """``evaluation.protocol.evaluate`` (what every runner calls) scores UnED domains by UnED's
    protocol — the ``evaluate_uned`` rows, also on the val pairs — and refuses a run mixing
    UnED domains with others (their metrics have nothing in common)."""
    from tfembed.data.sources import load_domain
    from tfembed.data.testing import make_uned_layout
    from tfembed.data.uned import read_uned_domain
    from tfembed.evaluation.protocol import evaluate
    from tfembed.evaluation.uned import evaluate_uned
    from tfembed.models import build_embedder

    root = make_uned_layout(tmp_path / "uned", domains=["cars", "met"])
    domains = [read_uned_domain(root, d) for d in ("cars", "met")]
    assert {d.protocol for d in domains} == {"uned"}
    model = build_embedder("small_cnn", embedding_dim=8, input_shape=(24, 24, 3),
                           resize_size=28, width=0.25)
    for evaluation in ("test", "val"):
        got = evaluate(model, domains, name="m", uned_evaluation=evaluation, crop_boxes=False)
        want = evaluate_uned(model, domains, evaluation=evaluation, name="m")
        assert got == want and {r["gallery"] for r in got} == {"uned_separate", "uned_merged"}
    with pytest.raises(ValueError, match="crop"):
        evaluate(model, domains, crop_boxes=True)
    digits = load_domain("digits")
    assert digits.protocol == "recall"
    with pytest.raises(ValueError, match="not both"):
        evaluate(model, [domains[0], digits])
