"""Paper 002: attention-based ensembles (ABE-M) and the M-heads baseline.

``attention``: the models (:class:`AttentionEnsemble`, :class:`MultiHeadEnsemble`, their
builders); ``runner``: pipeline ``ensemble``; ``diagnostics``: 002's similarity histograms and
attention masks.
"""

from tfembed.ensemble.attention import (
    AttentionEnsemble,
    MultiHeadEnsemble,
    build_attention_ensemble,
    build_multihead_ensemble,
)
