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

from tfembed.configs._base import base_config, distill_defaults

# Smoke: 2 steps and a few of the methods (every method list is checked without training
# by the tests; the paper recipes" smoke runs cover every kind of term).
SMOKE = {
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "eval.max_images_per_split": 120,
    "distill.kd_classifier_epochs": 1,
    "distill.methods": ["ml", "ml+rel+at", "ml+rel+hint"],
    "distill.export": ["ml+rel+at"],
}


def demo_distill_config(domain="digits"):
    """The shared set-up of the demo distillation recipes (teacher, student, steps)."""
    c = base_config()
    c.pipeline = "distill"
    c.domains = [domain]
    c.teacher.backbone = "small_cnn"
    c.teacher.backbone_kwargs = {"width": 1.0}
    c.teacher.weights = ""
    c.teacher.embedding_dim = 128
    c.teacher.image_size = 28
    c.teacher.resize_size = 32
    c.model.backbone = "small_cnn"
    c.model.backbone_kwargs = {"width": 0.25}
    c.model.weights = ""
    c.model.embedding_dim = 128
    c.model.image_size = 28
    c.model.resize_size = 32
    c.train.classes_per_batch = 8
    c.train.images_per_class = 4
    c.train.learning_rate = 1e-3
    c.train.steps = 600
    c.train.steps_per_epoch = 200
    c.eval.batch_size = 512
    c.distill = distill_defaults()
    c.distill.hint_layers = [["stage2", "stage2"], ["stage3", "stage3"]]
    c.distill.attention_layers = [["stage2", "stage2"], ["stage3", "stage3"]]
    return c


def get_config():
    c = demo_distill_config()
    c.distill.methods = ["ml", "ml+abs", "ml+rel", "ml+rel+at", "ml+rel+hint",
                         "ml+darkrank_hard", "ml+direct"]
    c.distill.export = ["ml+rel"]
    return c
