"""Baseline "3-way Concat." of paper 000 (Tables 2-4): concatenate the specialists, PCA to 128-d.

Every image goes through the three specialists (CUB, CARS196, In-shop); the 384-d concatenation is
projected on the top 128 principal components (fitted on up to universal.pca_max_images training
images per domain) and L2-normalised. Costs three forward passes per image.

Command:
  tfembed-train --recipe baseline_concat_pca --set data_dir=/path/to/datasets --set teachers=...
Expected result (000 Table 2, fused gallery, R@1): CUB 47.3, CARS196 64.2, In-shop 69.6.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

SMOKE = dict(PAPER_UNIVERSAL_SMOKE)


def get_config():
    c = paper_universal(["cub", "cars", "inshop"])
    c.universal.methods = ["concat_pca"]
    c.universal.export = []
    return c
