"""Shared defaults of all recipes (a private module: not a recipe itself)."""

import ml_collections

from tfembed.cohort import config as cohort_config
from tfembed.distill import config as distill_config
from tfembed.ensemble import config as ensemble_config
from tfembed.universal import config as universal_config

# Smoke settings shared by the paper-scale recipes: tiny images, two steps, no pretrained
# weights, small batches — the whole pipeline runs, nothing it produces is meaningful.
PAPER_SMOKE = {
    "model.weights": "",
    "model.image_size": 32,
    "model.resize_size": 36,
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "train.classes_per_batch": 4,
    "train.images_per_class": 2,
    "eval.batch_size": 16,
}


# Smoke settings of the paper-scale universal recipes: PAPER_SMOKE plus a small CNN instead of
# ResNet50 (the specialist recipes' smoke runs already build ResNet50; a universal recipe trains
# up to ten models) and tiny universal stages.
PAPER_UNIVERSAL_SMOKE = dict(PAPER_SMOKE, **{
    "model.backbone": "small_cnn",
    "universal.steps": 2,
    "universal.steps_per_epoch": 2,
    "universal.pca_max_images": 64,
    "universal.tsne_max_points": 40,
    # The per-epoch Recall@K callback and the diagnostics are exercised by the demo's smoke run;
    # here they would only multiply the run time of the many paper recipes.
    "eval.every_n_epochs": 1000,
    "universal.diagnostics": False,
})


def _universal_blocks():
    return [("universal", universal_config.defaults()),
            ("teacher_cache", distill_config.teacher_cache_defaults())]


def _distill_blocks():
    return [("teacher", distill_config.teacher_defaults()), ("distill", distill_config.defaults()),
            ("teacher_cache", distill_config.teacher_cache_defaults())]


#: The config blocks each pipeline adds to the common ones; each method family owns its blocks'
#: defaults (``tfembed/<family>/config.py``), so a recipe carries only its own pipeline's.
PIPELINE_BLOCKS = {
    "specialists": list,
    "universal": _universal_blocks,
    "self_distill": _universal_blocks,
    "distill": _distill_blocks,
    "ensemble": lambda: [("ensemble", ensemble_config.defaults())],
    "cohort": lambda: [("cohort", cohort_config.defaults())],
    # Evaluation only: the trained models to score (.keras / SavedModel) and their report names.
    "evaluate": lambda: [("models", []), ("model_names", [])],
}


def base_config(pipeline="specialists"):
    """The common blocks (data, model, train, eval, export) and ``pipeline``'s own."""
    c = ml_collections.ConfigDict()
    c.recipe = ""
    c.pipeline = pipeline
    c.smoke = False
    c.seed = 0
    # Several seeds (e.g. --set seeds=0,1,2): the recipe runs once per seed in seed_<s>/ and
    # report.json holds each row's mean over the seeds with "<metric>_std" and "seeds" ([]: one
    # run with ``seed``).
    c.seeds = []
    # Distribution: "default" (MirroredStrategy over all GPUs when there are several, else one
    # device), "mirrored", "multi_worker" (MultiWorkerMirroredStrategy from TF_CONFIG) or
    # "one_device". Batch sizes in recipes are global batches.
    c.strategy = "default"
    # Numerics: float32 | mixed_bfloat16 | mixed_float16 (losses are computed in float32 either
    # way; mixed_float16 adds dynamic loss scaling); jit_compile: XLA-compile the train step.
    c.precision = "float32"
    c.jit_compile = False
    # Debugging: run every train / predict step eagerly (Keras' run_eagerly; slow per step, but
    # no graph tracing, which costs ~35 s per ResNet-50 step function on 2 CPU cores; the
    # paper recipes' dry-run tests use it).
    c.run_eagerly = False
    # Root that holds the datasets (CUB_200_2011/, Stanford_Online_Products/, ...). Empty: the
    # TFEMBED_DATA_DIR environment variable, else ~/tensorflow_datasets/downloads/manual.
    c.data_dir = ""
    c.domains = []
    # Trained specialists (.keras files or SavedModel dirs), one per domain; empty: train them.
    c.teachers = []
    c.model = ml_collections.ConfigDict(dict(
        backbone="resnet50", embedding_dim=128, weights="imagenet", image_size=224,
        resize_size=256, backbone_kwargs={},
        # BatchNorm layers frozen (inference mode, not trained): tfembed.models.build_embedder.
        freeze_batchnorm=False))
    c.train = ml_collections.ConfigDict(dict(
        loss="triplet_semihard", loss_kwargs={"margin": 0.2}, classes_per_batch=32,
        images_per_class=4, optimizer="adam", learning_rate=1e-5, weight_decay=0.0,
        # "decoupled": Keras' weight_decay (shrink after the update, AdamW-style); "coupled":
        # L2 added to the gradient, g + wd·w, as PyTorch / MXNet / Caffe weight_decay means
        # (DESIGN §6); weight_decay_exclude: variable-name substrings that do not decay in
        # coupled mode (MXNet decays only *_weight / *_gamma: ["bias", "beta"]).
        weight_decay_mode="decoupled", weight_decay_exclude=[],
        steps=20000, steps_per_epoch=500, flip=True, crop_boxes=False, lr_drops=[],
        lr_drop_factor=0.1,
        # The training crop (tfembed.data.transforms.train_transform): "resize_crop" (resize
        # to model.resize_size → random model.image_size crop; 000/001), "random_resized"
        # (torchvision RandomResizedCrop: crop_scale = area fraction, crop_ratio = width /
        # height; torchvision's defaults) or "multi_resolution" (HORDE's, which 003 follows:
        # longer side resized to crop_resize_range × image_size, aspect kept, random crop;
        # HORDE's config.json range). flip: random horizontal flip, only on domains whose
        # mirror image keeps its class (Domain.hflip: never on the text domains).
        crop="resize_crop", crop_scale=[0.08, 1.0], crop_ratio=[3.0 / 4.0, 4.0 / 3.0],
        crop_resize_range=[0.8, 1.8],
        # Plain embedders (specialists, fused baselines): metric loss on the global batch under
        # a multi-replica strategy (False: on each replica's slice).
        global_batch=True,
        # Steps between resumable training-state checkpoints (0: once per epoch).
        checkpoint_every=0))
    # uned_evaluation: which of UnED's query/index pairs scores UnED domains (uned:<domain>):
    # "test" (the benchmark's numbers) or "val" (model selection).
    c.eval = ml_collections.ConfigDict(dict(ks=[1, 2, 4, 8], batch_size=128, every_n_epochs=1,
                                            max_images_per_split=0, random_init_baseline=False,
                                            fused=True, uned_evaluation="test"))
    for key, block in PIPELINE_BLOCKS[pipeline]():
        c[key] = block
    c.export = ml_collections.ConfigDict(dict(enabled=True, root=""))
    return c


