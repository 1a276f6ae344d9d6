"""Absolute teacher (paper 001): a compact student matching the teacher's embeddings.

ResNet-101 teacher → ResNet-18 student with 001's settings (``_distill.paper_001``: 512-d,
batch-hard triplet, Adam 1e-5 with coupled L2 decay, the authors' training lengths, λ chosen by
cross-validation on held-out training classes): the student alone next to the student with the
absolute teacher, and with attention transfer or hint.

Command (arguments below; the documented names also work):
  tfembed-train --recipe abs_teacher:<argument> --set data_dir=/path/to/datasets
"""

from tfembed.configs._distill import teacher_recipes_001
RECIPES = teacher_recipes_001("abs", {
    "cub": ("Table 1", "student/ml 51.7, student/ml+abs 54.9, teacher 58.9"),
    "cars": ("Table 1", "student/ml 46.7, student/ml+abs 70.6, teacher 74.8"),
    "sop": ("Table 2", "student/ml 61.7, student/ml+abs 68.0, teacher 69.5"),
    "cub_at": ("Table 1", "student/ml+abs 54.9, student/ml+abs+at 55.0, teacher 58.9"),
    "cub_hint": ("Table 1", "student/ml+abs 54.9, student/ml+abs+hint 55.0, teacher 58.9"),
})
