"""003 Table 1 row MD+TD: + temporal diversity (p = 1, 1/2, 1/4, 1/8), CUB-200-2011.

Paper settings: see ``tfembed.configs._cohort.paper_003`` (ResNet-50 members, triplet with
distance-weighted sampling, Adam 3e-5, batch 120, frozen BatchNorm on CUB / Cars, λ 0 → 20,
256-px inputs with HORDE's multi-resolution random crops + flip, as 003 §4.2 says; HORDE's
public code decided the details, see paper_003).

Command:
  tfembed-train --recipe dm2_md_td --set data_dir=/path/to/datasets
Expected result (003): R@1 ≈ 67.6-69.5 per member, ensemble 71.3 (BN-Inception).
Smoke run (tiny images, 2 steps, a cohort of two small CNNs):
  tfembed-train --recipe dm2_md_td --set smoke=true --set data_dir=...
"""

from tfembed.configs._cohort import PAPER_COHORT_SMOKE, paper_003

SMOKE = dict(PAPER_COHORT_SMOKE)


def get_config():
    return paper_003('cub', ['md+td'])
