"""Tests for tfembed.evaluation (retrieval, clustering, report) and RecallAtKCallback."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import normalized_mutual_info_score

from tfembed.evaluation import (
    format_table,
    fused_recall,
    map_at_r,
    nmi_f1,
    pairwise_f1,
    recall_at_k,
    recall_rows,
    write_report,
)
from tfembed.evaluation import retrieval
from tfembed.training.callbacks import RecallAtKCallback

KS = (1, 2, 4, 8)


# ---------------------------------------------------------------------------------------------
# brute force references: full float64 distance matrix, stable argsort, exclusions by mask


def _ranking(q, g, qid=None, gid=None, self_exclude=False):
    d = ((q[:, None, :].astype(np.float64) - g[None, :, :].astype(np.float64)) ** 2).sum(-1)
    excl = np.zeros(d.shape, bool)
    if self_exclude:
        excl |= np.eye(len(q), dtype=bool)
    if qid is not None:
        excl |= qid[:, None] == gid[None, :]
    order = np.argsort(d, axis=1, kind="stable")
    return [o[~excl[i, o]] for i, o in enumerate(order)]  # non-excluded, nearest first


def brute_recall(q, ql, g=None, gl=None, qid=None, gid=None, ks=KS):
    self_ex = g is None
    if g is None:
        g, gl = q, ql
        if qid is not None:
            gid = qid
    ranks = _ranking(q, g, qid, gid, self_ex)
    return {k: float(np.mean([(gl[r[:k]] == ql[i]).any() for i, r in enumerate(ranks)]))
            for k in ks}


def brute_map_at_r(q, ql, g=None, gl=None, qid=None, gid=None):
    self_ex = g is None
    if g is None:
        g, gl = q, ql
        if qid is not None:
            gid = qid
    aps = []
    for i, r in enumerate(_ranking(q, g, qid, gid, self_ex)):
        rel = gl[r] == ql[i]
        big_r = int(rel.sum())
        if big_r == 0:
            continue
        rel = rel[:big_r]
        prec = np.cumsum(rel) / np.arange(1, big_r + 1)
        aps.append(float((prec * rel).sum() / big_r))
    return float(np.mean(aps))


def _data(rng, n, dim=6, classes=7, duplicates=0):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    for _ in range(duplicates):  # exact copies of an item, same label, elsewhere in the data
        i, j = rng.choice(n, 2, replace=False)
        x[j], y[j] = x[i], y[i]
    return x, y


def _assert_recalls_equal(got, want):
    assert list(got) == list(want)
    for k in want:
        assert isinstance(got[k], float)
        assert got[k] == pytest.approx(want[k], abs=1e-12), (k, got, want)


# ---------------------------------------------------------------------------------------------
# recall_at_k


@pytest.mark.parametrize("block_size", [None, 7, 1])
def test_recall_no_gallery_matches_brute_force(rng, block_size):
    x, y = _data(rng, 103, duplicates=10)
    _assert_recalls_equal(recall_at_k(x, y, KS, block_size=block_size), brute_recall(x, y))


def test_recall_duplicate_of_query_counts_as_neighbour():
    # Item 1 is an exact copy of item 0 with the same label: excluded by index, not by value.
    x = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [5.0, 0.1]], np.float32)
    y = np.array([0, 0, 1, 1])
    assert recall_at_k(x, y, (1,)) == {1: 1.0}
    y2 = np.array([0, 2, 1, 1])  # now item 0's only neighbour at distance 0 has another label
    assert recall_at_k(x, y2, (1,))[1] == pytest.approx(0.5)


@pytest.mark.parametrize("block_size", [None, 9])
def test_recall_with_gallery_matches_brute_force(rng, block_size):
    q, ql = _data(rng, 61)
    g, gl = _data(rng, 150, duplicates=5)
    got = recall_at_k(q, ql, KS, g, gl, block_size=block_size)
    _assert_recalls_equal(got, brute_recall(q, ql, g, gl))


def test_recall_accepts_tensors_and_column_labels(rng):
    q, ql = _data(rng, 40)
    want = brute_recall(q, ql)
    got = recall_at_k(tf.constant(q), tf.constant(ql[:, None]), KS)
    _assert_recalls_equal(got, want)


def test_recall_with_ids_exclusion_matches_brute_force(rng):
    q, ql = _data(rng, 50)
    g, gl = _data(rng, 120, duplicates=4)
    # some queries are gallery items (share an id), a few ids repeat in the gallery
    gid = np.arange(1000, 1120)
    gid[5] = gid[6]
    qid = np.full(50, -1)
    qid[:20] = gid[rng.choice(120, 20, replace=False)]
    got = recall_at_k(q, ql, KS, g, gl, query_ids=qid, gallery_ids=gid, block_size=8)
    _assert_recalls_equal(got, brute_recall(q, ql, g, gl, qid, gid))


def test_recall_ids_without_gallery(rng):
    # ids shared by several items: every item with the query's id is excluded, itself included
    x, y = _data(rng, 60, classes=4)
    ids = np.repeat(np.arange(20), 3)
    got = recall_at_k(x, y, KS, query_ids=ids, block_size=11)
    _assert_recalls_equal(got, brute_recall(x, y, qid=ids))


def test_recall_matches_brute_force_in_chunked_path_with_tiny_budget(rng, monkeypatch):
    # N large enough for the chunked top-k (and its padding), memory budget so small that the
    # [block, N] score block is a few rows: many blocks and a partial last one.
    n = 3001
    x, y = _data(rng, n, dim=8, classes=300, duplicates=30)
    budget = 4 * n * 13 + 100
    seen = []
    real = retrieval._rank_block

    def spy(q_aug, g_aug, k, chunk):
        seen.append((q_aug.shape[0], int(g_aug.shape[0]), chunk))
        return real(q_aug, g_aug, k, chunk)

    monkeypatch.setattr(retrieval, "_rank_block", spy)
    got = recall_at_k(x, y, KS, memory_budget_bytes=budget)
    rows = [s[0] for s in seen]
    padded = {s[1] for s in seen}
    assert len(padded) == 1 and padded.pop() >= n
    assert all(s[2] > 0 for s in seen), "expected the chunked selection at this N"
    assert max(rows) * seen[0][1] * 4 <= budget
    assert len(rows) > 100 and rows[-1] < rows[0] and sum(rows) == n
    assert n * n * 4 > 100 * budget  # an N x N matrix would be far over the budget
    _assert_recalls_equal(got, brute_recall(x, y))


def test_choose_block_size_respects_budget():
    assert retrieval.choose_block_size(1000, 4 * 1000 * 37) == 37
    assert retrieval.choose_block_size(1000, 4 * 1000 * 37 - 1) == 36
    assert retrieval.choose_block_size(1000, 10) == 1  # one row is the floor
    assert retrieval.choose_block_size(1000, 10**9, num_queries=5) == 5


@pytest.mark.parametrize("n_far", [10, 3000])  # direct top-k, and the chunked one
def test_recall_ties_lower_gallery_index_first(n_far):
    # Six gallery copies of one point, labels 1..6, spread over the gallery: at equal distance
    # the earlier copy ranks first, also when more copies tie than the top-k keeps.
    rng = np.random.default_rng(1)
    far = rng.normal(size=(n_far, 4)).astype(np.float32) + 100.0
    point = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    g = np.concatenate([far, np.zeros((6, 4), np.float32)])
    gl = np.zeros(len(g), int)
    slots = np.linspace(0, len(g) - 1, 6).astype(int)
    far_slots = np.setdiff1d(np.arange(len(g)), slots)
    g[far_slots], g[slots] = far, point
    gl[slots] = np.arange(1, 7)
    q = point[None, :] + 0.01
    assert recall_at_k(q, [1], (1, 2, 4), g, gl) == {1: 1.0, 2: 1.0, 4: 1.0}
    assert recall_at_k(q, [2], (1, 2, 4), g, gl) == {1: 0.0, 2: 1.0, 4: 1.0}
    assert recall_at_k(q, [4], (1, 2, 4), g, gl) == {1: 0.0, 2: 0.0, 4: 1.0}
    assert recall_at_k(q, [5], (1, 2, 4), g, gl) == {1: 0.0, 2: 0.0, 4: 0.0}


def test_recall_k_larger_than_gallery_and_validation(rng):
    x, y = _data(rng, 5, classes=2)
    _assert_recalls_equal(recall_at_k(x, y, (1, 16)), brute_recall(x, y, ks=(1, 16)))
    with pytest.raises(ValueError):
        recall_at_k(x, y, (0,))
    with pytest.raises(ValueError):
        recall_at_k(x, y[:4])
    with pytest.raises(ValueError):
        recall_at_k(x, y, KS, x, None)


# ---------------------------------------------------------------------------------------------
# fused_recall


def _hand_domains():
    def pts(*xy):
        return np.array(xy, np.float32)

    a = (pts((0, 0), (2, 0), (10, 0), (13, 0)), np.array([0, 0, 1, 1]), None, None)
    b = (pts((1, 0), (11, 0), (4.5, 0), (16.5, 0)), np.array([2, 3, 2, 3]), None, None)
    # In-shop-like: separate query and gallery splits; its query's nearest image is b's (4.5, 0)
    c = (pts((4.5, 2.0)), np.array([4]), pts((4.5, 5.0), (50, 50)), np.array([4, 5]))
    return {"a": a, "b": b, "c": c}


def test_fused_recall_hand_built():
    domains = _hand_domains()
    # Alone, every domain is perfect at R@1.
    for q, ql, g, gl in domains.values():
        assert recall_at_k(q, ql, (1,), g, gl) == {1: 1.0}
    got = fused_recall(domains, ks=(1, 2, 4))
    # a: each a-point's nearest fused neighbour is a b-point (0->1, 2->1, 10->11, 13->11), its
    #    own class comes second.
    assert got["a"] == {1: 0.0, 2: 1.0, 4: 1.0}
    # b: 1 -> {0, 2} (class 0) then 4.5 (rank 3); 11 -> 10, 13, then 16.5 (rank 3);
    #    4.5 -> 2 then 1 (rank 2); 16.5 -> 13 then 11 (rank 2).
    assert got["b"] == {1: 0.0, 2: 0.5, 4: 1.0}
    # c: the query (4.5, 2) is 2 from b's (4.5, 0), 3 from its own gallery image (4.5, 5).
    assert got["c"] == {1: 0.0, 2: 1.0, 4: 1.0}


def test_fused_recall_one_domain_equals_recall(rng):
    x, y = _data(rng, 80)
    got = fused_recall({"only": (x, y)}, ks=KS)
    _assert_recalls_equal(got["only"], brute_recall(x, y))


def test_fused_recall_equals_brute_force_on_concatenation(rng):
    x1, y1 = _data(rng, 40, classes=5)
    x2, y2 = _data(rng, 30, classes=5)
    q3, l3 = _data(rng, 20, classes=5)
    g3, m3 = _data(rng, 25, classes=5)
    y2, l3, m3 = y2 + 10, l3 + 20, m3 + 20
    got = fused_recall({"d1": (x1, y1, None, None), "d2": (x2, y2), "d3": (q3, l3, g3, m3)},
                       ks=KS, block_size=6)
    fused_g = np.concatenate([x1, x2, g3])
    fused_l = np.concatenate([y1, y2, m3])
    gid = np.arange(len(fused_g))
    _assert_recalls_equal(got["d1"], brute_recall(x1, y1, fused_g, fused_l, np.arange(40), gid))
    _assert_recalls_equal(got["d2"],
                          brute_recall(x2, y2, fused_g, fused_l, 40 + np.arange(30), gid))
    _assert_recalls_equal(got["d3"], brute_recall(q3, l3, fused_g, fused_l))


def test_fused_recall_rejects_shared_labels(rng):
    x, y = _data(rng, 10, classes=3)
    with pytest.raises(ValueError, match="share labels"):
        fused_recall({"a": (x, y), "b": (x, y)})


# ---------------------------------------------------------------------------------------------
# map_at_r


def test_map_at_r_matches_brute_force(rng):
    x, y = _data(rng, 90, classes=6, duplicates=5)
    assert map_at_r(x, y, block_size=16) == pytest.approx(brute_map_at_r(x, y), abs=1e-12)
    q, ql = _data(rng, 30, classes=6)
    g, gl = _data(rng, 70, classes=6)
    assert map_at_r(q, ql, g, gl) == pytest.approx(brute_map_at_r(q, ql, g, gl), abs=1e-12)
    gid = np.arange(70)
    qid = np.full(30, -1)
    qid[:10] = np.arange(10)
    assert map_at_r(q, ql, g, gl, qid, gid, block_size=7) == pytest.approx(
        brute_map_at_r(q, ql, g, gl, qid, gid), abs=1e-12)


def test_map_at_r_hand_computed():
    # query at 0 (label 0); gallery by distance: L0, L1, L0, L1 -> R = 2, AP@R = (1 + 0) / 2
    q = np.array([[0.0]], np.float32)
    g = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    assert map_at_r(q, [0], g, [0, 1, 0, 1]) == pytest.approx(0.5)
    # L1 first, then L0, L0 -> R = 2, top 2 = (L1, L0): AP@R = (0 + 1/2) / 2
    assert map_at_r(q, [0], g, [1, 0, 0, 1]) == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# clustering


def test_nmi_f1_perfect_clustering(rng):
    centres = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    y = np.repeat(np.arange(3), 20)
    x = centres[y] + rng.normal(scale=0.1, size=(60, 2)).astype(np.float32)
    got = nmi_f1(x, y)
    assert got == {"nmi": pytest.approx(1.0), "f1": pytest.approx(1.0)}
    assert isinstance(got["nmi"], float) and isinstance(got["f1"], float)


def test_pairwise_f1_hand_computed():
    # classes {0,1,2}{3,4}, clusters {0,1}{2,3,4}: same-cluster pairs 1 + 3 = 4, same-class
    # pairs 3 + 1 = 4, pairs in both: (0,1), (3,4) = 2 -> P = R = F1 = 0.5
    got = pairwise_f1([0, 0, 0, 1, 1], [7, 7, 9, 9, 9])
    assert got == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    x = np.array([[0.0], [0.1], [5.0], [5.1], [5.2]], np.float32)
    res = nmi_f1(x, [0, 0, 0, 1, 1], num_clusters=2)
    assert res["f1"] == pytest.approx(0.5)
    assert res["nmi"] == pytest.approx(
        normalized_mutual_info_score([0, 0, 0, 1, 1], [0, 0, 1, 1, 1]))


# ---------------------------------------------------------------------------------------------
# report


def _rows():
    return [
        recall_rows("specialist/cub", "cub", "domain", {1: 0.61, 2: 0.72, 4: 0.82, 8: 0.89}),
        recall_rows("specialist/cars", "cars", "domain", {1: 0.73, 2: 0.82, 4: 0.888, 8: 0.93}),
        recall_rows("universal/snd", "cub", "domain", {1: 0.60, 2: 0.70, 4: 0.80, 8: 0.90}),
        recall_rows("universal/snd", "cars", "domain", {1: 0.70, 2: 0.80, 4: 0.90, 8: 0.95}),
        recall_rows("universal/snd", "cub", "fused", {1: 0.50, 2: 0.60, 4: 0.70, 8: 0.80}),
        recall_rows("universal/snd", "cars", "fused", {1: 0.55, 2: 0.65, 4: 0.75, 8: 0.85}),
    ]


def test_recall_rows():
    row = recall_rows("universal/snd", "cub", "fused", {2: np.float32(0.5), 1: 0.25},
                      **{"map@r": np.float64(0.125)})
    assert row == {"model": "universal/snd", "domain": "cub", "gallery": "fused",
                   "recall@1": 0.25, "recall@2": 0.5, "map@r": 0.125}
    assert list(row)[:5] == ["model", "domain", "gallery", "recall@1", "recall@2"]
    with pytest.raises(ValueError):
        recall_rows("m", "cub", "global", {1: 0.1})


def test_write_report_exact_keys_and_serialisable_config(tmp_path, capsys):
    import ml_collections

    cfg = ml_collections.ConfigDict({"lr": 1e-4, "sizes": (224, 256), "seed": np.int64(3),
                                     "nested": {"w": np.float32(0.5), "on": np.bool_(True)}})
    rows = _rows()
    path = write_report(tmp_path / "run", "snd_universal", cfg, rows)
    with open(path) as f:
        report = json.load(f)
    assert list(report) == ["recipe", "config", "rows"]
    assert report["recipe"] == "snd_universal"
    assert report["config"] == {"lr": 1e-4, "sizes": [224, 256], "seed": 3,
                                "nested": {"w": 0.5, "on": True}}
    assert report["rows"] == rows
    assert set(report["rows"][0]) == {"model", "domain", "gallery", "recall@1", "recall@2",
                                      "recall@4", "recall@8"}
    assert all(0.0 <= r["recall@1"] <= 1.0 for r in report["rows"])  # fractions
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["report.json"]  # no temp left
    out = capsys.readouterr().out
    assert "average" in out and "61.0" in out
    # rewriting replaces the file
    write_report(tmp_path / "run", "snd_universal", {"t": (1, 2)}, rows[:1], echo=False)
    with open(path) as f:
        assert json.load(f)["config"] == {"t": [1, 2]}
    with pytest.raises(ValueError):
        write_report(tmp_path, "r", {}, [{"model": "m", "domain": "d"}])


def test_format_table_average_rows():
    table = format_table(_rows())
    lines = table.splitlines()
    assert lines[0].split() == ["model", "domain", "gallery", "R@1", "R@2", "R@4", "R@8"]
    avg = [ln.split() for ln in lines if " average " in ln]
    # specialists averaged as a family, the universal model per gallery
    assert ["specialist/*", "average", "domain", "67.0", "77.0", "85.4", "91.0"] in avg
    assert ["universal/snd", "average", "domain", "65.0", "75.0", "85.0", "92.5"] in avg
    assert ["universal/snd", "average", "fused", "52.5", "62.5", "72.5", "82.5"] in avg
    assert table.index("[gallery: domain]") < table.index("[gallery: fused]")
    assert "61.0" in table and "88.8" in table
    assert len({len(ln) for ln in lines if ln.split() and ln.split()[0] != "[gallery:"}) <= 2
    partial = format_table([{"model": "m", "domain": "d", "gallery": "domain", "recall@1": 0.5}])
    assert "50.0" in partial and "-" in partial


# ---------------------------------------------------------------------------------------------
# RecallAtKCallback


def _toy_sets(rng, n_classes=4, per_class=6, dim=5, label_offset=0):
    centres = rng.normal(scale=3.0, size=(n_classes, dim)).astype(np.float32)
    y = np.repeat(np.arange(n_classes), per_class)
    x = centres[y] + rng.normal(scale=0.3, size=(len(y), dim)).astype(np.float32)
    return x, (y + label_offset).astype(np.int64)


def _toy_model():
    inputs = keras.Input((5,))
    out = keras.layers.UnitNormalization()(keras.layers.Dense(8)(inputs))
    return keras.Model(inputs, out)


def _toy_loss(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_pred - 0.1))


class _LogsSpy(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.keys = []

    def on_epoch_end(self, epoch, logs=None):
        self.keys.append(sorted(logs))


def _fit_with_callback(model, cb, x, y, epochs=2):
    spy = _LogsSpy()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    hist = model.fit(train, epochs=epochs, verbose=0, shuffle=False, callbacks=[cb, spy])
    return hist, spy


def test_callback_logs_recall_into_history(rng):
    x, y = _toy_sets(rng)
    xg, yg = _toy_sets(rng, label_offset=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    gallery = tf.data.Dataset.from_tensor_slices((xg, yg)).batch(5)
    model = _toy_model()
    model.compile(optimizer="sgd", loss=_toy_loss)
    cb = RecallAtKCallback({"toy": (ds, None), "toyg": (ds, gallery)}, ks=(1, 2))
    hist, spy = _fit_with_callback(model, cb, x, y)
    assert len(hist.history["val_toy_recall@1"]) == 2
    assert len(hist.history["val_toyg_recall@2"]) == 2
    assert "val_recall@1" in hist.history  # the mean over domains
    assert "val_toy_recall@1" in spy.keys[-1]  # seen by callbacks listed after it
    assert [h["epoch"] for h in cb.history] == [0, 1]
    json.dumps(cb.history)
    # the logged value is recall_at_k of the final model's embeddings
    want = recall_at_k(model.predict(x, verbose=0), y, (1, 2))
    assert hist.history["val_toy_recall@1"][-1] == pytest.approx(want[1])
    assert hist.history["val_toy_recall@2"][-1] == pytest.approx(want[2])


def test_callback_dict_inputs_fused_and_every_n(rng):
    images = keras.Input((5,), name="images")
    domain = keras.Input((), dtype="int32", name="domain")
    dom = keras.layers.Embedding(2, 3)(domain)
    h = keras.layers.Concatenate()([images, dom])
    model = keras.Model({"images": images, "domain": domain},
                        keras.layers.UnitNormalization()(keras.layers.Dense(8)(h)))
    model.compile(optimizer="sgd", loss=_toy_loss)

    def make(x, y, d):
        return tf.data.Dataset.from_tensor_slices(
            ({"images": x, "domain": np.full(len(y), d, np.int32)}, y)).batch(8)

    xa, ya = _toy_sets(rng)
    xb, yb = _toy_sets(rng, label_offset=100)
    cb = RecallAtKCallback({"a": (make(xa, ya, 0), None), "b": make(xb, yb, 1)}, ks=(1,),
                           every_n_epochs=2, prefix="eval_", fused=True)
    spy = _LogsSpy()
    train = make(np.concatenate([xa, xb]), np.concatenate([ya, yb]), 0)
    model.fit(train, epochs=4, verbose=0, shuffle=False, callbacks=[cb, spy])
    assert [h["epoch"] for h in cb.history] == [1, 3]
    assert "eval_a_recall@1" not in spy.keys[0] and "eval_a_recall@1" in spy.keys[1]
    for key in ("eval_a_recall@1", "eval_b_recall@1", "eval_a_fused_recall@1",
                "eval_b_fused_recall@1", "eval_recall@1", "eval_fused_recall@1"):
        assert key in cb.history[-1] and 0.0 <= cb.history[-1][key] <= 1.0


def test_callback_every_n_steps_keeps_its_history_across_a_resume(rng, tmp_path):
    x, y = _toy_sets(rng)           # 3 batches of 8 per epoch
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = _toy_model()
    model.compile(optimizer="sgd", loss=_toy_loss)
    path = str(tmp_path / "backup" / "history.json")
    cb = RecallAtKCallback({"toy": (ds, None)}, ks=(1,), every_n_steps=4, history_path=path)
    _fit_with_callback(model, cb, x, y, epochs=3)       # steps 1..9: evaluations at 4 and 8
    assert [h["step"] for h in cb.history] == [4, 8] and "epoch" not in cb.history[0]
    with open(path) as f:
        assert json.load(f) == cb.history
    # A run resumed from a step-8 checkpoint keeps both; one resumed at step 6 drops step 8
    # (it trains that step again); one resumed at step 12 whose evaluation was lost (killed
    # between the checkpoint and the evaluation) evaluates the restored model first.
    for step, want in ((8, [4, 8]), (6, [4]), (12, [4, 8, 12])):
        again = RecallAtKCallback({"toy": (ds, None)}, ks=(1,), every_n_steps=4,
                                  history_path=path)
        again.resume_at(step)
        if step == 12:
            _fit_with_callback(model, again, x, y, epochs=2)     # steps 13..18: evaluates 16
            want += [16]
        assert [h["step"] for h in again.history] == want
        if step != 6:
            assert again.history[:2] == cb.history


def test_callback_under_two_replica_strategy(rng, two_replica_strategy):
    x, y = _toy_sets(rng, n_classes=4, per_class=8)
    with two_replica_strategy.scope():
        model = _toy_model()
        model.compile(optimizer="sgd", loss=_toy_loss)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    cb = RecallAtKCallback({"toy": (ds, None)}, ks=(1, 4))
    hist, spy = _fit_with_callback(model, cb, x, y)
    assert len(hist.history["val_toy_recall@1"]) == 2
    want = recall_at_k(model.predict(x, verbose=0), y, (1, 4))
    assert hist.history["val_toy_recall@4"][-1] == pytest.approx(want[4])
    assert math.isfinite(cb.history[-1]["val_toy_recall@1"])


def test_atomic_save_keeps_the_previous_file_when_a_save_fails(tmp_path):
    import keras

    from tfembed.io import atomic_save

    def tiny(value):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.set_weights([np.full((2, 1), value, np.float32), np.zeros(1, np.float32)])
        return model

    path = tmp_path / "model.keras"
    atomic_save(tiny(1.0), path)

    class Broken:
        def save(self, filepath):
            open(filepath, "wb").write(b"half a zip")   # written, then the save dies
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(Broken(), path)
    assert os.listdir(tmp_path) == ["model.keras"]          # no temporary left behind
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.get_weights()[0], np.full((2, 1), 1.0))
    atomic_save(tiny(2.0), path)
    np.testing.assert_array_equal(keras.saving.load_model(path).get_weights()[0],
                                  np.full((2, 1), 2.0))
