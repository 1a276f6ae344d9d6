"""Paper 000's Table 4: the same unification with Multi-Similarity specialists and baselines.

Specialists trained with Multi-Similarity (α=2, β=50, λ=0.5, ε=0.1, Wang et al. 2019) instead of
triplet; rows: specialists, concat + PCA, Multi-Similarity fused (naive), +DS, +BAL, Ours_RKD,
Ours_SND (distilling the MS specialists). Other settings as snd_universal.

Command:
  tfembed-train --recipe universal_table4 --set data_dir=/path/to/datasets
Expected result (000 Table 4, fused gallery, average R@1): concat 64.8, MS 70.6, MS+DS 73.6,
MS+BAL 71.8, Ours_RKD 78.1, Ours_SND 76.4; MS specialists 63.0/80.1/85.4 on their domains.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

# The export is exercised by snd_universal's smoke run; here it would only add minutes.
SMOKE = dict(PAPER_UNIVERSAL_SMOKE, **{"universal.export": []})


def get_config():
    c = paper_universal(["cub", "cars", "inshop"])
    c.train.loss = "multi_similarity"
    c.train.loss_kwargs = {}
    c.universal.methods = ["concat_pca", "ms_naive", "ms_ds", "ms_bal", "rkd", "snd"]
    return c
