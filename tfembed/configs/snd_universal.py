"""Universal embedding of CUB-200-2011 + CARS196 + In-shop by SND (paper 000 §5.2, "Ours_SND").

Paper 000 settings: ResNet50 (ImageNet) → 128-d L2-normalised, batch 128 = 32 classes × 4 images,
Adam 1e-5, 256 → random 224 crop + flip; domain-specific batches (one domain per batch, drawn in
proportion to its training images); SND with a fixed σ = 0.25 for teacher and student (the paper
tunes σ by self-distillation on one dataset and does not publish it; 0.25 is what our offline
sweep picked, recipe snd_sigma_selfdistill_demo and docs/papers/000_universal.md, "Choosing σ"; snd_sigma_selfdistill
redoes the sweep on CUB at paper scale). Specialists: triplet semi-hard, trained
first unless given with --set teachers=cub.keras,cars.keras,inshop.keras (domain order).
The loss is computed on the all-gathered global batch under MirroredStrategy.

Command:
  tfembed-train --recipe snd_universal --set data_dir=/path/to/datasets \\
      --set teachers=runs/cub/specialists/cub/model.keras,...
Expected result (000 Table 2, fused gallery, R@1/R@2/R@4): CUB 59.7/72.0/81.5,
CARS196 71.8/81.2/87.6, In-shop 84.3/89.5/93.2 — within a point of the specialists.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

SMOKE = dict(PAPER_UNIVERSAL_SMOKE)


def get_config():
    c = paper_universal(["cub", "cars", "inshop"])
    c.universal.methods = ["snd"]
    c.universal.export = ["snd"]
    return c
