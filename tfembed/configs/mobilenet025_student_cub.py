"""A very small student (001 §5.3, Table 5): ResNet-101 → MobileNet-0.25 on CUB-200-2011.

MobileNet with width multiplier α = 0.25 (~0.3 M weights, ImageNet-initialised, 512-d), taught by
the ResNet-101 teacher with the relative teacher loss; other settings as ``_distill.paper_001``.

λ is chosen by cross-validation on held-out training classes (``distill.lambda_search``,
see ``_distill.paper_001``; the choice is in report.json under "selection").

Command:
  tfembed-train --recipe mobilenet025_student_cub --set data_dir=/path/to/datasets
Expected result (001 Table 5, Recall@1 %):
  student/ml 27.5, student/ml+rel 44.6, teacher 58.9.
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe mobilenet025_student_cub --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_001

SMOKE = dict(PAPER_DISTILL_SMOKE)


def get_config():
    c = paper_001("cub", ["ml", "ml+rel"])
    c.model.backbone = "mobilenet"
    c.model.backbone_kwargs = {"alpha": 0.25}
    return c
