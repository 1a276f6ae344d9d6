"""Evaluation of embeddings: retrieval (Recall@K, fused gallery, MAP@R), clustering, reports."""

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
