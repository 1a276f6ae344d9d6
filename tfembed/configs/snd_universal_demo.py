"""Offline demo of paper 000's whole pipeline on the three demo domains shipped with tfembed.

Domains: handwritten two-digit numbers 00–99 composed from MNIST digits (100 classes), clothing
(Fashion-MNIST subset, 10 classes) and glyphs rendered from 149 real fonts (48 characters) —
28×28 grey images, class-disjoint train/test classes (tools/README.md).
Steps: a small-CNN specialist per domain (triplet semi-hard, 8×4 batches) → concat_pca →
fused triplet baselines (naive, DS, BAL) → universal RKD → universal SND (domain-specific
batches) → every model evaluated per domain and on the fused gallery (report.json, Table-2 style
printout) → diagnostics PNGs → SavedModel export of universal/snd and universal/rkd.

Command (offline, 2 CPU cores):
  tfembed-train --recipe snd_universal_demo --workdir runs/demo
Expected result: the tables of docs/papers/000_universal.md (measured with this recipe, about 8 minutes on 2
cores): universal/snd within 2 R@1 points of the fashion and glyphs specialists on the fused
gallery but 3.1 below the digits specialist, and only just above concat_pca and naive fused
triplet on average (91.4 vs 91.0 / 91.1).
"""

from tfembed.configs._base import base_config, universal_defaults

SMOKE = {
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "universal.steps": 2,
    "universal.steps_per_epoch": 2,
    "universal.pca_max_images": 64,
    "universal.tsne_max_points": 50,
    "eval.batch_size": 256,
    "eval.max_images_per_split": 150,
}


def get_config():
    c = base_config()
    c.pipeline = "universal"
    c.domains = ["digits", "fashion", "glyphs"]
    c.model.backbone = "small_cnn"
    # Half-width small CNN (16-32-64-128 channels): ~3× faster steps than full width on 2 CPU
    # cores, which buys the universal models a larger step budget inside the 15-minute demo.
    c.model.backbone_kwargs = {"width": 0.5}
    c.model.weights = ""
    c.model.embedding_dim = 128
    c.model.image_size = 28
    c.model.resize_size = 32
    c.train.classes_per_batch = 8
    c.train.images_per_class = 4
    c.train.learning_rate = 1e-3
    c.train.steps = 600
    c.train.steps_per_epoch = 200
    c.universal = universal_defaults()
    # Each universal model (fused baselines and distilled students alike) gets 1.5 specialists'
    # budget for three domains — what fits in the 15-minute demo.
    c.universal.steps = 900
    c.universal.steps_per_epoch = 150
    c.universal.tsne_max_points = 400
    c.eval.batch_size = 512
    c.eval.random_init_baseline = True
    return c
