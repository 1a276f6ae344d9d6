"""Clustering quality of an embedding: NMI and the pairwise F1 of deep metric learning papers.

Both cluster the embeddings with k-means (k = number of classes unless given) and compare the
clusters with the classes:

- NMI: ``sklearn.metrics.normalized_mutual_info_score`` (arithmetic mean normalisation).
- F1 (Oh Song et al. 2016, *Deep Metric Learning via Lifted Structured Feature Embedding*): over
  unordered pairs of items, a pair is *predicted positive* when both items fall in the same cluster
  and *actually positive* when both share a class; precision = TP / predicted positives, recall =
  TP / actual positives, F1 their harmonic mean. All three counts are sums of ``n choose 2`` over
  the cells, rows and columns of the cluster × class contingency table, so no N × N matrix is built.
"""

from typing import Dict, Optional

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

KMEANS_N_INIT = 10


def _pairs(counts) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    return float(np.sum(counts * (counts - 1.0) / 2.0))


def pairwise_f1(labels, cluster_ids) -> Dict[str, float]:
    """Pairwise precision, recall and F1 of a clustering against the classes.

    Returns ``{"precision", "recall", "f1"}`` as Python floats; a clustering or labelling with no
    same-group pair at all has precision (or recall) 0.
    """
    labels = np.asarray(labels).reshape(-1)
    cluster_ids = np.asarray(cluster_ids).reshape(-1)
    if len(labels) != len(cluster_ids):
        raise ValueError(f"{len(labels)} labels but {len(cluster_ids)} cluster ids")
    table = contingency_matrix(labels, cluster_ids, sparse=True)  # [classes, clusters]
    tp = _pairs(table.data)
    same_cluster = _pairs(np.asarray(table.sum(axis=0)).ravel())
    same_class = _pairs(np.asarray(table.sum(axis=1)).ravel())
    precision = tp / same_cluster if same_cluster else 0.0
    recall = tp / same_class if same_class else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def nmi_f1(embeddings, labels, num_clusters: Optional[int] = None, seed: int = 0
           ) -> Dict[str, float]:
    """k-means NMI and pairwise F1 of ``embeddings`` against ``labels``.

    Args:
      embeddings: ``[N, D]`` (numpy or tensor).
      labels: ``[N]`` class ids.
      num_clusters: k for k-means; default the number of distinct labels.
      seed: k-means ``random_state`` (``n_init`` is fixed at ``KMEANS_N_INIT``), so the result is
        reproducible.

    Returns:
      ``{"nmi": float, "f1": float}``.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"embeddings {x.shape} do not match {len(labels)} labels")
    k = int(num_clusters) if num_clusters is not None else len(np.unique(labels))
    if not 1 <= k <= len(x):
        raise ValueError(f"num_clusters must be in [1, {len(x)}], got {k}")
    clusters = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed).fit_predict(x)
    nmi = float(normalized_mutual_info_score(labels, clusters))
    return {"nmi": nmi, "f1": pairwise_f1(labels, clusters)["f1"]}
