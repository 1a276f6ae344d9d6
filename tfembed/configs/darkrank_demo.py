"""Offline DarkRank (paper 004) on the demo digits domain: hard/soft transfer, direct match, KD.

Teacher and student as in ``distill_demo`` (full-width → quarter-width small CNN, 128-d; the
teacher trained exactly as there).
Every student is trained with 004's supervised losses (large-margin softmax ×1, verification
×5, triplet ×0.1 with margin 0.9) on batches of 8 (4 classes × 2 images, 004's batch size; soft
DarkRank enumerates all 5040 orderings of each query's 7 candidates), 1200 steps, Adam 1e-3:

* ``ml`` (student), ``ml+direct`` (direct distance match), ``ml+darkrank_hard``,
  ``ml+darkrank_soft`` (α = β = 3, λ = 2), ``ml+kd`` (Hinton KD, T = 4) and
  ``ml+kd+darkrank_hard``.

Command (offline, 2 CPU cores):
  tfembed-train --recipe darkrank_demo --workdir runs/darkrank_demo
Expected result: the table of docs/papers/004_darkrank.md (measured with this recipe): Recall@K, NMI and F1
of each student and the teacher, and whether 004's ordering (DarkRank > direct match ≈
student) holds at this scale.
"""

from tfembed.configs.distill_demo import SMOKE as DISTILL_SMOKE
from tfembed.configs.distill_demo import demo_distill_config

SMOKE = dict(DISTILL_SMOKE, **{
    "distill.teacher_train.steps": 2,
    "distill.teacher_train.steps_per_epoch": 2,
    "distill.methods": ["ml+darkrank_soft", "ml+kd+darkrank_hard"],
    "distill.export": [],
})


def get_config():
    c = demo_distill_config()
    c.train.loss = "triplet_semihard"
    c.train.loss_kwargs = {"margin": 0.9}
    c.train.classes_per_batch = 4
    c.train.images_per_class = 2
    c.train.steps = 1200
    c.train.steps_per_epoch = 400
    # The teacher trains as in distill_demo (triplet margin 0.2 on 8×4 batches, 600 steps): on
    # 4×2 batches with margin 0.9 alone it ends below the students, which get the heads too.
    c.distill.teacher_train = {"loss_kwargs": {"margin": 0.2}, "classes_per_batch": 8,
                               "images_per_class": 4, "steps": 600, "steps_per_epoch": 200}
    c.distill.metric_weight = 0.1
    c.distill.heads = {"lsoftmax": {"weight": 1.0, "margin": 3},
                       "verification": {"weight": 5.0}}
    c.distill.methods = ["ml", "ml+direct", "ml+darkrank_hard", "ml+darkrank_soft", "ml+kd",
                         "ml+kd+darkrank_hard"]
    return c
