"""Unify ImageNet with CARS196 (paper 000 §5.3, Table 5, Combination 4).

As snd_imagenet_cub with CARS196 as the fine-grained domain (×10 up-weighted).

Command:
  tfembed-train --recipe snd_imagenet_cars --set data_dir=/path/to/datasets
Expected result (000 Table 5, R@1/R@2/R@4/R@8): ImageNet 64.5/73.3/79.6/84.3,
CARS196 72.3/82.2/88.8/93.3.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE
from tfembed.configs._imagenet import imagenet_plus

SMOKE = dict(PAPER_UNIVERSAL_SMOKE)


def get_config():
    return imagenet_plus("cars")
