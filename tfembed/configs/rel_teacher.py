"""Relative teacher (paper 001): a compact student matching the teacher's distances.

ResNet-101 teacher → ResNet-18 student (or MobileNet-0.25) with 001's settings
(``_distill.paper_001``: 512-d, batch-hard triplet, Adam 1e-5 with coupled L2 decay, the authors'
training lengths, λ chosen by cross-validation on held-out training classes): the student alone
next to the student with the relative teacher, and with attention transfer or hint.

Command (arguments below; the documented names also work):
  tfembed-train --recipe rel_teacher:<argument> --set data_dir=/path/to/datasets
"""

import dataclasses

from tfembed.configs._distill import PAPER_DISTILL_SMOKE, paper_001, teacher_recipes_001
from tfembed.configs._recipe import Recipe
RECIPES = teacher_recipes_001("rel", {
    "cub": ("Table 1", "student/ml 51.7, student/ml+rel 58.0, teacher 58.9"),
    "cars": ("Table 1", "student/ml 46.7, student/ml+rel 76.6, teacher 74.8"),
    "sop": ("Table 2", "student/ml 61.7, student/ml+rel 67.7, teacher 69.5"),
    "cub_at": ("Table 1", "student/ml+rel 58.0, student/ml+rel+at 58.1, teacher 58.9"),
    "cub_hint": ("Table 1", "student/ml+rel 58.0, student/ml+rel+hint 57.4, teacher 58.9"),
})
# The one 001 smoke run whose λ search trains (two values, one step each).
RECIPES["cub"] = dataclasses.replace(RECIPES["cub"], smoke=dict(
    PAPER_DISTILL_SMOKE, **{"distill.lambda_search.grid": [0.3, 1.0]}))


def _cub_mobilenet025():
    """A very small student (001 §5.3, Table 5): ResNet-101 → MobileNet-0.25 on CUB-200-2011.

    MobileNet with width multiplier α = 0.25 (~0.3 M weights, ImageNet-initialised, 512-d),
    taught by the ResNet-101 teacher with the relative teacher loss; other settings as
    ``_distill.paper_001``.

    Command:
      tfembed-train --recipe mobilenet025_student_cub --set data_dir=/path/to/datasets
    Expected result (001 Table 5, Recall@1 %):
      student/ml 27.5, student/ml+rel 44.6, teacher 58.9.
    Smoke run (small CNNs, 2 steps):
      tfembed-train --recipe mobilenet025_student_cub --set smoke=true
    """
    c = paper_001("cub", ["ml", "ml+rel"])
    c.model.backbone = "mobilenet"
    c.model.backbone_kwargs = {"alpha": 0.25}
    return c


RECIPES["cub_mobilenet025"] = Recipe("mobilenet025_student_cub", _cub_mobilenet025,
                                     PAPER_DISTILL_SMOKE)
