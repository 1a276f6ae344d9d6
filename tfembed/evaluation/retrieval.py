"""Retrieval metrics: Recall@K, fused-gallery Recall@K and MAP@R, computed in query blocks.

Every metric here ranks gallery items by Euclidean distance to a query and never holds the full
``[num_queries, num_gallery]`` distance matrix: queries are processed ``block_size`` rows at a time
and only the ``k`` nearest gallery items of each row leave the block. The block size is the largest
one whose ``[block_size, num_gallery]`` float32 score block fits ``memory_budget_bytes``, so memory
is ``O(block_size * num_gallery)`` however large the evaluation set is.

How a block is ranked. ``‖q − g‖² = ‖q‖² − 2 q·g + ‖g‖²`` and ``‖q‖²`` is the same for every
gallery item of a query, so ranking by distance is ranking by the score ``2 q·g − ‖g‖²`` (larger =
nearer). The gallery is stored once as ``[2g, −‖g‖²]`` and each query as ``[q, 1]``, so one matmul
with ``dim + 1`` columns yields the scores with no extra elementwise pass over the block. Both are
first centred on the gallery mean (distances do not change; float32 rounding of the scores does,
for the better). The k best scores of each row are then selected without sorting the row: for
long rows in two stages (max of every chunk of ~sqrt(N/k) scores, the k best chunks, ``top_k``
over those only — exact, see ``_topk_chunked``), because ``tf.math.top_k`` over a 60 000-long row
costs several times the matmul that produced it; for short rows directly with ``top_k``.

Exclusions. Without a gallery, every item queries all the *other* items: the query itself is
excluded by index, so an exact duplicate of it (another index) still counts as a neighbour. With
``query_ids``/``gallery_ids`` a gallery item whose id equals the query's id is excluded; this is how
the fused gallery (each domain's test images are both queries and part of the gallery) excludes a
query from its own ranking. The block asks ``top_k`` for ``k + (most items excluded for any query)``
items, so after dropping the excluded ones at least ``k`` remain (or the whole gallery does).

Ties. ``tf.math.top_k`` puts the lower index first among equal scores, so among gallery items at
exactly the same computed distance the one earlier in the gallery ranks first: results are
deterministic for a given input order.

Queries with no item of their label in the gallery count as misses for Recall@K (they are in the
denominator) and are left out of MAP@R, where R = 0 makes AP@R undefined.
"""

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

DEFAULT_MEMORY_BUDGET_BYTES = 256 * 2**20  # one [block, num_gallery] float32 score block
_BYTES_PER_SCORE = 4


def choose_block_size(num_gallery: int, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
                      num_queries: Optional[int] = None) -> int:
    """Number of query rows per block: the largest b with ``b * num_gallery * 4 <= budget``.

    At least 1 (a single row must be scored whatever the budget), at most ``num_queries``.
    """
    b = int(memory_budget_bytes) // (_BYTES_PER_SCORE * max(1, int(num_gallery)))
    b = max(1, b)
    if num_queries is not None:
        b = min(b, max(1, int(num_queries)))
    return b


