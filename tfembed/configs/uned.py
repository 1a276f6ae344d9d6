"""UnED (Ypsilantis et al., ICCV 2023): paper 000's universal embedding on the 8-domain benchmark.

UnED's protocol decides what the benchmark fixes — the 8 domains and their splits
(``tfembed.data.uned``), a 64-d embedding, 224-px ViT-B/16 inputs, R@1 / mMP@5 on the merged
index of the test splits (``tfembed.evaluation.uned``). Paper 000 decides its method: triplet
semi-hard specialists, SND (σ = 0.25) on domain-specific batches of 32 classes × 4 images,
Adam 1e-5. The network is KerasHub's ``vit_base_patch16_224_imagenet`` (ImageNet-21k
pre-trained, ImageNet-1k fine-tuned at 224 px: the "IN" checkpoint of the UnED authors'
configs; ``--set model.backbone=hub:clip_vit_base_patch16`` gives their "CLIP" one).

Where our run differs from the UnED authors' baselines (``iccv_configs`` in
nikosips/Universal-Image-Embeddings): they train a NormFace classifier (scale 16) jointly on all
domains with AdamW (weight decay 1e-6), head lr 1e-3 and backbone lr 1e-5 after 2 head-only
epochs, 7 epochs of 128 images; evaluation resizes the short side to 224 and centre-crops, where
tfembed resizes to 256 and centre-crops 224 (the training crop's ratio).

Arguments: snd (``snd_uned``), eval (``uned_eval``), specialist_<domain> for cars, sop, inshop,
inat, met, gldv2, food2k, rp2k (``specialist_uned_<domain>``). Data: ``--set data_dir=ROOT``
with UnED's ``info_files/`` and images under ROOT (docs/uned.md says how to get them).
"""

import functools

from tfembed.configs._base import PAPER_SMOKE, base_config
from tfembed.configs._recipe import Recipe
from tfembed.data.uned import UNED_DOMAINS
from tfembed.universal.config import distilled

#: KerasHub preset of the UnED authors' "IN" ViT-B/16 (i21k → IN-1k at 224 px).
UNED_BACKBONE = "hub:vit_base_patch16_224_imagenet"

# Published results to compare with (not reproduced here: see docs/uned.md): UnED's specialist
# ("oracle") and universal baselines in the ICCV 2023 paper (arXiv 2309.01858), and UDON's
# (arXiv 2406.08332), merged-index test R@1 and mMP@5 per domain and their mean.
_PUBLISHED = ("UnED's specialist and universal ViT-B/16 baselines (Ypsilantis et al., ICCV 2023, "
              "arXiv 2309.01858, the merged-index tables) and UDON's (arXiv 2406.08332)")


def uned_model(block, backbone=UNED_BACKBONE):
    """UnED's network: ViT-B/16 at 224 px (256 resize) → 64-d, the benchmark's embedding size
    (the Google Universal Image Embedding challenge's limit)."""
    block.backbone = backbone
    block.weights = "imagenet"
    block.embedding_dim = 64
    block.image_size = 224
    block.resize_size = 256
    block.backbone_kwargs = {}


def _uned_config(pipeline, domains):
    c = base_config(pipeline)
    c.domains = [f"uned:{d}" for d in domains]
    uned_model(c.model)
    # 000's specialist training (triplet semi-hard, 32 × 4, Adam 1e-5, 20k steps); the per-epoch
    # monitor is Recall@1 on the val splits, every 10k steps (UnED's val sets are large).
    c.train.steps = 20000
    c.train.steps_per_epoch = 2000
    c.eval.ks = [1]
    c.eval.batch_size = 256
    c.eval.every_n_epochs = 5
    c.eval.uned_evaluation = "test"
    return c


