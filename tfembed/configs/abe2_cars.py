"""002 Table 1: ABE-2 (512-d, 256 per learner) on CARS-196.

Paper settings: see ``tfembed.configs._ensemble.paper_002`` (Inception v3 in place of GoogLeNet,
S / C / G split as in 002 Fig. 3, SGD momentum 0.9, batch 64 in pairs, contrastive + divergence).

Command:
  tfembed-train --recipe abe2_cars --set data_dir=/path/to/datasets
Expected result (002, GoogLeNet; Inception v3 is a larger network, so expect the same ordering
rather than the same figures): 76.8 / 84.9 / 90.2 / 94.0 (ensemble R@1/2/4/8; learners 70.9 R@1).
Smoke run (tiny images, 2 steps, a small CNN):
  tfembed-train --recipe abe2_cars --set smoke=true --set data_dir=...
"""

from tfembed.configs._ensemble import PAPER_ENSEMBLE_SMOKE, paper_002

SMOKE = dict(PAPER_ENSEMBLE_SMOKE)


def get_config():
    return paper_002('cars', ['abe2'])
