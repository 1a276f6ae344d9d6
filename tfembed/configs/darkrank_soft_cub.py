"""Soft DarkRank (004 Eq. 5, soft: exact KL over all permutations of each list) on CUB-200-2011.

ResNet-50 teacher → ResNet-18 student (the nearest Keras pair to 004's Inception-BN → NIN-BN),
every student trained with large-margin softmax, verification and triplet losses; the DarkRank
student adds the transfer with α = β = 3, λ = 2 (batches of 8: 7 candidates per query, all
5040 orderings enumerated). Settings and deviations in ``_distill.paper_004``.

Command:
  tfembed-train --recipe darkrank_soft_cub --set data_dir=/path/to/datasets
Expected result (004 Table 4, Inception-BN → NIN-BN): student F1 / NMI / R@1 0.153 / 0.461 /
  0.311, DarkRank 0.168 / 0.483 / 0.340, teacher 0.172 / 0.484 / 0.367.
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe darkrank_soft_cub --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_004

SMOKE = dict(PAPER_DISTILL_SMOKE)


def get_config():
    return paper_004(["ml", "ml+darkrank_soft"])
