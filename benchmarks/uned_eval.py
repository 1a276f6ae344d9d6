"""Benchmark: UnED's merged-index evaluation against the matmul it cannot avoid.

UnED's headline protocol ranks every domain's queries against the merged index of all eight
domains: at least the FLOPs of one ``[Q, D] @ [D, N]`` matmul. This script builds synthetic
embeddings split into 8 domains (labels shared across domains, as UnED's are; a few multi-label
queries), times ``tfembed.evaluation.uned.uned_evaluate(..., modes=("merged",))`` and the bare
matmul in the same row blocks it uses (each ``[b, D] @ [D, N]`` block computed and dropped), and
prints time ÷ matmul (goal ≤ 1.5), the peak memory, and the extrapolation to UnED's full size
(241k queries × 1.4M index items) on this machine.

Usage: ``python benchmarks/uned_eval.py [--index 200000] [--queries 40000] [--dim 128]
[--repeats 2] [--budget-mb 256]``
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

from recall import best_of, cpu_model, peak_rss_mb, rss_mb  # noqa: E402

from tfembed.data.uned import UNED_DOMAINS, UNED_EVAL_PAIRS  # noqa: E402
from tfembed.evaluation import retrieval  # noqa: E402
from tfembed.evaluation.uned import uned_evaluate  # noqa: E402

UNED_QUERIES, UNED_INDEX = 241_000, 1_400_000   # UnED's test queries and merged index (ICCV 2023)


def synthetic(index, queries, dim, rng):
    """``{domain: {split: (emb, labels)}}`` of UnED's 8 domains, ``queries / 8`` queries each.

    As in UnED, five domains (cars, sop, inat, food2k, rp2k) query their own test split, which
    is also their part of the merged index; the other three (inshop, met, gldv2) query a test
    split against a separate index split, which gets the rest of the ``index`` items (UnED's
    GLDv2 index alone is 762k). Classes of ~4 index images; every 50th separate query is
    multi-label (GLDv2-like)."""
    per_q = queries // len(UNED_DOMAINS)
    self_query = [d for d in UNED_DOMAINS if UNED_EVAL_PAIRS[d]["test"][0] ==
                  UNED_EVAL_PAIRS[d]["test"][1]]
    per_index = (index - per_q * len(self_query)) // (len(UNED_DOMAINS) - len(self_query))
    if per_index < 1:
        raise ValueError(f"--index {index} must exceed the self-querying domains' queries "
                         f"({per_q * len(self_query)})")

    def unit(n):
        x = rng.standard_normal((n, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    out = {}
    for d in UNED_DOMAINS:
        q_split, i_split = UNED_EVAL_PAIRS[d]["test"]
        n = per_q if q_split == i_split else per_index
        classes = max(1, n // 4)
        out[d] = {i_split: (unit(n), rng.integers(0, classes, n))}
        if q_split != i_split:
            ql = rng.integers(0, classes, per_q).tolist()
            for j in range(0, per_q, 50):
                ql[j] = [ql[j], (ql[j] + 1) % classes]
            out[d][q_split] = (unit(per_q), ql)
    return out


def blocked_matmul(q, g, block):
    for start in range(0, q.shape[0], block):
        out = tf.matmul(q[start:start + block], g, transpose_b=True)
        del out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=40_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--budget-mb", type=float,
                   default=retrieval.DEFAULT_MEMORY_BUDGET_BYTES / 2**20)
    args = p.parse_args(argv)
    budget = int(args.budget_mb * 2**20)
    rng = np.random.default_rng(0)
    print("== tfembed UnED merged-index evaluation benchmark ==")
    print(f"machine : {cpu_model()}, {os.cpu_count()} CPU(s), TF {tf.__version__}")
    embedded = synthetic(args.index, args.queries, args.dim, rng)
    index = np.concatenate([embedded[d][UNED_EVAL_PAIRS[d]["test"][1]][0] for d in UNED_DOMAINS])
    queries = np.concatenate([embedded[d][UNED_EVAL_PAIRS[d]["test"][0]][0]
                              for d in UNED_DOMAINS])
    n, q = len(index), len(queries)
    print(f"data    : merged index {n} × {args.dim}, {q} queries over 8 domains "
          f"(labels shared across domains, every 50th separate query multi-label)")
    chunk = retrieval._chunk_size(n, 6)
    width = -(-n // chunk) * chunk if chunk else n
    block = retrieval.choose_block_size(width, budget)
    print(f"block   : {block} query rows × {width} = {block * width * 4 / 2**20:.0f} MiB score "
          f"block (budget {budget / 2**20:.0f} MiB); the full matrix would be "
          f"{q * n * 4 / 1e9:.1f} GB")
    print(f"RSS after data: {rss_mb():.0f} MB")

    gx, qx = tf.constant(index), tf.constant(queries)
    flops = 2.0 * q * n * args.dim
    blocked_matmul(qx[:block], gx, block)   # warm-up
    t_mm, all_mm, cpu_mm = best_of(lambda: blocked_matmul(qx, gx, block), args.repeats)
    print(f"\n(a) matmul [{q},{args.dim}] @ [{args.dim},{n}] in {block}-row blocks: best "
          f"{t_mm:.2f} s of {['%.2f' % t for t in all_mm]} = {flops / t_mm / 1e9:.0f} GFLOP/s")

    result = {}

    def run():
        result.update(uned_evaluate(embedded, modes=("merged",), memory_budget_bytes=budget))

    small = {d: {s: (e[:500], lab[:500]) for s, (e, lab) in v.items()} for d, v in
             list(embedded.items())[:2]}
    uned_evaluate(small, modes=("merged",))   # warm-up: traces the block functions
    t_ev, all_ev, cpu_ev = best_of(run, args.repeats)
    avg = result["merged"]["average"]
    print(f"\n(b) uned_evaluate(merged) on the same data: best {t_ev:.2f} s of "
          f"{['%.2f' % t for t in all_ev]}; average R@1 {avg['recall@1']:.4f}, mMP@5 "
          f"{avg['mmp@5']:.4f} (random data: near chance)")
    ratio = t_ev / t_mm
    print(f"\nratio evaluation / matmul = {t_ev:.2f} / {t_mm:.2f} = {ratio:.2f} (goal <= 1.5: "
          f"{'MET' if ratio <= 1.5 else 'NOT MET'}); in CPU time {cpu_ev / cpu_mm:.2f}")
    print(f"peak RSS {peak_rss_mb():.0f} MB (index {index.nbytes / 2**20:.0f} MiB, queries "
          f"{queries.nbytes / 2**20:.0f} MiB, score block {block * width * 4 / 2**20:.0f} MiB)")
    scale = (UNED_QUERIES * UNED_INDEX) / (q * n)
    print(f"UnED's full test protocol ({UNED_QUERIES} queries × {UNED_INDEX} index, "
          f"{args.dim}-d) is {scale:.0f}× these FLOPs: ~{t_ev * scale / 60:.0f} min here at this "
          f"ratio (merged only; separate mode adds ~1/8 of it); its memory: the index "
          f"{UNED_INDEX * args.dim * 4 / 2**30:.2f} GiB + one score block of the same budget")
    return ratio


if __name__ == "__main__":
    main()
