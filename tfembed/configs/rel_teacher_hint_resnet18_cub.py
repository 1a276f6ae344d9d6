"""Relative teacher + hint (001 Eq. 9) on CUB-200-2011: ResNet-101 → ResNet-18.

Trains the ResNet-101 teacher, then the ResNet-18 student with the relative teacher, without
and with hint on the four (teacher, student) stage pairs of 001 footnote 2.

λ is chosen by cross-validation on held-out training classes (``distill.lambda_search``,
see ``_distill.paper_001``; the choice is in report.json under "selection").

Command:
  tfembed-train --recipe rel_teacher_hint_resnet18_cub --set data_dir=/path/to/datasets
Expected result (001 Table 1, Recall@1 %):
  student/ml+rel 58.0, student/ml+rel+hint 57.4, teacher 58.9.
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe rel_teacher_hint_resnet18_cub --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_001

SMOKE = dict(PAPER_DISTILL_SMOKE)


def get_config():
    return paper_001("cub", ["ml+rel", "ml+rel+hint"])
