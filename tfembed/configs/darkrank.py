"""DarkRank (paper 004): a student matching the teacher's ranking of neighbours.

ResNet-50 teacher → ResNet-18 student with 004's heads (``_distill.paper_004``): hard and
soft DarkRank, direct match and Hinton KD.

Arguments: hard_cub, soft_cub, kd_cub, demo. Run one as ``tfembed-train --recipe
darkrank:<argument>`` or by its documented name (each entry below); each function's docstring gives
its command, the expected result and its smoke run.
"""

from tfembed.configs._distill import (
    PRETRAINED_DISTILL_SMOKE,
)
from tfembed.configs._distill import (
    PAPER_DISTILL_SMOKE,
    demo_distill_config,
    paper_004,
)
from tfembed.configs._recipe import Recipe
from tfembed.distill.config import student

_SMOKE_HARD_CUB = dict(PAPER_DISTILL_SMOKE)


def _hard_cub():
    """Hard DarkRank (004 Eq. 5, hard: ListMLE of the teacher's ranking) on CUB-200-2011.

    ResNet-50 teacher → ResNet-18 student (the nearest Keras pair to 004's Inception-BN → NIN-BN),
    every student trained with large-margin softmax, verification and triplet losses; the DarkRank
    student adds the transfer with α = β = 3, λ = 2. Settings and deviations in
    ``_distill.paper_004``.

    Command:
      tfembed-train --recipe darkrank_hard_cub --set data_dir=/path/to/datasets
    Expected result (004 Table 4, Inception-BN → NIN-BN): student F1 / NMI / R@1 0.153 / 0.461 /
      0.311, DarkRank 0.168 / 0.483 / 0.340, teacher 0.172 / 0.484 / 0.367.
    Smoke run (small CNNs, 2 steps):
      tfembed-train --recipe darkrank_hard_cub --set smoke=true
    """
    return paper_004([student("ml"), student("ml", "darkrank_hard")])


_SMOKE_SOFT_CUB = dict(PAPER_DISTILL_SMOKE)


def _soft_cub():
    """Soft DarkRank (004 Eq. 5, soft: exact KL over all permutations of each list) on CUB-200-2011.

    ResNet-50 teacher → ResNet-18 student (the nearest Keras pair to 004's Inception-BN → NIN-BN),
    every student trained with large-margin softmax, verification and triplet losses; the DarkRank
    student adds the transfer with α = β = 3, λ = 2 (batches of 8: 7 candidates per query, all
    5040 orderings enumerated). Settings and deviations in ``_distill.paper_004``.

    Command:
      tfembed-train --recipe darkrank_soft_cub --set data_dir=/path/to/datasets
    Expected result (004 Table 4, Inception-BN → NIN-BN): student F1 / NMI / R@1 0.153 / 0.461 /
      0.311, DarkRank 0.168 / 0.483 / 0.340, teacher 0.172 / 0.484 / 0.367.
    Smoke run (small CNNs, 2 steps):
      tfembed-train --recipe darkrank_soft_cub --set smoke=true
    """
    return paper_004([student("ml"), student("ml", "darkrank_soft")])


_SMOKE_KD_CUB = dict(PAPER_DISTILL_SMOKE)


def _kd_cub():
    """Hinton KD with and without DarkRank (004 Table 1, "KD + HardRank / SoftRank") on CUB-200-2011.

    ResNet-50 teacher → ResNet-18 student. KD compares class logits: the student's are those of its
    large-margin softmax head (on the FC output before L2 normalisation, 004 §4), the teacher's
    come from a linear softmax head fitted on its frozen embeddings of the training images (the
    teacher trains with an L-Softmax head too, ``distill.teacher_heads``, but only its embedder is
    kept; the authors' code takes the teacher's own classifier logits). Temperature 4 with the T²
    weighting. Settings and deviations in ``_distill.paper_004``.

    Command:
      tfembed-train --recipe darkrank_kd_cub --set data_dir=/path/to/datasets
    Expected result: 004 reports KD only on re-identification (Market-1501 Table 1: KD, KD +
      HardRank and KD + SoftRank all above the student, the DarkRank variants above KD alone).
    Smoke run (small CNNs, 2 steps):
      tfembed-train --recipe darkrank_kd_cub --set smoke=true
    """
    return paper_004([student("ml", "kd"), student("ml", "kd", "darkrank_hard"),
                      student("ml", "kd", "darkrank_soft")])


_SMOKE_DEMO = dict(PRETRAINED_DISTILL_SMOKE, **{
    "distill.teacher_train.steps": 2,
    "distill.teacher_train.steps_per_epoch": 2,
    "distill.methods": [student("ml", "darkrank_soft"), student("ml", "kd", "darkrank_hard")],
    "distill.export": [],
})


def _demo():
    """Offline DarkRank (paper 004) on the demo digits domain: hard/soft transfer, direct match, KD.

    Teacher and student as in ``distill_demo``: the ImageNet-pretrained EfficientNet-Lite0 →
    its first two stages plus a head (61× fewer parameters), 128-d, 64-px crops, BatchNorm
    frozen, Adam 1e-4; the teacher trained exactly as there.
    Every student is trained with 004's supervised losses (large-margin softmax ×1, verification
    ×5, triplet ×0.1 with margin 0.9) on batches of 8 (4 classes × 2 images, 004's batch size; soft
    DarkRank enumerates all 5040 orderings of each query's 7 candidates), 1200 steps:

    * ``ml`` (student), ``ml+direct`` (direct distance match), ``ml+darkrank_hard``,
      ``ml+darkrank_soft`` (α = β = 3, λ = 2), ``ml+kd`` (Hinton KD, T = 4) and
      ``ml+kd+darkrank_hard``.

    Command (offline, 2 CPU cores):
      tfembed-train --recipe darkrank_demo --workdir runs/darkrank_demo --set seeds=0,1,2
    Expected result (measured on AMD EPYC, 3 seeds, docs/papers/004_darkrank.md): R@1 teacher
    89.2 ± 1.3, ``ml`` 19.1 ± 0.7, ``ml+direct`` 28.9 ± 1.0, ``ml+darkrank_hard`` 31.4 ± 1.7,
    ``ml+darkrank_soft`` 30.8 ± 1.7, ``ml+kd`` 21.3 ± 0.8, ``ml+kd+darkrank_hard`` 32.4 ± 1.3:
    004's DarkRank > direct match holds in every seed (+2.5 ± 0.8), direct match ≈ student does
    not (+9.8). 9 min for one seed on 2 AMD EPYC cores.
    """
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
    c.distill.methods = [student("ml"), student("ml", "direct"), student("ml", "darkrank_hard"),
                         student("ml", "darkrank_soft"), student("ml", "kd"),
                         student("ml", "kd", "darkrank_hard")]
    return c


RECIPES = {
    "hard_cub": Recipe("darkrank_hard_cub", _hard_cub, _SMOKE_HARD_CUB),
    "soft_cub": Recipe("darkrank_soft_cub", _soft_cub, _SMOKE_SOFT_CUB),
    "kd_cub": Recipe("darkrank_kd_cub", _kd_cub, _SMOKE_KD_CUB),
    "demo": Recipe("darkrank_demo", _demo, _SMOKE_DEMO),
}
