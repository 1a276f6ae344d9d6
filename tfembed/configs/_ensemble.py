"""Shared set-up of the paper-scale attention-ensemble recipes (a private module: not a recipe)."""

from tfembed.configs._base import PAPER_SMOKE, base_config
from tfembed.configs._method import as_config
from tfembed.ensemble.config import EnsembleMethod

# Smoke settings of the ensemble recipes: PAPER_SMOKE with a quarter-width small CNN (32-d
# ensembles: 4 dimensions per learner for ABE-8), pair batches of 8, no export and no
# diagnostics (the demo's smoke run exercises both).
PAPER_ENSEMBLE_SMOKE = dict(PAPER_SMOKE, **{
    "model.backbone": "small_cnn",
    "model.backbone_kwargs": {"width": 0.25},
    "model.embedding_dim": 32,
    "ensemble.pair_anchors": 4,
    "ensemble.pair_positives": 2,
    "ensemble.diagnostics": False,
    "export.enabled": False,
})

# Recall@K cut-offs of 002's tables per dataset.
KS = {"cars": [1, 2, 4, 8], "cub": [1, 2, 4, 8], "sop": [1, 10, 100, 1000],
      "inshop": [1, 10, 20, 30, 40, 50]}


def paper_002(domain, methods):
    """002 §4: ImageNet-initialised network, ensemble embedding 512 (512/M per learner),
    contrastive loss (margin 1) per learner + divergence loss (margin 1, λ_div = 1), SGD with
    momentum 0.9, batch 64 = 32 random images + a positive partner for the first 16 and a
    negative one for the next 16, 256 → random 224 crop + flip, Recall@K every 1000 iterations.

    GoogLeNet is not in Keras: Inception v3 (``inception_v3``) is its closest relative, split the
    same way — S = input → mixed3 (the reduction to stride 16, as GoogLeNet's inception(3b) +
    pool3), the attention trunk C = mixed4 → mixed7 (the four stride-16 modules, as
    inception(4a)–(4e); already stride-free), A' = 1×1 convolution to S's 768 channels +
    sigmoid, G = mixed4 → mixed10 → average pooling → Dense(512/M) → L2.

    Loss: ``contrastive_pairs`` — Eq. 10 on the 32 sampled (image, partner) pairs of the batch,
    the siamese form that goes with the paper's pair sampling (``--set train.loss=contrastive``
    takes every pair of the batch instead). Not in the paper, our choices: the learning rate
    (002 tunes it on a validation set and does not publish it): 1e-3; 20k iterations.
    """
    c = base_config("ensemble")
    c.domains = [domain]
    c.model.backbone = "inception_v3"
    c.model.embedding_dim = 512
    c.train.loss = "contrastive_pairs"
    c.train.loss_kwargs = {"margin": 1.0}
    c.train.optimizer = "sgd"
    c.train.momentum = 0.9
    c.train.learning_rate = 1e-3
    c.train.steps = 20000
    c.train.steps_per_epoch = 1000
    c.eval.ks = list(KS[domain])
    c.ensemble.methods = as_config(EnsembleMethod, methods)
    c.ensemble.export = [EnsembleMethod.of(m).name for m in methods]
    # 002 §4: "We evaluate the model after every 1000 iteration and report the results for the
    # iteration with highest Recall@1": the <method>/ensemble@best row (beside the final model's).
    c.ensemble.eval_every_steps = 1000
    return c
