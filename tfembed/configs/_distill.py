"""Shared set-ups of the paper-scale distillation recipes (a private module: not a recipe)."""

from tfembed.configs._base import PAPER_SMOKE, base_config

# Smoke settings of the distillation recipes: PAPER_SMOKE with small CNNs for teacher and
# student (the specialist recipes' smoke runs already build the ResNets) and no SavedModel export
# (the demo recipes' smoke runs export; here it would only add seconds to every recipe).
PAPER_DISTILL_SMOKE = dict(PAPER_SMOKE, **{
    "export.enabled": False,
    "model.backbone": "small_cnn",
    "model.backbone_kwargs": {"width": 0.25},
    "teacher.backbone": "small_cnn",
    "teacher.backbone_kwargs": {"width": 0.25},
    "teacher.weights": "",
    "teacher.image_size": 32,
    "teacher.resize_size": 36,
    "teacher.embedding_dim": 128,
    "model.embedding_dim": 128,
    "distill.hint_layers": [["stage3", "stage3"]],
    "distill.attention_layers": [["stage3", "stage3"]],
    "distill.kd_classifier_epochs": 1,
    "eval.every_n_epochs": 1000,
})

# 001 footnote 2: each ResNet-18 stage output is matched with the last-but-one layer of the
# ResNet-101 stage (the 3×3 conv of its last bottleneck block), which has the same channels
# (64/128/256/512) and spatial size.
RESNET101_TO_RESNET18 = [
    ["conv2_block3_2_relu", "stage1"],
    ["conv3_block4_2_relu", "stage2"],
    ["conv4_block23_2_relu", "stage3"],
    ["conv5_block3_2_relu", "stage4"],
]


def paper_001(domain, methods):
    """001 §5.1: ResNet-101 teacher → ResNet-18 student, both ImageNet-initialised, 512-d,
    triplet loss with hard negative mining, Adam 1e-5, batch 32, 256 → random 224 crop + flip.

    Not in the paper, our choices: the triplet margin (0.2, FaceNet's), the step budget
    (20k steps ≈ 110 CUB epochs), λ = 1 (cross-validated in 001, not published; its Fig. 4
    shows the relative teacher flat over a wide λ range), μ = 0.01 for the hint (feature-map
    norms are in the hundreds), κ = 1.
    """
    c = base_config()
    c.pipeline = "distill"
    c.domains = [domain]
    c.teacher.backbone = "resnet101"
    c.teacher.embedding_dim = 512
    c.model.backbone = "resnet18"
    c.model.embedding_dim = 512
    c.train.loss = "triplet_hard"
    c.train.loss_kwargs = {"margin": 0.2}
    c.train.classes_per_batch = 8
    c.train.images_per_class = 4
    c.train.learning_rate = 1e-5
    c.train.steps = 20000
    c.eval.ks = [1, 2, 4, 8, 16]
    c.distill.methods = list(methods)
    c.distill.hint_layers = [list(p) for p in RESNET101_TO_RESNET18]
    c.distill.attention_layers = [list(p) for p in RESNET101_TO_RESNET18]
    c.distill.export = [m for m in methods if m != "ml"][-1:]
    if domain == "sop":
        c.eval.ks = [1, 10, 100, 1000]  # 001 Table 2
    return c


def paper_004(methods):
    """004 on CUB-200-2011 (Table 4). Inception-BN → NIN-BN is not in Keras: the nearest
    registered pair is ResNet-50 (teacher, ~Inception-BN's depth and accuracy class) →
    ResNet-18 (student, a small ImageNet network like NIN-BN).

    004 §4 settings: L2-normalised embedding after global pooling + FC; large-margin softmax
    (margin 3, weight 1) on the embedding, verification (weight 5), triplet (margin 0.9, weight
    0.1), DarkRank α = 3, β = 3, λ = 2; SGD momentum 0.9, lr 5e-4 (student) / 0.01 (teacher),
    weight decay 1e-4, 100 epochs with ×0.1 at epochs 50 and 75, batch 8 (4 classes × 2 images
    here), 256 → random 224 crop + flip. The embedding size is not given: 128. Our verification
    head is a logistic classifier on (f_i − f_j)² without the paper's 0.9 margin.
    """
    c = base_config()
    c.pipeline = "distill"
    c.domains = ["cub"]
    c.teacher.backbone = "resnet50"
    c.teacher.embedding_dim = 128
    c.model.backbone = "resnet18"
    c.model.embedding_dim = 128
    c.train.loss = "triplet_semihard"
    c.train.loss_kwargs = {"margin": 0.9}
    c.train.classes_per_batch = 4
    c.train.images_per_class = 2
    c.train.optimizer = "sgd"
    c.train.learning_rate = 5e-4
    c.train.weight_decay = 1e-4
    c.train.steps = 73300  # 100 epochs of the 5864 CUB training images in batches of 8
    c.train.steps_per_epoch = 733
    c.train.lr_drops = [0.5, 0.75]
    c.distill.teacher_train = {"learning_rate": 0.01}
    c.distill.metric_weight = 0.1
    c.distill.heads = {"lsoftmax": {"weight": 1.0, "margin": 3},
                       "verification": {"weight": 5.0}}
    c.distill.methods = list(methods)
    c.distill.export = [m for m in methods if m != "ml"][-1:]
    c.eval.ks = [1, 2, 4, 8]
    return c
