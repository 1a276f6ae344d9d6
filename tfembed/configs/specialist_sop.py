"""Specialist for Stanford Online Products (Ebay_train / Ebay_test): ResNet50 → 128-d, triplet semi-hard.

Paper 000 §5 settings: ImageNet-pretrained ResNet50, 256×256 resize → random 224 crop + flip,
128-d L2-normalised embedding, batch 128 = 32 classes × 4 images, Adam lr 1e-5, triplet
semi-hard loss (margin 0.2, FaceNet's value; 000 does not state it).

Command:
  tfembed-train --recipe specialist_sop --set data_dir=/path/to/datasets
Expected result: Recall@1 / @2 ≈ 73.4 / 78.8 (R@1 / R@2, 000 Table 1, Combination 2).
Smoke run (tiny images, 2 steps, a small CNN):
  tfembed-train --recipe specialist_sop --set smoke=true --set data_dir=...
"""

from tfembed.configs._base import PAPER_SMOKE, paper_specialist

# ResNet50 is smoke-tested by specialist_cub; here a small CNN keeps the suite fast.
SMOKE = dict(PAPER_SMOKE, **{"model.backbone": "small_cnn"})


def get_config():
    return paper_specialist("sop")
