"""Semi-supervised distillation (001 §5.2, Table 3) on CUB-200-2011: ResNet-101 → ResNet-18.

Half of each training class keeps its labels (seeded); the teacher is trained on that half only.
Students: on the labelled half (``@labelled``: ML + KD), on both halves (``@semi``: labelled
batches get ML + KD, unlabelled batches, label -1, only KD) and on the unlabelled half alone
(``@unlabelled``: only KD). Other settings as ``_distill.paper_001``.

λ is chosen by cross-validation on held-out training classes (``distill.lambda_search``,
see ``_distill.paper_001``; the choice is in report.json under "selection").
The search keeps this labelled/unlabelled draw: its students see the labelled and unlabelled
images of the remaining classes, and Recall@1 is measured on the labelled images of the
held-out classes.

Command:
  tfembed-train --recipe semi_supervised_cub --set data_dir=/path/to/datasets
Expected result (001 Table 3, Recall@1 %): student/ml@labelled 51.0, ml+abs@labelled 51.7,
  ml+rel@labelled 56.0, ml+abs@semi 53.9, ml+rel@semi 57.2, abs@unlabelled 49.8,
  rel@unlabelled 55.5, teacher 58.1.
Smoke run (small CNNs, 2 steps):
  tfembed-train --recipe semi_supervised_cub --set smoke=true
"""

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_001

SMOKE = dict(PAPER_DISTILL_SMOKE)

METHODS = ["ml@labelled", "ml+abs@labelled", "ml+rel@labelled", "ml+abs@semi", "ml+rel@semi",
           "abs@unlabelled", "rel@unlabelled"]


def get_config():
    c = paper_001("cub", METHODS)
    c.distill.labelled_fraction = 0.5
    c.distill.export = ["ml+rel@semi"]
    return c
