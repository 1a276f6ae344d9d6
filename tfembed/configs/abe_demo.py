"""Offline reproduction of paper 002's Tables 1-2 and Fig. 5-6 on the demo digits domain.

Domain: handwritten two-digit numbers 00–99 (50 training classes, 50 test classes, 28×28).
Network: a half-width small CNN (16-32-64-128 channels), split as 002 splits GoogLeNet: S = stage 1–2
(7×7×32), attention trunk C = a stride-free copy of stage 3, G = stage 3–4 → pooling →
Dense(128/M) → L2. Every model: 128-d ensemble, contrastive loss (margin 1) per learner on the sampled pairs, SGD
momentum 0.9, batches of 64 in 002's pairs (32 images + 16 positive and 16 negative partners),
same step budget:

* ``mheads1``     one network (002's 1-head): the single-model baseline;
* ``mheads4``     4-heads: one S, four separate G_m (Fig. 1(a));
* ``abe4_nodiv``  ABE-4 without the divergence loss (Table 2);
* ``abe4``        ABE-4 with it (λ_div = 1).

Command (offline, 2 CPU cores):
  tfembed-train --recipe abe_demo --workdir runs/abe_demo
Recall@K of each ensemble every 100 steps (``ensemble.eval_every_steps``; 002: every 1000
iterations): the report adds ``<method>/ensemble@best``, the evaluation with the highest R@1, as
002 reports; it selects on the test set, so it is optimistic beside the ``final`` rows.
Expected result: the table of docs/papers/002_abe.md (measured with this recipe) and
``diagnostics/similarity_histograms.png`` (self-pair similarity near 1 without the divergence
loss, lower with it), ``diagnostics/attention_masks_abe4.png``.
"""

from tfembed.configs._base import base_config

# Smoke: 2 steps of two small ensembles, with the diagnostics and the export (the paper
# recipes' smoke runs skip both).
SMOKE = {
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "eval.max_images_per_split": 120,
    "ensemble.methods": ["abe2", "mheads2"],
    "ensemble.export": ["abe2"],
    "ensemble.pair_anchors": 8,
    "ensemble.pair_positives": 4,
    "ensemble.eval_every_steps": 1,
}


def get_config():
    c = base_config()
    c.pipeline = "ensemble"
    c.domains = ["digits"]
    c.model.backbone = "small_cnn"
    c.model.backbone_kwargs = {"width": 0.5}
    c.model.weights = ""
    c.model.embedding_dim = 128
    c.model.image_size = 28
    c.model.resize_size = 32
    c.train.loss = "contrastive_pairs"
    c.train.loss_kwargs = {"margin": 1.0}
    c.train.optimizer = "sgd"
    c.train.momentum = 0.9
    c.train.learning_rate = 0.01
    c.train.steps = 800
    c.train.steps_per_epoch = 200
    c.eval.batch_size = 512
    c.ensemble.methods = ["mheads1", "mheads4", "abe4_nodiv", "abe4"]
    c.ensemble.export = ["abe4"]
    c.ensemble.eval_every_steps = 100   # 002 evaluates every 1000 of its ~20k iterations
    return c