def paper_universal(domains):
    """000 §5.2: the specialists of ``domains`` (paper settings), then every method of Table 2."""
    c = base_config("universal")
    c.domains = list(domains)
    return c


def paper_specialist(domain):
    """000 §5: ResNet50 (ImageNet), 128-d, batch 128 = 32×4, triplet semi-hard, Adam 1e-5."""
    c = base_config()
    c.domains = [domain]
    return c


def demo_model(block, width, embedding_dim=128):
    """Sets a ``model``/``teacher`` block to the demo domains' network: a small CNN of channel
    ``width`` on 28-px crops of 32-px images, no pretrained weights."""
    block.backbone = "small_cnn"
    block.backbone_kwargs = {"width": width}
    block.weights = ""
    block.embedding_dim = embedding_dim
    block.image_size = 28
    block.resize_size = 32
    block.freeze_batchnorm = False


# The demos' pretrained network (issue 17: the papers all fine-tune an ImageNet network): the
# demo domains' 28-px grey images are upscaled to 73 px and centre / random-cropped to 64 (the
# 256/224 ratio), where EfficientNet-Lite0's stride-32 map is 2×2. Adam 1e-4: our choice for
# fine-tunes of a few hundred steps (the papers' 1e-5 runs for tens of thousands).
DEMO_IMAGE_SIZE, DEMO_RESIZE_SIZE, DEMO_LEARNING_RATE = 64, 73, 1e-4


# Smoke runs of the pretrained demos: the same network on 32-px crops (a 1×1 map at stride 32),
# a quarter of the 64-px cost; every block that holds a pretrained_demo_model.
PRETRAINED_DEMO_SMOKE = {"model.image_size": 32, "model.resize_size": 36}
PRETRAINED_TEACHER_SMOKE = {"teacher.image_size": 32, "teacher.resize_size": 36}


def pretrained_demo_model(block, stages=4, embedding_dim=128):
    """Sets a ``model``/``teacher`` block to the demos' ImageNet-pretrained EfficientNet-Lite0
    (converted offline, ``tfembed.models.efficientnet_lite``) on 64-px crops, BatchNorm frozen.

    ``stages`` < 4: the same pretrained network cut after that stage (``stages=2``: the trunk up
    to stride 8, ``block4_out``), the compact student where a paper's student is smaller than
    its teacher. BatchNorm frozen (inference mode, statistics and affine kept): with it unfrozen,
    batches of 32 images of one domain replaced the ImageNet statistics and a 600-step
    fine-tune ended *below* the untrained network on fashion (81.8 vs 91.7 R@1) and at 43.4 on
    digits (87.8 frozen); docs/papers/000_universal.md, "The pretrained demo"."""
    block.backbone = "efficientnet_lite0"
    block.backbone_kwargs = {"stages": stages} if stages != 4 else {}
    block.weights = "imagenet"
    block.embedding_dim = embedding_dim
    block.image_size = DEMO_IMAGE_SIZE
    block.resize_size = DEMO_RESIZE_SIZE
    block.freeze_batchnorm = True

