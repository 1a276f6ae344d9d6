"""UnED's k-NN evaluation (Ypsilantis et al., *Towards Universal Image Embeddings*, ICCV 2023).

``uned_knn_metrics`` computes the benchmark's three numbers for one query split against one index:
Recall@1, mMP@5 (mean modified precision at 5) and mAP@5, with the semantics of the authors'
reference evaluation (nikosips/Universal-Image-Embeddings, ``knn_utils.py``), quirks included;
``uned_evaluate`` runs it over domains in the benchmark's two modes, "separate" (each domain's
queries against its own index) and "merged" (every domain's queries against the concatenation of
all the domains' indexes, the headline).

The reference, and therefore this code:

* ranks index items by the dot product of the embeddings as given (the models L2-normalise, so
  this is cosine similarity), ties broken by the lower index position (``jax.lax.top_k``'s rule,
  which ``tf.math.top_k`` shares);
* retrieves ``top_k`` neighbours, ``top_k + 1`` when ``throw_first`` (the query split *is* the
  index split), and then drops the first neighbour as the query itself, whatever it is: an exact
  duplicate ranked above the query is dropped in its place;
* counts a neighbour as correct when it is in the query's domain and shares a label with it
  (multi-label query or neighbour: any label in common) — in merged mode two domains' class 3
  are different classes;
* n_q is the number of index items of the query's domain that carry the query's label, summed
  over the query's labels, minus one when ``throw_first``;
* mMP@5: correct neighbours among the first ``min(top_k(+1), n_q(+1))`` positions, minus one when
  ``throw_first`` (the query itself, assumed correct: the reference subtracts it unconditionally,
  so a query ranked below a duplicate from another class can score −1/min(n_q, 5)), divided by
  ``min(n_q, top_k)``;
* mAP@5: over the ``top_k`` kept positions, the precision at each correct rank, summed, divided
  by ``min(n_q, top_k)``;
* each metric is a mean over queries. A query with n_q = 0 (no other index item of its label: the
  reference divides by zero there) is left out of every metric and counted in
  ``skipped_queries``.

Memory: queries are ranked in blocks of rows against the whole index with the two-stage top-k of
``tfembed.evaluation.retrieval`` (chunk maxima, then an exact top-k over the best chunks); one
``[block, num_index]`` float32 score block exists at a time, sized by ``memory_budget_bytes``,
so UnED's 241k queries × 1.4M index items never form a matrix.
"""

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfembed.data.uned import UNED_DOMAINS, UNED_EVAL_PAIRS
from tfembed.evaluation.retrieval import (
    _PAD_SCORE,
    DEFAULT_MEMORY_BUDGET_BYTES,
    _chunk_size,
    _rank_block,
    choose_block_size,
)

_NO_LABEL = -1
_DOMAIN_SHIFT = 40  # key = domain << 40 | label: one int64 per (domain, label)


def label_matrix(labels) -> np.ndarray:
    """Labels (ints, or lists of ints for multi-label items) → ``[n, L]`` int64, −1 padded."""
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        arr = labels.astype(np.int64, copy=False)
        arr = arr.reshape(len(arr), -1)
    else:
        rows = [np.atleast_1d(np.asarray(x, dtype=np.int64)).reshape(-1) for x in labels]
        width = max((len(r) for r in rows), default=1)
        arr = np.full((len(rows), max(width, 1)), _NO_LABEL, np.int64)
        for i, r in enumerate(rows):
            arr[i, :len(r)] = r
    if len(arr) and (arr.min() < _NO_LABEL or (arr[:, 0] < 0).any()):
        raise ValueError("UnED labels must be non-negative ints (or non-empty lists of them)")
    if len(arr) and arr.max() >= 1 << _DOMAIN_SHIFT:
        raise ValueError(f"label {arr.max()} is too large (limit 2^{_DOMAIN_SHIFT})")
    return arr


def _label_counts(domains: np.ndarray, labels: np.ndarray):
    """Sorted unique ``(domain, label)`` keys of the index and how many items carry each (an item
    listing a label twice counts once)."""
    n, width = labels.shape
    keys = (domains[:, None].astype(np.int64) << _DOMAIN_SHIFT) | labels
    item = np.repeat(np.arange(n), width)
    keys, item = keys.reshape(-1), item
    valid = labels.reshape(-1) >= 0
    pairs = np.unique(np.stack([keys[valid], item[valid]], 1), axis=0) if valid.any() else \
        np.zeros((0, 2), np.int64)
    return np.unique(pairs[:, 0], return_counts=True)


