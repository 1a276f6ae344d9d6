"""003 Tables 1-2: DM² (MD+TD+VD), cohort of 4 ResNet-50, on CUB-200-2011.

Paper settings: see ``tfembed.configs._cohort.paper_003`` (ResNet-50 members, triplet with
distance-weighted sampling, Adam 3e-5, batch 120, frozen BatchNorm on CUB / Cars, λ 0 → 20,
256-px inputs with HORDE's multi-resolution random crops + flip, as 003 §4.2 says; HORDE's
public code decided the details, see paper_003).

Command:
  tfembed-train --recipe dm2_cub --set data_dir=/path/to/datasets
Expected result (003): single model (member 0) R@1 66.7 (ResNet-50, 512-d, 003 Table 2); 69.9 / ensemble 72.9 with BN-Inception (Table 1).
Smoke run (tiny images, 2 steps, a cohort of two small CNNs):
  tfembed-train --recipe dm2_cub --set smoke=true --set data_dir=...
"""

from tfembed.configs._cohort import PAPER_COHORT_SMOKE, paper_003

SMOKE = dict(PAPER_COHORT_SMOKE)


def get_config():
    return paper_003('cub', ['md+td+vd'])
