"""003 Table 5: a heterogeneous cohort — 3 × Inception v3 + 1 × ResNet-50 — on CUB-200-2011.

003 mixes BN-Inception and ResNet-50; BN-Inception is not in Keras and Inception v3 stands in for
it. Temporal diversity is counted per architecture (003 §4.7): p = 1, 1/2, 1/4 for the three
Inception members and 1 for the ResNet-50. Everything else as ``dm2_cub``.

Command:
  tfembed-train --recipe dm2_hetero --set data_dir=/path/to/datasets
Expected result (003, 3 × BNI + 1 × R50): BNI member 68.7, R50 member 66.6 R@1, ensemble 74.2,
above the homogeneous cohorts' ensembles (72.9 BNI, 68.9 R50).
Smoke run (tiny images, 2 steps, a small CNN next to a ResNet-18):
  tfembed-train --recipe dm2_hetero --set smoke=true --set data_dir=...
"""

from tfembed.configs._cohort import PAPER_COHORT_SMOKE, paper_003

# The smoke cohort keeps the mixed-backbone path: small_cnn and resnet18 at 32 px.
SMOKE = dict(PAPER_COHORT_SMOKE, **{
    "cohort.size": 2,
    "cohort.backbones": ["small_cnn", "resnet18"],
    "model.backbone_kwargs": {},
})


def get_config():
    c = paper_003("cub", ["md+td+vd"])
    c.cohort.backbones = ["inception_v3", "inception_v3", "inception_v3", "resnet50"]
    return c
