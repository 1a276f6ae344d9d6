"""Compact students (papers 001 and 004) on the offline demo digits domain.

The offline comparison of the single-teacher terms: absolute and relative teacher, hint and
attention transfer, hard DarkRank and direct match.

Arguments: demo. Run one as ``tfembed-train --recipe distill:<argument>`` or by its documented name
(each entry below); each function's docstring gives its command, the expected result and its smoke
run.
"""

from tfembed.configs._distill import DEMO_DISTILL_SMOKE, demo_distill_config
from tfembed.configs._recipe import Recipe
from tfembed.distill.config import student

_SMOKE_DEMO = dict(DEMO_DISTILL_SMOKE)


def _demo():
    """Offline reproduction of paper 001's Table 1 (and 004's orderings) on the demo digits domain.

    Domain: handwritten two-digit numbers 00–99 (50 training classes, 50 test classes, 28×28).
    Teacher: a full-width small CNN (32-64-128-256 channels, 128-d), trained 600 steps with triplet
    semi-hard. Students: a quarter-width small CNN (8-16-32-64 channels, 14.6× fewer weights,
    128-d), each trained 600 steps (8 classes × 4 images, Adam 1e-3):

    * ``ml``               the student alone (its metric loss only);
    * ``ml+abs``           + absolute teacher (001 Eq. 4, λ = 1);
    * ``ml+rel``           + relative teacher (001 Eq. 5, λ = 1);
    * ``ml+rel+at``        + attention transfer on stages 2-3 (001 Eq. 12, κ = 1);
    * ``ml+rel+hint``      + hint on stages 2-3 with 1×1 adapters (001 Eq. 9, μ = 0.01);
    * ``ml+darkrank_hard`` + hard DarkRank (004, α = β = 3, λ = 2);
    * ``ml+direct``        + direct distance match (004's baseline).

    Command (offline, 2 CPU cores):
      tfembed-train --recipe distill_demo --workdir runs/distill_demo
    Expected result: the distill_demo table of docs/papers/001_compact_students.md (measured with this recipe, ~4 min):
    001 claims every teacher term above the student alone and relative ≥ absolute; at this scale
    every term but direct match beats the student, and absolute is ahead of relative.
    """
    c = demo_distill_config()
    c.distill.methods = [student("ml"), student("ml", "abs"), student("ml", "rel"),
                         student("ml", "rel", "at"), student("ml", "rel", "hint"),
                         student("ml", "darkrank_hard"), student("ml", "direct")]
    c.distill.export = ["ml+rel"]
    return c


RECIPES = {
    "demo": Recipe("distill_demo", _demo, _SMOKE_DEMO),
}
