"""Offline cross-quality distillation (001 §5.4, Table 6, low resolution) on demo digits.

Teacher and students are the same half-width small CNN (the point is the quality gap): the
teacher trains and is tested on the 28×28 images, the students on images down-sampled to 7×7
and back up (the ratio of 001's 224 → 50), 600 steps each: student alone, + absolute,
+ relative teacher.

Command (offline, 2 CPU cores):
  tfembed-train --recipe cross_quality_demo --workdir runs/cross_quality_demo
Expected result: the cross-quality table of docs/papers/001_compact_students.md (measured with this recipe), compared with
001 Table 6's ordering (relative ≥ absolute > student, teacher above all).
"""

from tfembed.configs.distill_demo import SMOKE as DISTILL_SMOKE
from tfembed.configs.distill_demo import demo_distill_config

SMOKE = dict(DISTILL_SMOKE, **{
    "distill.methods": ["ml+rel"],
    "distill.export": [],
})


def get_config():
    c = demo_distill_config()
    c.teacher.backbone_kwargs = {"width": 0.5}
    c.model.backbone_kwargs = {"width": 0.5}
    c.distill.cross_quality = "lowres"
    c.distill.low_resolution_size = 7
    c.distill.methods = ["ml", "ml+abs", "ml+rel"]
    return c
