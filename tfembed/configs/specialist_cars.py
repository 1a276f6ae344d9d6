"""Specialist for CARS196 (classes 1-98 train, 99-196 test): ResNet50 → 128-d, triplet semi-hard.

Paper 000 §5 settings: ImageNet-pretrained ResNet50, 256×256 resize → random 224 crop + flip,
128-d L2-normalised embedding, batch 128 = 32 classes × 4 images, Adam lr 1e-5, triplet
semi-hard loss (margin 0.2, FaceNet's value; 000 does not state it).

Command:
  tfembed-train --recipe specialist_cars --set data_dir=/path/to/datasets
Expected result: Recall@1 / @2 ≈ 70.1 / 79.4 (R@1 / R@2, 000 Table 1).
Smoke run (tiny images, 2 steps, a small CNN):
  tfembed-train --recipe specialist_cars --set smoke=true --set data_dir=...
"""

from tfembed.configs._base import PAPER_SMOKE, paper_specialist

# ResNet50 is smoke-tested by specialist_cub; here a small CNN keeps the suite fast.
SMOKE = dict(PAPER_SMOKE, **{"model.backbone": "small_cnn"})


def get_config():
    return paper_specialist("cars")