_PAD_SCORE = -1e30  # score of the padding gallery rows: below any real item's score


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([], tf.int32),
    ]
)
def _topk_direct(queries_aug, gallery_aug, k):
    """Indices ``[b, k]`` of the k best-scoring gallery rows, best first (lower index on ties)."""
    scores = tf.matmul(queries_aug, gallery_aug, transpose_b=True)  # [b, N] = 2q.g - |g|^2
    return tf.math.top_k(scores, k=k, sorted=True).indices


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32),
    ]
)
def _topk_chunked(queries_aug, gallery_aug, k, chunk):
    """Same result as ``_topk_direct``, with the selection done in two cheap stages.

    ``tf.math.top_k`` over a long row costs several times the matmul that produced it, so: split
    each row into chunks of ``chunk`` scores (the gallery is padded to a multiple), take each
    chunk's max (one streaming pass), keep the k chunks with the largest maxima and run the exact
    top-k over their ``k * chunk`` scores only. Exact: the k best scores lie in those k chunks
    (any chunk holding one of them has a max at least the k-th best, and fewer than k chunks beat
    it). Ties stay "lower index first": ``top_k`` prefers lower chunk indices among equal maxima,
    and the kept chunks are laid out in index order before the final ``top_k``.
    """
    scores = tf.matmul(queries_aug, gallery_aug, transpose_b=True)  # [b, N_padded]
    b = tf.shape(scores)[0]
    chunks = tf.reshape(scores, [b, -1, chunk])  # [b, N_padded / chunk, chunk], no copy
    best_chunks = tf.math.top_k(tf.reduce_max(chunks, axis=2), k=k, sorted=False).indices
    best_chunks = tf.sort(best_chunks, axis=1)  # index order, for the tie rule
    candidates = tf.reshape(tf.gather(chunks, best_chunks, batch_dims=1), [b, -1])  # [b, k*chunk]
    pos = tf.math.top_k(candidates, k=k, sorted=True).indices
    return tf.gather(best_chunks, pos // chunk, batch_dims=1) * chunk + pos % chunk


def _chunk_size(num_gallery: int, k: int) -> int:
    """Chunk length for ``_topk_chunked``, or 0 when the gallery is too short for chunking to pay.

    About sqrt(N / k), which balances the two selections (N/chunk chunk maxima, k*chunk
    candidates), rounded to a multiple of 16 floats so the chunk maxima vectorise and the padded
    score rows stay aligned.
    """
    chunk = 16 * max(1, int(round(math.sqrt(num_gallery / max(k, 1)) / 16.0)))
    chunk = min(chunk, 1024)
    return chunk if num_gallery >= 16 * k * chunk else 0


def _rank_block(queries_aug, gallery_aug, k: int, chunk: int) -> np.ndarray:
    """Indices ``[b, k]`` (numpy) of the k nearest gallery rows of every query row of the block."""
    q = tf.constant(queries_aug)
    if chunk:
        return _topk_chunked(q, gallery_aug, tf.constant(k, tf.int32),
                             tf.constant(chunk, tf.int32)).numpy()
    return _topk_direct(q, gallery_aug, tf.constant(k, tf.int32)).numpy()


def _as_array(x, name, ndim):
    if x is None:
        raise ValueError(f"`{name}` is required")
    a = np.asarray(x)
    if ndim == 1:
        a = a.reshape(-1)
    elif a.ndim != 2:
        raise ValueError(f"`{name}` must be [N, dim], got shape {a.shape}")
    return a


def _count_matches(query_keys: np.ndarray, gallery_keys: np.ndarray) -> np.ndarray:
    """For every query key, how many gallery keys equal it (keys are 1-D values or 2-D rows)."""
    keys = np.concatenate([query_keys, gallery_keys], axis=0)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    nq = len(query_keys)
    counts = np.bincount(inverse[nq:], minlength=inverse.max() + 1 if len(inverse) else 0)
    return counts[inverse[:nq]]


class _Problem:
    """Validated queries + gallery + exclusion ids, ready to be searched in blocks."""

    def __init__(self, embeddings, labels, gallery_embeddings, gallery_labels, query_ids,
                 gallery_ids, block_size, memory_budget_bytes):
        q = _as_array(embeddings, "embeddings", 2).astype(np.float32, copy=False)
        ql = _as_array(labels, "labels", 1)
        if len(ql) != len(q):
            raise ValueError(f"{len(q)} embeddings but {len(ql)} labels")
        if len(q) == 0:
            raise ValueError("no query embeddings")
        if (gallery_embeddings is None) != (gallery_labels is None):
            raise ValueError("pass both `gallery_embeddings` and `gallery_labels`, or neither")
        if gallery_embeddings is None:
            g, gl = q, ql
            if query_ids is None and gallery_ids is None:
                query_ids = gallery_ids = np.arange(len(q))
            elif gallery_ids is None:
                gallery_ids = query_ids
            elif query_ids is None:
                query_ids = gallery_ids
            # The query's own id is its own: ids given or not, it is excluded from its ranking.
        else:
            g = _as_array(gallery_embeddings, "gallery_embeddings", 2)
            g = g.astype(np.float32, copy=False)
            gl = _as_array(gallery_labels, "gallery_labels", 1)
            if len(gl) != len(g):
                raise ValueError(f"{len(g)} gallery embeddings but {len(gl)} gallery labels")
            if len(g) == 0:
                raise ValueError("empty gallery")
            if (query_ids is None) != (gallery_ids is None):
                raise ValueError("pass both `query_ids` and `gallery_ids`, or neither")
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
        if query_ids is not None:
            query_ids = _as_array(query_ids, "query_ids", 1)
            gallery_ids = _as_array(gallery_ids, "gallery_ids", 1)
            if len(query_ids) != len(q) or len(gallery_ids) != len(g):
                raise ValueError("`query_ids`/`gallery_ids` need one id per query/gallery item")
        self.q, self.ql, self.g, self.gl = q, ql, g, gl
        self.qid, self.gid = query_ids, gallery_ids
        if self.qid is None:
            self.num_excluded = np.zeros(len(q), np.int64)
        else:
            self.num_excluded = _count_matches(self.qid, self.gid)
        if block_size is not None and int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.requested_block_size = block_size
        self.memory_budget_bytes = memory_budget_bytes

    def excluded_mask(self, start, stop, idx):
        """``[b, k]`` True where the ranked gallery item must be ignored for its query."""
        if self.qid is None:
            return np.zeros(idx.shape, bool)
        return self.gid[idx] == self.qid[start:stop, None]

    def ranked_blocks(self, k):
        """Yields ``(start, stop, idx [b, k'], valid [b, k'])``: the k nearest non-excluded items.

        ``k' = min(k + max excluded, num_gallery)``; ``valid`` marks non-excluded entries, of
        which each row holds at least ``min(k, num_gallery - excluded)``, nearest first.
        """
        nq, ng = len(self.q), len(self.g)
        kk = int(min(k + int(self.num_excluded.max(initial=0)), ng))
        chunk = _chunk_size(ng, kk)
        padded = -(-ng // chunk) * chunk if chunk else ng
        block_size = self.requested_block_size
        if block_size is None:
            block_size = choose_block_size(padded, self.memory_budget_bytes, nq)
        block_size = int(block_size)
        mean = self.g.mean(axis=0, dtype=np.float64).astype(np.float32)
        g_aug = np.zeros((padded, self.g.shape[1] + 1), np.float32)
        gc = np.subtract(self.g, mean, out=g_aug[:ng, :-1])
        g_aug[:ng, -1] = -np.einsum("ij,ij->i", gc, gc)
        g_aug[:ng, :-1] *= 2.0
        g_aug[ng:, -1] = _PAD_SCORE
        g_aug = tf.constant(g_aug)
        for start in range(0, nq, block_size):
            stop = min(start + block_size, nq)
            q_aug = np.ones((stop - start, self.q.shape[1] + 1), np.float32)
            np.subtract(self.q[start:stop], mean, out=q_aug[:, :-1])
            idx = _rank_block(q_aug, g_aug, kk, chunk)
            yield start, stop, idx, ~self.excluded_mask(start, stop, idx)


def _check_ks(ks) -> Tuple[int, ...]:
    ks = tuple(int(k) for k in (ks if isinstance(ks, (list, tuple)) else [ks]))
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def recall_at_k(embeddings, labels, ks: Sequence[int] = (1, 2, 4, 8), gallery_embeddings=None,
                gallery_labels=None, *, query_ids=None, gallery_ids=None,
                block_size: Optional[int] = None,
                memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> Dict[int, float]:
    """Recall@K: the fraction of queries with an item of their label among their k nearest.

    Args:
      embeddings: ``[N, D]`` query embeddings (numpy or tensor).
      labels: ``[N]`` query labels.
      ks: the k values.
      gallery_embeddings, gallery_labels: ``[M, D]`` / ``[M]``; when omitted, each query searches
        all the other queries (itself excluded by index; exact duplicates of it are neighbours).
      query_ids, gallery_ids: optional ``[N]`` / ``[M]`` ids; a gallery item with the same id as the
        query is not a candidate for it (fused-gallery evaluation, see ``fused_recall``).
      block_size: query rows per block; by default the largest that keeps the
        ``[block_size, M]`` float32 block within ``memory_budget_bytes`` (see
        ``choose_block_size``).
      memory_budget_bytes: budget for one score block (default 256 MiB).

    Returns:
      ``{k: recall}`` with Python float fractions in ``[0, 1]``, keys in the order of ``ks``.
    """
    ks = _check_ks(ks)
    problem = _Problem(embeddings, labels, gallery_embeddings, gallery_labels, query_ids,
                       gallery_ids, block_size, memory_budget_bytes)
    hits = np.zeros(len(ks), np.int64)
    for start, stop, idx, valid in problem.ranked_blocks(max(ks)):
        good = valid & (problem.gl[idx] == problem.ql[start:stop, None])
        rank = np.cumsum(valid, axis=1)  # 1-based rank among non-excluded items
        first = np.where(good, rank, np.iinfo(np.int64).max).min(axis=1)
        hits += np.array([(first <= k).sum() for k in ks])
    n = len(problem.q)
    return {k: float(h) / n for k, h in zip(ks, hits)}


def map_at_r(embeddings, labels, gallery_embeddings=None, gallery_labels=None, query_ids=None,
             gallery_ids=None, *, block_size: Optional[int] = None,
             memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> float:
    """MAP@R (Musgrave et al., *A Metric Learning Reality Check*, 2020).

    For a query, R is the number of gallery items of its label (excluded items not counted) and
    ``AP@R = (1/R) Σ_{i=1..R} P(i)·rel(i)``, with P(i) the precision of the first i results.
    Returns the mean of AP@R over queries with R >= 1 (a Python float), or NaN when none has.
    Arguments as for ``recall_at_k``; the blocks keep the ``max R`` nearest items per query.
    """
    problem = _Problem(embeddings, labels, gallery_embeddings, gallery_labels, query_ids,
                       gallery_ids, block_size, memory_budget_bytes)
    relevant = _count_matches(problem.ql, problem.gl)
    if problem.qid is not None:
        # Excluded gallery items of the query's own label (the query itself, without a gallery)
        # are not results, so they are not relevant results either.
        relevant = relevant - _count_matches(np.stack([problem.qid, problem.ql], 1),
                                             np.stack([problem.gid, problem.gl], 1))
    if relevant.max(initial=0) == 0:
        return float("nan")
    total, count = 0.0, 0
    for start, stop, idx, valid in problem.ranked_blocks(int(relevant.max())):
        r = relevant[start:stop]
        rank = np.cumsum(valid, axis=1)
        rel = valid & (problem.gl[idx] == problem.ql[start:stop, None]) & (rank <= r[:, None])
        precision = np.cumsum(rel, axis=1) / np.maximum(rank, 1)
        ap = np.where(rel, precision, 0.0).sum(axis=1)
        keep = r > 0
        total += float((ap[keep] / r[keep]).sum())
        count += int(keep.sum())
    return total / count


def fused_recall(domains: Mapping[str, tuple], ks: Sequence[int] = (1, 2, 4, 8), *,
                 block_size: Optional[int] = None,
                 memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
                 ) -> Dict[str, Dict[int, float]]:
    """Recall@K of every domain's queries against the fused gallery (paper 000 §5.2).

    Args:
      domains: ``{name: (query_emb, query_labels, gallery_emb, gallery_labels)}``; a domain whose
        test set is both its queries and its gallery (CUB, CARS, SOP) passes ``None`` for the
        gallery (or a 2-tuple); an In-shop-like domain passes its gallery split. Labels must
        already be unique across domains (offset per domain); a label shared by two domains
        raises ValueError, because it would count a cross-domain match as a hit.
      ks, block_size, memory_budget_bytes: as for ``recall_at_k``.

    The fused gallery is the concatenation, in the order of ``domains``, of every domain's gallery
    part (its test set, or its gallery split). Each domain's queries are ranked against all of it,
    the query itself excluded (by id), so for CUB-like domains this equals ``recall_at_k`` on the
    domain alone plus the other domains' images as distractors.

    Returns:
      ``{name: {k: recall}}``.
    """
    ks = _check_ks(ks)
    parts = []  # (name, query_emb, query_labels, gallery_emb, gallery_labels, queries_in_gallery)
    for name, entry in domains.items():
        entry = tuple(entry)
        if len(entry) == 2:
            entry = entry + (None, None)
        if len(entry) != 4:
            raise ValueError(f"domain {name!r}: expected (query_emb, query_labels[, gallery_emb, "
                             f"gallery_labels]), got {len(entry)} items")
        q, ql, g, gl = entry
        q = _as_array(q, f"{name} query embeddings", 2).astype(np.float32, copy=False)
        ql = _as_array(ql, f"{name} query labels", 1)
        if g is None:
            if gl is not None:
                raise ValueError(f"domain {name!r}: gallery labels without gallery embeddings")
            parts.append((name, q, ql, q, ql, True))
        else:
            if gl is None:
                raise ValueError(f"domain {name!r}: gallery embeddings without gallery labels")
            g = _as_array(g, f"{name} gallery embeddings", 2).astype(np.float32, copy=False)
            gl = _as_array(gl, f"{name} gallery labels", 1)
            parts.append((name, q, ql, g, gl, False))
    if not parts:
        return {}
    label_sets = {p[0]: set(np.unique(np.concatenate([p[2], p[4]])).tolist()) for p in parts}
    names = list(label_sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = label_sets[a] & label_sets[b]
            if shared:
                raise ValueError(
                    f"domains {a!r} and {b!r} share labels (e.g. {sorted(shared)[:3]}); offset "
                    "labels per domain before fused evaluation")
    fused_g = np.concatenate([p[3] for p in parts], axis=0)
    fused_gl = np.concatenate([p[4] for p in parts], axis=0)
    fused_ids = np.arange(len(fused_g))
    out, offset = {}, 0
    for name, q, ql, g, _, queries_in_gallery in parts:
        # Queries that are themselves gallery items carry their gallery position as id; others
        # (a separate query split) get -1, which no gallery item has.
        qid = offset + np.arange(len(q)) if queries_in_gallery else np.full(len(q), -1)
        out[name] = recall_at_k(q, ql, ks, fused_g, fused_gl, query_ids=qid, gallery_ids=fused_ids,
                                block_size=block_size, memory_budget_bytes=memory_budget_bytes)
        offset += len(g)
    return out
