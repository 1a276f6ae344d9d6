"""003 Table 4 row DM² → RKD-DA: the DM² ensemble of 4 distilled into one ResNet-50 by RKD-DA (distance 20, angle 40, no metric loss), CUB-200-2011.

Paper settings: see ``tfembed.configs._cohort.paper_003`` (ResNet-50 members, triplet with
distance-weighted sampling, Adam 3e-5, batch 120, frozen BatchNorm on CUB / Cars, λ 0 → 20,
256-px inputs with HORDE's multi-resolution random crops + flip, as 003 §4.2 says; HORDE's
public code decided the details, see paper_003).

Command:
  tfembed-train --recipe dm2_to_rkd --set data_dir=/path/to/datasets
Expected result (003): ensemble 72.9, student 71.2 R@1 (BN-Inception).
Smoke run (tiny images, 2 steps, a cohort of two small CNNs):
  tfembed-train --recipe dm2_to_rkd --set smoke=true --set data_dir=...
"""

from tfembed.configs._cohort import PAPER_COHORT_SMOKE, paper_003

SMOKE = dict(PAPER_COHORT_SMOKE)


def get_config():
    return paper_003('cub', ['md+td+vd->rkd'])
