"""Specialists (paper 000's teachers): one embedder per domain, triplet semi-hard.

Paper 000 §5 settings (``_base.paper_specialist``): ImageNet-pretrained ResNet50, 256×256
resize → random 224 crop + flip, 128-d L2-normalised embedding, batch 128 = 32 classes × 4
images, Adam lr 1e-5, triplet semi-hard loss (margin 0.2, FaceNet's value; 000 does not state
it). The universal recipes train or load these as their teachers.

Command (``<domain>`` one of the arguments below; ``specialist_<domain>`` also works):
  tfembed-train --recipe specialist:<domain> --set data_dir=/path/to/datasets
Smoke run (tiny images, 2 steps; a small CNN except on cub, which smoke-tests ResNet50):
  tfembed-train --recipe specialist:<domain> --set smoke=true --set data_dir=...
"""

import functools

from tfembed.configs._base import PAPER_SMOKE, paper_specialist
from tfembed.configs._recipe import Recipe
# domain: (the dataset and its split, 000 Table 1's Recall@1 / @2)
DOMAINS = {
    "cub": ("CUB-200-2011 (classes 1-100 train, 101-200 test)", "59.8 / 71.6"),
    "cars": ("CARS196 (classes 1-98 train, 99-196 test)", "70.1 / 79.4"),
    "sop": ("Stanford Online Products (Ebay_train / Ebay_test)", "73.4 / 78.8 (Combination 2)"),
    "inshop": ("In-shop Clothes (train / query / gallery partition)", "84.3 / 89.2"),
}


def _about(domain):
    dataset, expected = DOMAINS[domain]
    return (f"Specialist for {dataset}: ResNet50 → 128-d, triplet semi-hard.\n\n"
            f"Command:\n  tfembed-train --recipe specialist_{domain} --set data_dir=/path/to/datasets\n"
            f"Expected result: Recall@1 / @2 ≈ {expected} (000 Table 1).\n")


RECIPES = {
    domain: Recipe(f"specialist_{domain}", functools.partial(paper_specialist, domain),
                   # ResNet50 is smoke-tested on cub; elsewhere a small CNN keeps the suite fast.
                   PAPER_SMOKE if domain == "cub" else dict(PAPER_SMOKE, **{"model.backbone":
                                                                           "small_cnn"}),
                   about=_about(domain))
    for domain in DOMAINS
}
