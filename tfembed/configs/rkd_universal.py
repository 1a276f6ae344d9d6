"""Universal embedding of CUB-200-2011 + CARS196 + In-shop by RKD (paper 000 §5.2, "Ours_RKD").

As snd_universal, with RKD-DA instead of SND: Huber losses on mean-normalised distances and on
angles, weights 1 : 2 (the RKD paper's distance : angle setting), on domain-specific batches.

Command:
  tfembed-train --recipe rkd_universal --set data_dir=/path/to/datasets --set teachers=...
Expected result (000 Table 2, fused gallery, R@1/R@2/R@4): CUB 61.0/72.1/82.0,
CARS196 73.3/82.2/88.7, In-shop 85.2/90.2/93.4.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

SMOKE = dict(PAPER_UNIVERSAL_SMOKE)


def get_config():
    c = paper_universal(["cub", "cars", "inshop"])
    c.universal.methods = ["rkd"]
    c.universal.export = ["rkd"]
    return c
