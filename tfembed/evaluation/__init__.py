"""Evaluation of embeddings: retrieval (Recall@K, fused gallery, MAP@R), clustering, reports.

``evaluate(model, domains)`` is the one entry point from a model to report rows; the metrics below
take embeddings (numpy) and run without TensorFlow.
"""

from tfembed.evaluation.clustering import nmi_f1, pairwise_f1
from tfembed.evaluation.report import (
    format_paper_table,
    format_table,
    read_report,
    recall_rows,
    write_report,
)
from tfembed.evaluation.retrieval import fused_recall, map_at_r, recall_at_k

__all__ = [
    "evaluate",
    "recall_at_k",
    "fused_recall",
    "map_at_r",
    "nmi_f1",
    "pairwise_f1",
    "format_paper_table",
    "format_table",
    "write_report",
    "read_report",
    "recall_rows",
]


def __getattr__(name):
    # evaluate embeds images (TensorFlow); the metrics above stay importable without it.
    if name == "evaluate":
        from tfembed.evaluation.protocol import evaluate  # noqa: PLC0415

        return evaluate
    raise AttributeError(f"module 'tfembed.evaluation' has no attribute {name!r}")
