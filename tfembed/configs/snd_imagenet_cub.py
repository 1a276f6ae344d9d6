"""Unify ImageNet with CUB-200-2011 (paper 000 §5.3, Table 5, Combination 3).

Batches: one domain each, ∝ training images with CUB ×10; triplet semi-hard on ImageNet batches,
SND from the CUB specialist on CUB batches. Rows: both specialists, 2-way concat, Triplet
(weighted sampling), Ours_RKD, Ours_SND; evaluation not fused (the domains share categories).
ImageNet: ILSVRC2012 on disk (train/<wnid>/, val/ with labels) or tfds imagenet2012.

Command:
  tfembed-train --recipe snd_imagenet_cub --set data_dir=/path/to/datasets
Expected result (000 Table 5, R@1/R@2/R@4/R@8): ImageNet 64.6/73.4/79.8/84.3,
CUB 59.8/71.5/81.5/88.6.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE
from tfembed.configs._imagenet import imagenet_plus

SMOKE = dict(PAPER_UNIVERSAL_SMOKE)


def get_config():
    return imagenet_plus("cub")
