"""002 Table 1/4: ABE-8 (512-d) on CARS-196.

Paper settings: see ``tfembed.configs._ensemble.paper_002`` (Inception v3 in place of GoogLeNet,
S / C / G split as in 002 Fig. 3, SGD momentum 0.9, batch 64 in pairs, contrastive + divergence).

Command:
  tfembed-train --recipe abe8_cars --set data_dir=/path/to/datasets
Expected result (002, GoogLeNet; Inception v3 is a larger network, so expect the same ordering
rather than the same figures): 85.2 / 90.5 / 93.9 / 96.1 (ensemble R@1/2/4/8; learners 75.0 R@1).
Smoke run (tiny images, 2 steps, a small CNN):
  tfembed-train --recipe abe8_cars --set smoke=true --set data_dir=...
"""

from tfembed.configs._ensemble import PAPER_ENSEMBLE_SMOKE, paper_002

SMOKE = dict(PAPER_ENSEMBLE_SMOKE)


def get_config():
    return paper_002('cars', ['abe8'])
