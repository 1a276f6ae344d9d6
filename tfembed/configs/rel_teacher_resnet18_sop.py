"""Relative teacher (001 Eq. 5, Eq. 7) on Stanford Online Products: ResNet-101 → ResNet-18.

Trains the ResNet-101 teacher, then the ResNet-18 student alone (``ml``) and with the
relative teacher (``ml+rel``). Paper settings in ``_distill.paper_001``;
on SOP the students train at lr 1e-6 (the authors' run_main.sh), the teacher at the paper's 1e-5.

λ is chosen by cross-validation on held-out training classes (``distill.lambda_search``,
see ``_distill.paper_001``; the choice is in report.json under "selection").

Command:
  tfembed-train --recipe rel_teacher_resnet18_sop --set data_dir=/path/to/datasets
Expected result (001 Table 2, Recall@1 %):
  student/ml 61.7, student/ml+rel 67.7, teacher 69.5.
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe rel_teacher_resnet18_sop --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_001

SMOKE = dict(PAPER_DISTILL_SMOKE)


def get_config():
    return paper_001("sop", ["ml", "ml+rel"])
