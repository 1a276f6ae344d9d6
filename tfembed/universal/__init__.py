"""Paper 000: universal embeddings distilled from domain specialists.

``distiller``: :class:`UniversalDistiller` (the :class:`tfembed.distill.Distiller` with one teacher
per domain); ``runner``: pipelines ``universal`` and ``self_distill`` (specialists, baselines,
SND/RKD students, report.json, exports); ``figures``: the paper's diagnostics; ``config``: the
``universal`` block and its method entries (:class:`~tfembed.universal.config.UniversalMethod`).
"""

from tfembed.universal import config  # noqa: F401  (its config block and method entries)
from tfembed.universal.distiller import UniversalDistiller
