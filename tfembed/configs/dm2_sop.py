"""003 Table 2: DM², cohort of 4 ResNet-50, on Stanford Online Products.

Paper settings: see ``tfembed.configs._cohort.paper_003`` (ResNet-50 members, triplet with
distance-weighted sampling, Adam 3e-5, batch 120, frozen BatchNorm on CUB / Cars, λ 0 → 20,
256-px inputs with HORDE's multi-resolution random crops + flip, as 003 §4.2 says; HORDE's
public code decided the details, see paper_003).

Command:
  tfembed-train --recipe dm2_sop --set data_dir=/path/to/datasets
Expected result (003): single model R@1 / 10 / 100 / 1000: 80.4 / 91.8 / 96.8 / 99.1 (ResNet-50, 512-d).
Smoke run (tiny images, 2 steps, a cohort of two small CNNs):
  tfembed-train --recipe dm2_sop --set smoke=true --set data_dir=...
"""

from tfembed.configs._cohort import PAPER_COHORT_SMOKE, paper_003

SMOKE = dict(PAPER_COHORT_SMOKE)


def get_config():
    return paper_003('sop', ['md+td+vd'])
