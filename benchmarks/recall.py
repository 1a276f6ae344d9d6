"""Benchmark: blocked Recall@K against the bare matmul it cannot avoid.

Recall@K over N items needs every query-gallery distance, i.e. at least the FLOPs of one
``[N, D] @ [D, N]`` matmul. This script times that matmul and ``tfembed.evaluation.recall_at_k`` on
the same data (N = 60 000 unit vectors, D = 128, 15 000 classes of 4 images; the SOP-test size) and
prints the ratio recall_time / matmul_time; the goal is <= 2.

The full N x N float32 output is 14.4 GB, too much to materialise comfortably next to everything
else in 24 GB of RAM, so the matmul is timed in the same row blocks that ``recall_at_k`` uses
(each block ``[b, D] @ [D, N]`` is computed and dropped): the same total FLOPs, and the same
memory traffic per block, with none of the ranking work. A second matmul timing with larger
blocks shows how much the block size itself costs.

Usage: ``python benchmarks/recall.py [--n 60000] [--dim 128] [--repeats 3] [--budget-mb 256]
[--threads 0]``
"""

import argparse
import os
import platform
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfembed.evaluation import recall_at_k  # noqa: E402
from tfembed.evaluation import retrieval  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def rss_mb() -> float:
    """Current resident set size of this process, MB (Linux /proc; else the peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20  # KB on Linux, B on macOS


def best_of(fn, repeats):
    """Best wall time of ``repeats`` runs, all wall times, and the CPU time of the best run."""
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    best = int(np.argmin(times))
    return times[best], times, cpu[best]


def time_per_step(fn, batches, steps):
    """Seconds per call of ``fn(*batch)`` over ``steps`` calls cycling through ``batches``
    (the step timer of the training-step benchmarks)."""
    start = time.perf_counter()
    for i in range(steps):
        fn(*batches[i % len(batches)])
    return (time.perf_counter() - start) / steps


def blocked_matmul(x, block):
    """``x @ x^T`` in row blocks of ``block``; every block is computed in full and dropped.

    Eager CPU ops run synchronously, so each block is really computed before the next starts.
    """
    n = x.shape[0]
    for start in range(0, n, block):
        out = tf.matmul(x[start:start + block], x, transpose_b=True)
        del out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0,
                   help="TF intra-op threads (0 = TF's default, all cores); 1 gives per-core "
                        "timings that other processes on a busy machine disturb less")
    p.add_argument("--budget-mb", type=float,
                   default=retrieval.DEFAULT_MEMORY_BUDGET_BYTES / 2**20)
    args = p.parse_args(argv)

    n, dim = args.n, args.dim
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    budget = int(args.budget_mb * 2**20)
    print("== tfembed Recall@K benchmark ==")
    print(f"machine : {cpu_model()}, {os.cpu_count()} CPU(s) visible, "
          f"TF {tf.__version__} (intra-op threads: "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'auto'})")
    print(f"data    : N={n} float32 unit embeddings, dim={dim}, {n // args.per_class} classes x "
          f"{args.per_class} images; each item queries the other N-1; ks=(1, 2, 4, 8)")
    print(f"load    : {os.getloadavg()[0]:.1f} (1-min load average at start)")
    print(f"RSS before data: {rss_mb():.0f} MB")

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.permutation(np.repeat(np.arange(n // args.per_class + 1), args.per_class)[:n])

    # What recall_at_k will choose: top 8 + 1 excluded (the query itself) per row, the gallery
    # padded to a whole number of selection chunks, the block sized from the padded width.
    chunk = retrieval._chunk_size(n, 8 + 1)
    width = -(-n // chunk) * chunk if chunk else n
    block = retrieval.choose_block_size(width, budget, n)
    print(f"block   : {block} query rows per block -> [{block}, {width}] float32 score block = "
          f"{block * width * 4 / 2**20:.0f} MiB (budget {budget / 2**20:.0f} MiB); "
          f"{-(-n // block)} blocks; top-k selection chunk {chunk}; full NxN would be "
          f"{n * n * 4 / 1e9:.1f} GB")
    print(f"RSS after data: {rss_mb():.0f} MB")

    x = tf.constant(emb)
    flops = 2.0 * n * n * dim
    blocked_matmul(x, block)  # warm-up (thread pools, oneDNN primitives)
    t_mm, all_mm, cpu_mm = best_of(lambda: blocked_matmul(x, block), args.repeats)
    print(f"\n(a) tf.matmul [{n},{dim}] @ [{dim},{n}] in {block}-row blocks (output dropped): "
          f"best wall {t_mm:.2f} s of {['%.2f' % t for t in all_mm]} = "
          f"{flops / t_mm / 1e9:.0f} GFLOP/s; CPU time of that run {cpu_mm:.2f} s")
    print(f"    RSS after matmul: {rss_mb():.0f} MB")

    result = {}

    def run():
        result.update(recall_at_k(emb, labels, (1, 2, 4, 8), memory_budget_bytes=budget))

    recall_at_k(emb[:2000], labels[:2000], (1, 2, 4, 8))  # warm-up: traces the block function
    t_rc, all_rc, cpu_rc = best_of(run, args.repeats)
    print(f"\n(b) recall_at_k(ks=(1,2,4,8)) on the same data: best wall {t_rc:.2f} s of "
          f"{['%.2f' % t for t in all_rc]}; CPU time of that run {cpu_rc:.2f} s")
    print(f"    recalls (random data, so near chance): "
          + ", ".join(f"R@{k}={v:.4f}" for k, v in result.items()))
    print(f"    RSS after recall: {rss_mb():.0f} MB")

    peak_after_recall = peak_rss_mb()

    big = min(n, max(block, 8192))
    t_big, _, _ = best_of(lambda: blocked_matmul(x, big), 1)
    print(f"\n(c) for reference, the same matmul in {big}-row blocks "
          f"({big * n * 4 / 2**30:.1f} GiB each): {t_big:.2f} s = {flops / t_big / 1e9:.0f} "
          f"GFLOP/s (does a bigger block help the matmul? not used in the ratio)")

    ratio = t_rc / t_mm
    print(f"\nratio recall_time / matmul_time = {t_rc:.2f} / {t_mm:.2f} = {ratio:.2f}  "
          f"(goal <= 2: {'MET' if ratio <= 2 else 'NOT MET'})")
    print(f"same ratio in CPU time (less sensitive to other processes on the machine) = "
          f"{cpu_rc:.2f} / {cpu_mm:.2f} = {cpu_rc / cpu_mm:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} "
          f"CPU(s); above the CPU count, other processes were competing for the cores and the "
          f"wall times are noisy")
    print(f"peak RSS (ru_maxrss) after (a)+(b): {peak_after_recall:.0f} MB "
          f"(embeddings {emb.nbytes / 2**20:.0f} MiB, "
          f"score block {block * width * 4 / 2**20:.0f} MiB); "
          f"after (c): {peak_rss_mb():.0f} MB")
    return ratio


if __name__ == "__main__":
    main()
