"""Paper 003: diversified mutual learning (DM²), a cohort of embedders trained together.

``mutual_learning``: :class:`MutualLearningCohort` (relation transfer, temporal and view
diversity); ``runner``: pipeline ``cohort`` (cohorts, their ensembles, DM² → RKD students);
``config``: the ``cohort`` block and its method entries (:class:`~tfembed.cohort.config.CohortMethod`).
"""

from tfembed.cohort import config  # noqa: F401  (its config block and method entries)
from tfembed.cohort.mutual_learning import MutualLearningCohort, temporal_probabilities