def _num_relevant(q_domains, q_labels, index_keys, index_counts) -> np.ndarray:
    """Per query: the index items of its domain carrying its label, summed over its labels."""
    keys = (q_domains[:, None].astype(np.int64) << _DOMAIN_SHIFT) | q_labels
    pos = np.searchsorted(index_keys, keys)
    pos = np.minimum(pos, max(len(index_keys) - 1, 0))
    found = (len(index_keys) > 0) & (q_labels >= 0)
    if len(index_keys):
        found &= index_keys[pos] == keys
    counts = np.where(found, index_counts[pos] if len(index_keys) else 0, 0)
    return counts.sum(axis=1)


def uned_knn_metrics(query_emb, query_labels, query_domains, index_emb, index_labels,
                     index_domains, throw_first: bool, top_k: int = 5, *,
                     block_size: Optional[int] = None,
                     memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> Dict[str, float]:
    """UnED's Recall@1, mMP@k and mAP@k of the queries against the index (see the module doc).

    Args:
      query_emb, index_emb: ``[Q, D]`` / ``[N, D]`` embeddings; similarity is their dot product.
      query_labels, index_labels: one int per item, or a list of ints (multi-label).
      query_domains, index_domains: ``[Q]`` / ``[N]`` domain ids.
      throw_first: the query split is the index split (each query is in the index): retrieve one
        more neighbour and drop the first.
      top_k: the k of mMP@k and mAP@k (UnED: 5).
      block_size, memory_budget_bytes: query rows per score block, by default the largest whose
        ``[block, N]`` float32 block fits the budget (256 MiB).

    Returns:
      ``{"recall@1", "mmp@<k>", "map@<k>"}`` as fractions, plus ``"num_queries"`` (those
      averaged) and ``"skipped_queries"`` (n_q = 0).
    """
    index = _Index(index_emb, index_labels, index_domains, top_k)
    return index.metrics(query_emb, query_labels, query_domains, throw_first, block_size,
                         memory_budget_bytes)


class _Index:
    """An index ready to be searched: its score matrix (once, however many query sets search
    it: the merged evaluation's eight domains) and its label counts per domain."""

    def __init__(self, index_emb, index_labels, index_domains, top_k):
        g = np.asarray(index_emb, np.float32)
        if g.ndim != 2:
            raise ValueError(f"index embeddings must be [N, D], got {g.shape}")
        self.labels, self.domains = label_matrix(index_labels), \
            np.asarray(index_domains, np.int64).reshape(-1)
        if not len(g) == len(self.labels) == len(self.domains):
            raise ValueError(f"{len(g)} index items with {len(self.labels)} labels and "
                             f"{len(self.domains)} domains")
        if len(g) == 0:
            raise ValueError("empty index")
        self.top_k = int(top_k)
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.size, self.dim = g.shape
        self.keys, self.counts = _label_counts(self.domains, self.labels)
        # The chunked top-k is exact for any k up to its number of chunks: one chunk size (for
        # the larger k, top_k + 1) serves queries with and without throw_first.
        self.chunk = _chunk_size(self.size, min(self.top_k + 1, self.size))
        padded = -(-self.size // self.chunk) * self.chunk if self.chunk else self.size
        # Scores are the plain dot product: an extra column, 0 for real items and _PAD_SCORE
        # for the padding rows of the chunked top-k, against a query column of ones.
        g_aug = np.zeros((padded, self.dim + 1), np.float32)
        g_aug[:self.size, :-1] = g
        g_aug[self.size:, -1] = _PAD_SCORE
        self.scores = tf.constant(g_aug)

    def metrics(self, query_emb, query_labels, query_domains, throw_first, block_size=None,
                memory_budget_bytes=DEFAULT_MEMORY_BUDGET_BYTES):
        q = np.asarray(query_emb, np.float32)
        ql = label_matrix(query_labels)
        qd = np.asarray(query_domains, np.int64).reshape(-1)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query embeddings must be [Q, {self.dim}], got {q.shape}")
        if not len(q) == len(ql) == len(qd):
            raise ValueError(f"{len(q)} queries with {len(ql)} labels and {len(qd)} domains")
        top_k, gl, gd = self.top_k, self.labels, self.domains
        offset = 1 if throw_first else 0
        retrieved = top_k + offset
        in_index = _num_relevant(qd, ql, self.keys, self.counts)  # the reference's num_index_label
        n_q = in_index - offset
        kept = n_q > 0
        denominator = np.minimum(n_q, top_k)
        k_search = min(retrieved, self.size)
        if block_size is None:
            block_size = choose_block_size(int(self.scores.shape[0]), memory_budget_bytes, len(q))
        block_size = max(1, int(block_size))
        g_aug, chunk = self.scores, self.chunk

        sums = np.zeros(3)
        for start in range(0, len(q), block_size):
            stop = min(start + block_size, len(q))
            q_aug = np.ones((stop - start, q.shape[1] + 1), np.float32)
            q_aug[:, :-1] = q[start:stop]
            idx = _rank_block(q_aug, g_aug, k_search, chunk)                  # [b, k_search]
            qlb = ql[start:stop]
            shared = (qlb[:, None, :, None] == gl[idx][:, :, None, :]) & (qlb[:, None, :, None] >= 0)
            correct = shared.any(axis=(2, 3)) & (gd[idx] == qd[start:stop, None])
            if k_search < retrieved:  # an index smaller than k(+1): the missing ranks are misses
                correct = np.pad(correct, ((0, 0), (0, retrieved - k_search)))
            # mMP: the first min(k(+1), n_q(+1)) positions, minus the query itself.
            limit = np.minimum(retrieved, in_index[start:stop])
            first = np.arange(retrieved)[None, :] < limit[:, None]
            mp_hits = (correct & first).sum(axis=1) - offset
            rel = correct[:, offset:]
            precision = np.cumsum(rel, axis=1) / np.arange(1, top_k + 1)
            ap = (precision * rel).sum(axis=1)
            keep = kept[start:stop]
            den = np.maximum(denominator[start:stop], 1)
            sums += [rel[keep, 0].sum(), (mp_hits / den)[keep].sum(), (ap / den)[keep].sum()]
        n = int(kept.sum())
        means = sums / n if n else np.full(3, np.nan)
        return {"recall@1": float(means[0]), f"mmp@{top_k}": float(means[1]),
                f"map@{top_k}": float(means[2]), "num_queries": n,
                "skipped_queries": int(len(q) - n)}


def uned_evaluate(embedded: Mapping[str, Mapping[str, tuple]], *, evaluation: str = "test",
                  modes: Sequence[str] = ("separate", "merged"), top_k: int = 5,
                  memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
                  ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """UnED's separate and merged evaluation over any subset of its domains.

    Args:
      embedded: ``{domain: {split: (embeddings [n, D], labels)}}`` holding, for every domain, the
        query and index splits of ``evaluation`` (``UNED_EVAL_PAIRS``); labels are the domain's
        own class ids (ints or lists), domains keep them apart.
      evaluation: "test" or "val".
      modes: "separate" (each domain against its own index) and/or "merged" (every domain against
        the concatenation of all the given domains' indexes).

    Returns:
      ``{mode: {domain: metrics, ..., "average": mean of each metric over the domains}}``.
    """
    unknown = sorted(set(embedded) - set(UNED_DOMAINS))
    if unknown:
        raise ValueError(f"unknown UnED domain(s) {unknown}; domains are {list(UNED_DOMAINS)}")
    if evaluation not in ("test", "val"):
        raise ValueError(f"evaluation must be 'test' or 'val', got {evaluation!r}")
    bad = sorted(set(modes) - {"separate", "merged"})
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; modes are 'separate' and 'merged'")
    domains = [d for d in UNED_DOMAINS if d in embedded]
    parts = {}
    for d in domains:
        query_split, index_split = UNED_EVAL_PAIRS[d][evaluation]
        for split in (query_split, index_split):
            if split not in embedded[d]:
                raise ValueError(f"UnED {d} {evaluation} evaluation needs its {split!r} split "
                                 f"(query {query_split!r} → index {index_split!r})")
        domain_id = UNED_DOMAINS.index(d)
        qe, qlabels = embedded[d][query_split]
        ie, ilabels = embedded[d][index_split]
        parts[d] = (np.asarray(qe, np.float32), label_matrix(qlabels),
                    np.full(len(qe), domain_id), np.asarray(ie, np.float32),
                    label_matrix(ilabels), np.full(len(ie), domain_id),
                    query_split == index_split)
    out = {}
    if "separate" in modes:
        out["separate"] = {d: uned_knn_metrics(*p[:6], throw_first=p[6], top_k=top_k,
                                               memory_budget_bytes=memory_budget_bytes)
                           for d, p in parts.items()}
    if "merged" in modes and parts:
        width = max(p[4].shape[1] for p in parts.values())
        pad = lambda m: np.pad(m, ((0, 0), (0, width - m.shape[1])), constant_values=_NO_LABEL)  # noqa: E731
        # One index (scores and label counts built once) for the eight query sets.
        index = _Index(np.concatenate([p[3] for p in parts.values()]),
                       np.concatenate([pad(p[4]) for p in parts.values()]),
                       np.concatenate([p[5] for p in parts.values()]), top_k)
        out["merged"] = {d: index.metrics(p[0], p[1], p[2], p[6],
                                          memory_budget_bytes=memory_budget_bytes)
                         for d, p in parts.items()}
    for results in out.values():
        if results:
            metrics = [m for m in next(iter(results.values())) if "@" in m]
            results["average"] = {m: float(np.mean([r[m] for r in results.values()]))
                                  for m in metrics}
    return out


def uned_rows(model_name: str, results: Mapping[str, Mapping[str, Mapping[str, float]]]
              ) -> List[dict]:
    """``uned_evaluate``'s results → report rows (DESIGN §4): one per (mode, domain), gallery
    ``"uned_separate"`` / ``"uned_merged"``, with ``recall@1``, ``mmp@5``, ``map@5`` and the
    query counts. The per-domain average is not a row: ``format_table`` prints it for each model."""
    from tfembed.evaluation.report import recall_rows  # noqa: PLC0415

    rows = []
    for mode, per_domain in results.items():
        for domain, metrics in per_domain.items():
            if domain == "average":
                continue
            extra = {k: v for k, v in metrics.items() if k != "recall@1"}
            rows.append(recall_rows(model_name, domain, f"uned_{mode}",
                                    {1: metrics["recall@1"]}, **extra))
    return rows


def embed_uned(model, domains, *, evaluation: str = "test", spec=None, batch_size: int = 128
               ) -> Dict[str, Dict[str, tuple]]:
    """Embeds the query and index splits of ``evaluation`` of each UnED :class:`Domain` with
    ``model`` (its own ``ImageSpec`` unless ``spec``): ``uned_evaluate``'s input. Multi-label
    images keep all their labels (``Split.label_sets``)."""
    from tfembed.evaluation.protocol import embed_split  # noqa: PLC0415

    out = {}
    for domain in domains:
        if domain.name not in UNED_EVAL_PAIRS:
            raise ValueError(f"{domain.name!r} is not a UnED domain ({', '.join(UNED_DOMAINS)})")
        out[domain.name] = {}
        for split in dict.fromkeys(UNED_EVAL_PAIRS[domain.name][evaluation]):
            if split not in domain.splits:
                raise ValueError(f"UnED {domain.name}: the {evaluation} evaluation needs split "
                                 f"{split!r}; the domain holds {sorted(domain.splits)}")
            s = domain.splits[split]
            emb, _ = embed_split(model, s, spec=spec, batch_size=batch_size)
            out[domain.name][split] = (emb, s.labels if s.label_sets is None else
                                       [row[row >= 0].tolist() for row in s.label_sets])
    return out


def evaluate_uned(model, domains, *, evaluation: str = "test",
                  modes: Sequence[str] = ("separate", "merged"), name: str = "model", spec=None,
                  batch_size: int = 128) -> List[dict]:
    """UnED's evaluation of ``model`` on UnED :class:`Domain` objects (``tfembed.data.uned``):
    each split embedded once, then scored in ``modes``; report rows (``uned_rows``)."""
    embedded = embed_uned(model, domains, evaluation=evaluation, spec=spec, batch_size=batch_size)
    return uned_rows(name, uned_evaluate(embedded, evaluation=evaluation, modes=modes))


def format_uned_table(rows: Sequence[dict], top_k: int = 5) -> str:
    """UnED rows as UnED's tables print them: per mode, each model's domains then their average,
    R@1 / mMP@k / mAP@k in percent."""
    from tfembed.evaluation.report import _fmt  # noqa: PLC0415

    metrics = ["recall@1", f"mmp@{top_k}", f"map@{top_k}"]
    header = ["model", "domain", "gallery", "R@1", f"mMP@{top_k}", f"mAP@{top_k}"]
    body = []
    for gallery in ("uned_separate", "uned_merged"):
        by_model: Dict[str, List[dict]] = {}
        for r in rows:
            if r.get("gallery") == gallery:
                by_model.setdefault(r["model"], []).append(r)
        for model, members in by_model.items():
            for r in members:
                body.append([model, r["domain"], gallery]
                            + [_fmt(r.get(m), r.get(f"{m}_std")) for m in metrics])
            body.append([model, "average", gallery]
                        + [_fmt(float(np.mean([r[m] for r in members]))) for m in metrics])
    widths = [max(len(str(c[i])) for c in [header] + body) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "-" * len(line(header))] + [line(c) for c in body])
