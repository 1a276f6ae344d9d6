"""Cross-quality distillation (paper 001): a clean-image teacher, a degraded-image student.

The teacher sees the clean view, the student a low-resolution or uncropped one (001's
cross-quality experiments).

Arguments: lowres_cub, uncropped_cub, demo. Run one as ``tfembed-train --recipe
cross_quality:<argument>`` or by its documented name (each entry below); each function's docstring
gives its command, the expected result and its smoke run.
"""

from tfembed.configs._distill import (
    DEMO_DISTILL_SMOKE as DISTILL_SMOKE,
)
from tfembed.configs._distill import (
    PAPER_DISTILL_SMOKE,
    demo_distill_config,
    paper_001,
)
from tfembed.configs._recipe import Recipe
from tfembed.distill.config import student

_SMOKE_LOWRES_CUB = dict(PAPER_DISTILL_SMOKE)


def _lowres_cub():
    """Cross-quality distillation (001 §5.4, Table 6) on CUB-200-2011: lowres.

    Low resolution: the students see images down-sampled to 50×50 and back up to 224, in training
    and test; the teacher sees the full-resolution images. Teacher and students are ResNet-18 (the
    point is the quality gap, not compression); other settings as ``_distill.paper_001``.

    λ is chosen by cross-validation on held-out training classes (``distill.lambda_search``,
    see ``_distill.paper_001``; the choice is in report.json under "selection").
    The search's students train and are validated in the students' (low-resolution) view.

    Command:
      tfembed-train --recipe cross_quality_lowres_cub --set data_dir=/path/to/datasets
    Expected result (001 Table 6, Recall@1 %):
      student/ml 44.4, student/ml+abs 45.7, student/ml+rel 46.2, teacher 53.7.
    Smoke run (small CNNs, 2 steps):
      tfembed-train --recipe cross_quality_lowres_cub --set smoke=true
    """
    c = paper_001("cub", ["ml", "ml+abs", "ml+rel"])
    c.teacher.backbone = "resnet18"
    c.distill.cross_quality = "lowres"
    return c


_SMOKE_UNCROPPED_CUB = dict(PAPER_DISTILL_SMOKE)


def _uncropped_cub():
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
    c = paper_001("cub", ["ml", "ml+abs", "ml+rel"])
    c.teacher.backbone = "resnet18"
    c.distill.cross_quality = "uncropped"
    return c


_SMOKE_DEMO = dict(DISTILL_SMOKE, **{
    "distill.methods": [student("ml", "rel")],
    "distill.export": [],
})


def _demo():
    """Offline cross-quality distillation (001 §5.4, Table 6, low resolution) on demo digits.

    Teacher and students are the same half-width small CNN (the point is the quality gap): the
    teacher trains and is tested on the 28×28 images, the students on images down-sampled to 7×7
    and back up (the ratio of 001's 224 → 50), 600 steps each: student alone, + absolute,
    + relative teacher.

    Command (offline, 2 CPU cores):
      tfembed-train --recipe cross_quality_demo --workdir runs/cross_quality_demo
    Expected result: the cross-quality table of docs/papers/001_compact_students.md (measured with
    this recipe), compared with 001 Table 6's ordering (relative ≥ absolute > student, teacher
    above all).
    """
    c = demo_distill_config(pretrained=False)
    c.teacher.backbone_kwargs = {"width": 0.5}
    c.model.backbone_kwargs = {"width": 0.5}
    c.distill.cross_quality = "lowres"
    c.distill.low_resolution_size = 7
    c.distill.methods = [student("ml"), student("ml", "abs"), student("ml", "rel")]
    return c


RECIPES = {
    "lowres_cub": Recipe("cross_quality_lowres_cub", _lowres_cub, _SMOKE_LOWRES_CUB),
    "uncropped_cub": Recipe("cross_quality_uncropped_cub", _uncropped_cub, _SMOKE_UNCROPPED_CUB),
    "demo": Recipe("cross_quality_demo", _demo, _SMOKE_DEMO),
}
