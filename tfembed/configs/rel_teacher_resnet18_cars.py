"""Relative teacher (001 Eq. 5, Eq. 7) on Cars-196: ResNet-101 → ResNet-18.

Trains the ResNet-101 teacher, then the ResNet-18 student alone (``ml``) and with the
relative teacher (``ml+rel``). Paper settings in ``_distill.paper_001``.

λ is chosen by cross-validation on held-out training classes (``distill.lambda_search``,
see ``_distill.paper_001``; the choice is in report.json under "selection").

Command:
  tfembed-train --recipe rel_teacher_resnet18_cars --set data_dir=/path/to/datasets
Expected result (001 Table 1, Recall@1 %):
  student/ml 46.7, student/ml+rel 76.6, teacher 74.8.
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe rel_teacher_resnet18_cars --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_001

SMOKE = dict(PAPER_DISTILL_SMOKE)


def get_config():
    return paper_001("cars", ["ml", "ml+rel"])
