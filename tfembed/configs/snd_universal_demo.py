"""Offline demo of the universal-embedding pipeline on the three demo domains shipped with tfembed.

Domains: handwritten digits (MNIST subset), clothing (Fashion-MNIST subset) and glyphs rendered
from real fonts — 28×28 grey images, class-disjoint train/test classes (tools/README.md).
Steps: one small-CNN specialist per domain (triplet semi-hard, c×k batches), evaluation of every
specialist on every domain (own gallery and fused gallery), report.json, SavedModel export.
The universal-distillation stage (SND/RKD, baselines) extends this recipe in the universal issue.

Command (offline, 2 CPU cores):
  tfembed-train --recipe snd_universal_demo
Expected result: see the README's demo table (specialists' own-domain Recall@1 on the demo
domains, measured with this recipe).
"""

from tfembed.configs._base import base_config

SMOKE = {
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "eval.batch_size": 256,
    "eval.max_images_per_split": 300,
}


def get_config():
    c = base_config()
    c.domains = ["digits", "fashion", "glyphs"]
    c.model.backbone = "small_cnn"
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
    c.eval.random_init_baseline = True
    return c
