"""Shared set-up of the paper-scale DM² recipes (a private module: not a recipe)."""

from tfembed.cohort.config import CohortMethod
from tfembed.configs._base import PAPER_SMOKE, base_config
from tfembed.configs._method import as_config

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
    p_l = 2^-(l-1), each member its own random crop + flip of the batch (view diversity).

    Not in the paper, our choices: the triplet margin (0.2, Wu et al.'s), the step budget
    (8000 steps ≈ 160 CUB epochs), members on one device each (placement "devices").

    Weight decay is coupled (``train.weight_decay_mode = "coupled"``: 5e-4 · w added to the
    gradient before Adam's moments), because 003 trains in PyTorch, whose ``Adam(weight_decay=)``
    is that L2 term (DESIGN §6), not Keras' decoupled AdamW-style decay. Every parameter decays
    (PyTorch decays every parameter given to the optimizer; 003 publishes no code saying
    otherwise), so ``train.weight_decay_exclude`` stays empty.

    Augmentation and input size: 003 §4.2 "follow[s] the image pre-processing and the
    augmentation family of ... HORDE, which uses 256×256 random crop from randomly resized
    images and appl[ies] a random horizontal flip"; 003 publishes no code, so HORDE's public
    code decided the details (pierre-jacob/ICCV2019-Horde: train.py, config.json,
    kerastools/utils/image_processing.py, kerastools/image_generators/test_generator.py):

    * training, ``train.crop = "multi_resolution"``: the image is resized, aspect ratio kept,
      so that its longer side is uniform in [int(0.8·256), int(1.8·256)] = [204, 460] px
      (``MultiResolution``, ``multi_res_min_ratio`` 0.8 / ``multi_res_max_ratio`` 1.8,
      ``prob_keep_ratio`` 1), then a uniformly placed 256×256 crop, centred on black along a
      side shorter than 256 (``RandomCrop``), then a horizontal flip with probability 0.5.
      This is not torchvision's RandomResizedCrop (``train.crop = "random_resized"``): HORDE
      never changes the aspect ratio and its crops cover at least ~31 % of a square image;
    * input 256 (``train_im_size`` [256, 256]): ``model.image_size = 256``;
    * evaluation (``TestGenerator(..., ratio=1.144, keep_aspect_ratio=False)``, ``test_im_size``
      [256, 256]): resize to ceil(256 · 1.144) = 293 × 293, aspect not kept, then the central
      256 × 256 crop: ``model.resize_size = 293`` with our evaluation transform (the same
      steps; bilinear anti-aliased resizing where HORDE uses Lanczos).
    """
    c = base_config("cohort")
    c.domains = [domain]
    c.model.backbone = "resnet50"
    c.model.embedding_dim = 512
    c.model.image_size = 256    # 003 / HORDE: 256×256 inputs
    c.model.resize_size = 293   # HORDE's test view: 293×293 resize → 256 centre crop
    c.train.crop = "multi_resolution"
    c.train.crop_resize_range = [0.8, 1.8]   # HORDE config.json
    c.train.loss = "triplet_distance_weighted"
    c.train.loss_kwargs = {"margin": 0.2}
    c.train.optimizer = "adam"
    c.train.learning_rate = 3e-5
    c.train.weight_decay = 5e-4
    c.train.weight_decay_mode = "coupled"
    small = domain in ("cub", "cars")
    c.train.classes_per_batch = 24 if small else 60
    c.train.images_per_class = 5 if small else 2
    c.train.steps = 8000
    c.train.steps_per_epoch = 50 if small else 500
    c.eval.every_n_epochs = 10 if small else 1
    c.eval.ks = list(KS[domain])
    c.cohort.methods = as_config(CohortMethod, methods)
    c.cohort.freeze_batchnorm = small
    prefix = CohortMethod.of(methods[0]).row_prefix
    c.cohort.export = [f"{prefix}/ensemble", f"{prefix}/member0"]
    return c
