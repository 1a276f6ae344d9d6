"""Hinton KD with and without DarkRank (004 Table 1, "KD + HardRank / SoftRank") on CUB-200-2011.

ResNet-50 teacher → ResNet-18 student. KD compares class logits: the student's are those of its
large-margin softmax head (on the FC output before L2 normalisation, 004 §4), the teacher's come
from a linear softmax head fitted on its frozen embeddings of the training images (the teacher
trains with an L-Softmax head too, ``distill.teacher_heads``, but only its embedder is kept; the
authors' code takes the teacher's own classifier logits). Temperature 4 with the T² weighting.
Settings and deviations in ``_distill.paper_004``.

Command:
  tfembed-train --recipe darkrank_kd_cub --set data_dir=/path/to/datasets
Expected result: 004 reports KD only on re-identification (Market-1501 Table 1: KD, KD +
  HardRank and KD + SoftRank all above the student, the DarkRank variants above KD alone).
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe darkrank_kd_cub --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_004

SMOKE = dict(PAPER_DISTILL_SMOKE)


def get_config():
    return paper_004(["ml+kd", "ml+kd+darkrank_hard", "ml+kd+darkrank_soft"])
