"""All of paper 000's Table 2 in one run: CUB-200-2011 + CARS196 + In-shop.

Rows: the three triplet specialists, 3-way concatenation + PCA, fused Triplet (naive), Triplet+DS,
Triplet+BAL, Ours_RKD, Ours_SND; each on its own domain and on the fused gallery (all three
test sets; In-shop keeps its query set), plus the diagnostics of Fig. 2, 4 and 5.
Settings as snd_universal. The fused baselines get the same step budget as the distillation.

Command:
  tfembed-train --recipe universal_table2 --set data_dir=/path/to/datasets
Expected result (000 Table 2, fused gallery, average R@1 over the three domains): specialists
on their own domain 59.8/70.0/84.1, concat 60.4, Triplet 62.9, Triplet+DS 65.8, Triplet+BAL
65.4, Ours_RKD 73.2, Ours_SND 71.9.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

# The export is exercised by snd_universal's smoke run; here it would only add minutes.
SMOKE = dict(PAPER_UNIVERSAL_SMOKE, **{"universal.export": []})


def get_config():
    return paper_universal(["cub", "cars", "inshop"])
