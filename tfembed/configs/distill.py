"""Compact students (papers 001 and 004) on the offline demo digits domain.

The offline comparison of the single-teacher terms: absolute and relative teacher, hint and
attention transfer, hard DarkRank and direct match.

Arguments: demo. Run one as ``tfembed-train --recipe distill:<argument>`` or by its documented name
(each entry below); each function's docstring gives its command, the expected result and its smoke
run.
"""

from tfembed.configs._distill import PRETRAINED_DISTILL_SMOKE, demo_distill_config
from tfembed.configs._recipe import Recipe
from tfembed.distill.config import student

_SMOKE_DEMO = dict(PRETRAINED_DISTILL_SMOKE)


def _demo():
    """Offline reproduction of paper 001's Table 1 on the demo digits domain, from an
    ImageNet-pretrained network as 001 starts.

    Domain: handwritten two-digit numbers 00–99 (50 training classes, 50 test classes, 28×28,
    upscaled to 64-px crops). Teacher: EfficientNet-Lite0 (ImageNet weights, converted offline),
    128-d, trained 600 steps with triplet semi-hard. Students: the same pretrained network's
    first two stages plus a head (61× fewer parameters; why two: ``_distill.demo_distill_config``),
    128-d, each trained 600 steps (8 classes × 4 images, Adam 1e-4, BatchNorm frozen):

    * ``ml``               the student alone (its metric loss only);
    * ``ml+abs``           + absolute teacher (001 Eq. 4);
    * ``ml+rel``           + relative teacher (001 Eq. 5);
    * ``ml+rel+at``        + attention transfer on the stride-4/8 stages (001 Eq. 12, κ = 1);
    * ``ml+rel+hint``      + hint on the same stages with 1×1 adapters (001 Eq. 9, μ = 0.01).

    λ of the absolute and relative terms by cross-validation, as 001 chooses it: per student,
    one trial per λ ∈ {0.1, 1, 10} trained 150 steps (a quarter of the run, as the paper
    recipes) on 80 % of the training classes, the best validation Recall@1 on the held-out 20 %
    wins (report.json "selection"). 004's direct match and DarkRank: ``darkrank_demo``.

    Command (offline, 2 CPU cores):
      tfembed-train --recipe distill_demo --workdir runs/distill_demo --set seeds=0,1,2
    Expected result: the distill_demo table of docs/papers/001_compact_students.md (measured with
    this recipe, seeds 0-2, R@1, AMD EPYC): teacher 89.2 ± 1.3, student alone 52.5 ± 0.4, +
    absolute 54.0 ± 0.4, + relative 50.3 ± 0.5, + relative + attention 44.9 ± 1.7, + relative +
    hint 33.0 ± 0.5. 001 claims every teacher term above the student alone and relative above
    absolute; here only the absolute teacher is above the student, by 1.5 ± 0.4. 12 min for one
    seed on 2 AMD EPYC cores.
    """
    c = demo_distill_config()
    c.distill.methods = [student("ml"), student("ml", "abs"), student("ml", "rel"),
                         student("ml", "rel", "at"), student("ml", "rel", "hint")]
    c.distill.lambda_search.terms = ["abs", "rel"]
    c.distill.lambda_search.grid = [0.1, 1.0, 10.0]
    c.distill.lambda_search.steps = 150
    c.distill.export = ["ml+rel"]
    return c


RECIPES = {
    "demo": Recipe("distill_demo", _demo, _SMOKE_DEMO),
}
