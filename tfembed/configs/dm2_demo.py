"""Offline reproduction of paper 003's Table 1 ablation on the demo digits domain.

Domain: handwritten two-digit numbers 00–99 (50 training classes, 50 test classes, 28×28).
Cohorts of 4 quarter-width small CNNs (8-16-32-64 channels, 64-d), random initialisation (so
model diversity is real here, where 003's pretrained members differ only in their projection),
triplet loss with distance-weighted sampling, Adam 1e-3, batch 60 = 12 classes × 5 images,
λ_DM² 0 → 20 over the first epoch, the same step budget for every cohort:

* ``independent``  four members side by side, no relation transfer;
* ``md``           relation transfer (model diversity);
* ``md+td``        + temporal diversity, p = 1, 1/2, 1/4, 1/8;
* ``md+vd``        + view diversity, one random crop per member;
* ``md+td+vd``     DM².

Augmentation: 32 × 32 resize → random 28 × 28 crop (``train.crop = "resize_crop"``), no flip:
digits is text (``Domain.hflip`` False; a mirrored "08" reads "80", DESIGN §6). 003's HORDE
crops (``paper_003``) are not used at this scale: a 28-px crop of a two-digit image resized up
to 1.8× cuts digits off, i.e. changes the number.

Command (offline, 2 CPU cores):
  tfembed-train --recipe dm2_demo --workdir runs/dm2_demo
Expected result: the table of docs/papers/003_dm2.md (measured with this recipe): each row's
members and their ensemble, and whether 003's ordering holds at this scale.
"""

from tfembed.configs._base import base_config

# Smoke: 2 steps of a cohort of two with TD and VD, distilled by RKD, exported.
SMOKE = {
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "eval.max_images_per_split": 120,
    "cohort.size": 2,
    "cohort.methods": ["md+td+vd->rkd"],
    "cohort.export": ["md+td+vd_to_rkd/ensemble", "md+td+vd_to_rkd/member1"],
}


def get_config():
    c = base_config()
    c.pipeline = "cohort"
    c.domains = ["digits"]
    c.model.backbone = "small_cnn"
    c.model.backbone_kwargs = {"width": 0.25}
    c.model.weights = ""
    c.model.embedding_dim = 64
    c.model.image_size = 28
    c.model.resize_size = 32
    c.train.loss = "triplet_distance_weighted"
    c.train.loss_kwargs = {"margin": 0.2}
    c.train.learning_rate = 1e-3
    c.train.classes_per_batch = 12
    c.train.images_per_class = 5
    c.train.steps = 600
    c.train.steps_per_epoch = 200
    c.eval.batch_size = 512
    c.cohort.methods = ["independent", "md", "md+td", "md+vd", "md+td+vd"]
    c.cohort.warmup_epochs = 1.0
    c.cohort.export = ["md+td+vd/ensemble", "md+td+vd/member0"]
    return c
