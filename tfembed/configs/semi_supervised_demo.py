"""Offline semi-supervised distillation (001 §5.2, Table 3) on the demo digits domain.

Half of each digits training class keeps its labels; the teacher (full-width small CNN) trains
on that half only. Quarter-width students (600 steps each): ``@labelled`` (ML + KD on the
labelled half), ``@semi`` (labelled batches ML + KD, unlabelled batches only KD) and
``@unlabelled`` (only KD on the unlabelled half), with the absolute and relative teachers.

Command (offline, 2 CPU cores):
  tfembed-train --recipe semi_supervised_demo --workdir runs/semi_demo
Expected result: the semi-supervised table of docs/papers/001_compact_students.md (measured with this recipe), compared
with 001 Table 3's ordering (adding unlabelled data helps; relative > absolute).
"""

from tfembed.configs.distill_demo import SMOKE as DISTILL_SMOKE
from tfembed.configs.distill_demo import demo_distill_config
from tfembed.configs.semi_supervised_cub import METHODS

SMOKE = dict(DISTILL_SMOKE, **{
    "distill.methods": ["ml+rel@semi", "rel@unlabelled"],
    "distill.export": [],
})


def get_config():
    c = demo_distill_config()
    c.distill.labelled_fraction = 0.5
    c.distill.methods = list(METHODS)
    return c
