"""Fused-data baselines of paper 000 Table 2: Triplet (naive), Triplet+DS, Triplet+BAL.

One ResNet50 embedder trained with triplet semi-hard on the union of CUB-200-2011, CARS196 and
In-shop training images (labels offset per domain): naive batches mix classes of all domains;
DS batches hold one domain, drawn ∝ its size; BAL draws the domains with equal probability.
Recall@1 per domain is logged every epoch (Fig. 2(a/b): the small domains peak early).

Command:
  tfembed-train --recipe baseline_triplet_fused --set data_dir=/path/to/datasets
Expected result (000 Table 2, fused gallery, R@1 CUB/CARS/In-shop): Triplet 48.5/57.3/82.8,
Triplet+DS 54.8/66.1/76.4, Triplet+BAL 57.3/67.2/71.6.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

SMOKE = dict(PAPER_UNIVERSAL_SMOKE)


def get_config():
    c = paper_universal(["cub", "cars", "inshop"])
    c.universal.methods = ["triplet_naive", "triplet_ds", "triplet_bal"]
    c.universal.export = []
    # The fused baselines do not need specialists; evaluate them next to given ones if any.
    c.universal.diagnostics = True
    return c
