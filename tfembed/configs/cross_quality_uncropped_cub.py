"""Cross-quality distillation (001 §5.4, Table 6) on CUB-200-2011: uncropped.

Unlocalized: the teacher is trained and tested on bounding-box crops, the students on the whole
images. Teacher and students are
ResNet-18 (the point is the quality gap, not compression); other settings as
``_distill.paper_001``.

λ is chosen by cross-validation on held-out training classes (``distill.lambda_search``,
see ``_distill.paper_001``; the choice is in report.json under "selection").
The search's students train and are validated on whole images, as the students are.

Command:
  tfembed-train --recipe cross_quality_uncropped_cub --set data_dir=/path/to/datasets
Expected result (001 Table 6, Recall@1 %):
  student/ml 43.6, student/ml+abs 43.0, student/ml+rel 45.9, teacher 54.8.
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe cross_quality_uncropped_cub --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_001

SMOKE = dict(PAPER_DISTILL_SMOKE)


def get_config():
    c = paper_001("cub", ["ml", "ml+abs", "ml+rel"])
    c.teacher.backbone = "resnet18"
    c.distill.cross_quality = "uncropped"
    return c
