"""002 Table 7: ABE-8 (512-d) on In-shop Clothes (query vs gallery).

Paper settings: see ``tfembed.configs._ensemble.paper_002`` (Inception v3 in place of GoogLeNet,
S / C / G split as in 002 Fig. 3, SGD momentum 0.9, batch 64 in pairs, contrastive + divergence).

Command:
  tfembed-train --recipe abe8_inshop --set data_dir=/path/to/datasets
Expected result (002, GoogLeNet; Inception v3 is a larger network, so expect the same ordering
rather than the same figures): 87.3 / 96.7 / 97.9 / 98.2 / 98.5 / 98.7 (R@1/10/20/30/40/50).
Smoke run (tiny images, 2 steps, a small CNN):
  tfembed-train --recipe abe8_inshop --set smoke=true --set data_dir=...
"""

from tfembed.configs._ensemble import PAPER_ENSEMBLE_SMOKE, paper_002

SMOKE = dict(PAPER_ENSEMBLE_SMOKE)


def get_config():
    return paper_002('inshop', ['abe8'])
