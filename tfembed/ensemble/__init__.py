"""Paper 002: attention-based ensembles (ABE-M) and the M-heads baseline.

``attention``: the models (:class:`AttentionEnsemble`, :class:`MultiHeadEnsemble`, their
builders); ``runner``: pipeline ``ensemble``; ``diagnostics``: 002's similarity histograms and
attention masks; ``config``: the ``ensemble`` block and its method entries
(:class:`~tfembed.ensemble.config.EnsembleMethod`).
"""

from tfembed.ensemble import config  # noqa: F401  (its config block and method entries)
from tfembed.ensemble.attention import (
    AttentionEnsemble,
    MultiHeadEnsemble,
    build_attention_ensemble,
    build_multihead_ensemble,
)