def _snd():
    """Paper 000's method on UnED: 8 specialists → one 64-d universal ViT-B/16 by SND.

    Specialists: one per UnED domain (trained as ``specialist_uned_<domain>``, or given with
    ``--set teachers=<8 files in UnED's domain order>``: .keras or SavedModels of any size,
    dimension and normalisation, DESIGN §7). Student: ViT-B/16 (KerasHub, ImageNet) → 64-d,
    SND σ = 0.25 on domain-specific batches (32 classes × 4 images, a domain ∝ its training
    images), Adam 1e-5, 160k steps: 000's budget parity (the 8 specialists' 20k steps together),
    close to the UnED baselines' 7 epochs of 128 images (≈ 155k steps). Steps per epoch 1000 =
    UDON's sampler interval, so ``--set universal.policy=dynamic`` is UDON's dynamic domain
    sampling. Evaluation: UnED's test protocol, separate and merged index (R@1, mMP@5, mAP@5)
    for the specialists and the student.

    Command:
      tfembed-train --recipe snd_uned --set data_dir=/data/uned
      tfembed-train --recipe snd_uned --set data_dir=/data/uned \\
          --set teachers=cars.keras,sop.keras,inshop.keras,inat.keras,met.keras,gldv2.keras,\\
    food2k.keras,rp2k.keras
    Expected result: not measured by tfembed (2.8M training images; a run needs GPUs).
    Compare the merged-index table with UnED's specialist and universal ViT-B/16 baselines
    (Ypsilantis et al., ICCV 2023, arXiv 2309.01858) and UDON's (arXiv 2406.08332). 000's claim
    on UnED would be the student within a few points of each specialist's R@1 (separate mode).
    """
    c = _uned_config("universal", UNED_DOMAINS)
    c.universal.methods = [distilled("snd")]
    c.universal.export = ["snd"]
    c.universal.steps = 160000
    c.universal.steps_per_epoch = 1000
    c.universal.diagnostics = False   # t-SNE and distance histograms of 1.4M images: no
    return c


def _specialist(domain):
    c = _uned_config("specialists", [domain])
    return c


def _about(domain):
    return (f"Specialist for UnED's {domain} domain: ViT-B/16 (KerasHub, ImageNet) → 64-d, "
            "triplet semi-hard (paper 000's specialist).\n\n"
            "Settings: 000's specialist training (32 classes × 4 images, Adam 1e-5, 20k steps) "
            "on UnED's settings (224-px crops of 256-px images, 64-d); evaluated by UnED's test "
            "protocol on its own domain (separate = merged with one domain).\n\n"
            f"Command:\n  tfembed-train --recipe specialist_uned_{domain} "
            "--set data_dir=/data/uned\n"
            "Expected result: not measured by tfembed (GPU scale); compare R@1 / mMP@5 with "
            f"the specialist rows of {_PUBLISHED}.\n")


def _eval():
    """UnED's evaluation of trained models (no training): each model at its own input sizes,
    R@1 / mMP@5 / mAP@5 on the 8 domains' test pairs, separate and merged index, with the
    per-domain mean (the benchmark's table).

    Models: ``--set models=a.keras,b/saved_model_dir`` (tfembed's or anyone's .keras files and
    SavedModels: the sizes they record are used); ``model_names`` names their rows.
    ``--set eval.uned_evaluation=val`` scores the validation pairs instead (model selection).
    ``--set domains=uned:cars,uned:sop`` evaluates a subset (the merged index is then theirs).

    Command:
      tfembed-train --recipe uned_eval --set data_dir=/data/uned --set models=runs/uned/snd.keras
    Expected result: a checkpoint of the UnED paper's baselines should give its published
    merged-index figures (Ypsilantis et al., ICCV 2023, arXiv 2309.01858; UDON, arXiv
    2406.08332); the metric code is tested against a brute-force transcription of the authors'
    knn_utils.py (DESIGN §8).
    """
    c = _uned_config("evaluate", UNED_DOMAINS)
    c.export.enabled = False
    return c


# Smoke runs (the miniature UnED layout of the tests): the small CNN, no pretrained weights,
# two steps; the real settings are checked by the dry runs with a ViT-B/16 stand-in preset.
_SMOKE = dict(PAPER_SMOKE, **{"model.backbone": "small_cnn", "eval.every_n_epochs": 1000})
_SMOKE_UNIVERSAL = dict(_SMOKE, **{"universal.steps": 2, "universal.steps_per_epoch": 2})

RECIPES = {
    "snd": Recipe("snd_uned", _snd, _SMOKE_UNIVERSAL),
    "eval": Recipe("uned_eval", _eval, _SMOKE),
    **{f"specialist_{d}": Recipe(f"specialist_uned_{d}", functools.partial(_specialist, d),
                                 _SMOKE, about=_about(d))
       for d in UNED_DOMAINS},
}
