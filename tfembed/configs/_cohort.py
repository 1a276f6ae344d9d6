"""Shared set-up of the paper-scale DM² recipes (a private module: not a recipe)."""

from tfembed.configs._base import PAPER_SMOKE, base_config

# Smoke settings of the cohort recipes: PAPER_SMOKE with quarter-width small CNNs, cohorts of
# two, no export (the demo's smoke run exports).
PAPER_COHORT_SMOKE = dict(PAPER_SMOKE, **{
    "model.backbone": "small_cnn",
    "model.backbone_kwargs": {"width": 0.25},
    "model.embedding_dim": 32,
    "cohort.size": 2,
    "export.enabled": False,
    "eval.every_n_epochs": 1000,
})

KS = {"cub": [1, 2, 4, 8], "cars": [1, 2, 4, 8], "sop": [1, 10, 100, 1000],
      "inshop": [1, 10, 20, 30]}


def paper_003(domain, methods):
    """003 §4.2: cohort of 4, ResNet-50 (ImageNet; 003's other backbone, BN-Inception, is not in
    Keras), linear projection to 512-d + L2, triplet loss with distance-weighted sampling
    (margin 0.2), Adam 3e-5, weight decay 5e-4, batch 120 = 24 classes × 5 images (CUB, Cars)
    or 60 × 2 (SOP, In-shop), BatchNorm frozen on CUB and Cars, λ_DM² 0 → 20 over 3 epochs,
    p_l = 2^-(l-1), random crop + flip per member (view diversity).

    Not in the paper, our choices: the triplet margin (0.2, Wu et al.'s), the step budget
    (8000 steps ≈ 160 CUB epochs), members on one device each (placement "devices").
    """
    c = base_config()
    c.pipeline = "cohort"
    c.domains = [domain]
    c.model.backbone = "resnet50"
    c.model.embedding_dim = 512
    c.train.loss = "triplet_distance_weighted"
    c.train.loss_kwargs = {"margin": 0.2}
    c.train.optimizer = "adam"
    c.train.learning_rate = 3e-5
    c.train.weight_decay = 5e-4
    small = domain in ("cub", "cars")
    c.train.classes_per_batch = 24 if small else 60
    c.train.images_per_class = 5 if small else 2
    c.train.steps = 8000
    c.train.steps_per_epoch = 50 if small else 500
    c.eval.every_n_epochs = 10 if small else 1
    c.eval.ks = list(KS[domain])
    c.cohort.methods = list(methods)
    c.cohort.freeze_batchnorm = small
    prefix = methods[0].replace("->", "_to_")
    c.cohort.export = [f"{prefix}/ensemble", f"{prefix}/member0"]
    return c
