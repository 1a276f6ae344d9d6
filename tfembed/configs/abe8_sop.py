"""002 Table 6: ABE-8 (512-d) on Stanford Online Products.

Paper settings: see ``tfembed.configs._ensemble.paper_002`` (Inception v3 in place of GoogLeNet,
S / C / G split as in 002 Fig. 3, SGD momentum 0.9, batch 64 in pairs, contrastive + divergence).

Command:
  tfembed-train --recipe abe8_sop --set data_dir=/path/to/datasets
Expected result (002, GoogLeNet; Inception v3 is a larger network, so expect the same ordering
rather than the same figures): 76.3 / 88.4 / 94.8 / 98.2 (R@1/10/100/1000).
Smoke run (tiny images, 2 steps, a small CNN):
  tfembed-train --recipe abe8_sop --set smoke=true --set data_dir=...
"""

from tfembed.configs._ensemble import PAPER_ENSEMBLE_SMOKE, paper_002

SMOKE = dict(PAPER_ENSEMBLE_SMOKE)


def get_config():
    return paper_002('sop', ['abe8'])
