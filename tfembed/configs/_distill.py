"""Shared set-ups of the paper-scale distillation recipes (a private module: not a recipe)."""

import math

from tfembed.configs._base import (
    DEMO_LEARNING_RATE,
    PAPER_SMOKE,
    PRETRAINED_DEMO_SMOKE,
    PRETRAINED_TEACHER_SMOKE,
    base_config,
    demo_model,
    pretrained_demo_model,
)
from tfembed.configs._method import as_config
from tfembed.distill import config as distill_config
from tfembed.distill.config import DistillMethod, student

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
    # The λ search of the 001 recipes: a grid of one value, i.e. no trial student (each costs a
    # few seconds of tracing, and the 001 recipes have ~25 searched methods); the selection
    # record is still written. rel_teacher_resnet18_cub's smoke run searches two values, and
    # tests/distill/test_lambda_search.py the rest (semi-supervised, views, the reduced teacher).
    "distill.lambda_search.grid": [1.0],
    "distill.lambda_search.steps": 1,
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


# λ of the authors' public code (yulu0724/EmbeddingDistillation, run_main.sh), with their
# reductions: absolute = mean over the batch of ‖s_i − t_i‖, relative = Frobenius norm of the
# [B, B] distance-matrix difference. Here they are only the fallback and the tie-breaker of the
# cross-validated λ (paper_001).
AUTHORS_LAMBDA = {"cub": {"abs": 1.0, "rel": 0.3}, "cars": {"abs": 1.5, "rel": 0.1},
                  "sop": {"abs": 2.0, "rel": 1.0}}

# λ grid of the 001 recipes: log-spaced (half decades), covering every value above.
LAMBDA_GRID_001 = [0.1, 0.3, 1.0, 3.0, 10.0]

# 001's training length, from the authors' code (DESIGN §6). run_main.sh trains with
# ``-BatchSize 32 -num_instances 8`` for "cub: 2000 epochs; car: 3000 epochs; product: 50
# epochs" (its comment; the command line says ``-epochs 2001`` and tests checkpoint 2000). An
# epoch of their RandomIdentitySampler (utils/, published only as .pyc; the open-reid sampler of
# the code base it comes from, bnu-wangxun/Deep_Metric utils/sampler.py) is num_instances images
# of every training class, class blocks in random order, cut by the DataLoader into batches of
# 32 with drop_last: floor(classes · 8 / 32) steps. Training classes (001 §5.1, the first half):
# CUB 100, Cars 98, SOP 11,318.
AUTHORS_EPOCHS_001 = {"cub": 2000, "cars": 3000, "sop": 50}
TRAIN_CLASSES_001 = {"cub": 100, "cars": 98, "sop": 11318}
AUTHORS_NUM_INSTANCES, AUTHORS_BATCH_SIZE = 8, 32


def authors_schedule_001(domain):
    """``(steps, steps_per_epoch, λ-trial steps)`` of a 001 recipe on ``domain``.

    ``steps`` is the authors' run: 25 × 2000 = 50,000 (CUB), 24 × 3000 = 72,000 (Cars),
    2829 × 50 = 141,450 (SOP). ``steps_per_epoch`` (our epoch: a checkpoint and a Recall@K
    evaluation) is a whole number of their epochs near 500 steps, so the run ends exactly at
    their length: 500 (20 epochs), 480 (20), 2829 (1). A λ trial trains a quarter of the run,
    rounded up to whole epochs: 12,500, 18,240, 36,777.
    """
    per_epoch = TRAIN_CLASSES_001[domain] * AUTHORS_NUM_INSTANCES // AUTHORS_BATCH_SIZE
    steps = AUTHORS_EPOCHS_001[domain] * per_epoch
    steps_per_epoch = per_epoch * max(1, 500 // per_epoch)
    trial_steps = math.ceil(steps / 4 / steps_per_epoch) * steps_per_epoch
    return steps, steps_per_epoch, trial_steps


def _last_teacher_student(methods):
    """The export of a paper recipe: its last student taught by the teacher (not plain ``ml``)."""
    names = [DistillMethod.of(m).name for m in methods]
    return [n for n in names if n != "ml"][-1:]


def paper_001(domain, methods):
    """001 §5.1: ResNet-101 teacher → ResNet-18 student, both ImageNet-initialised, 512-d,
    triplet loss with hard negative mining, Adam 1e-5, batch 32, 256 → random 224 crop + flip.

    λ (001 Eq. 7) is chosen by cross-validation, as 001 §4 says ("learned by cross
    validation") and DESIGN §6 requires (``distill.lambda_search``, see
    ``tfembed.distill.runner.LambdaSearch``): 20 % of the *training* classes are held out
    (001 §5.1 divides the training set 80/20; whole classes here, seeded), one ResNet-18 per λ
    of ``LAMBDA_GRID_001`` is trained on the other 80 % for a quarter of the run's steps
    (``authors_schedule_001``: 12,500 on CUB) with the run's teacher,
    the λ with the best validation Recall@1 wins, and the real student is trained on the whole
    training split with it. The choice, the grid and every validation R@1 are in report.json
    under "selection". Loss reductions (001 is silent; the authors' code decides, DESIGN §6):
    relative = Frobenius norm of the distance-matrix difference (``aggregation="frobenius"``),
    absolute = mean of the per-image norms (DESIGN §4's mean, which their code also computes).
    ``distill.weights`` holds the authors' λ for the domain (``AUTHORS_LAMBDA``): used with
    ``--set distill.lambda_search.terms=[]`` and to break ties of the search.

    Training, and which source decided each setting (DESIGN §6):

    * The paper (001 §5.1): the networks, 512-d, ImageNet initialisation, a triplet loss "with
      hard negative mining", Adam at 1e-5, mini-batches of 32, 256 → random 224 crop + flip,
      a fixed number of epochs.
    * The authors' code (yulu0724/EmbeddingDistillation), where the paper is silent or differs:
      the triplet loss is batch-hard with margin 0 (``losses/triplet.py``: hardest positive and
      hardest negative per anchor, ``TripletLoss(margin=0)``, built by ``losses.create`` in
      ``train_distillation.py`` without a margin): ``train.loss = "triplet_batch_hard"``; a
      batch is 4 classes × 8 images (``run_main.sh``: ``-num_instances 8 -BatchSize 32``);
      Adam's ``weight_decay`` 2e-4 (``train_distillation.py``'s default), PyTorch's coupled L2
      on every parameter: ``weight_decay_mode = "coupled"``, nothing excluded (its
      ``lr_mult`` entries are not read by ``torch.optim.Adam``: one learning rate for all
      layers, as here); the training length, 2000 / 3000 / 50 epochs on CUB / Cars / SOP
      (``run_main.sh``), in steps by ``authors_schedule_001``: 50,000 / 72,000 / 141,450; on
      SOP the student's learning rate is 1e-6 (``run_main.sh``: "1e-06 for products").
    * Our choices: the teacher is trained here with the ``train`` block (the authors load a
      separately trained checkpoint whose training is not published), so it gets the same loss,
      batches, decay and steps; on SOP it keeps the paper's 1e-5 (``distill.teacher_train``),
      as the 1e-6 of ``run_main.sh`` is the distillation script's. The λ-trial length (a
      quarter of the run, so a 5-value search costs about 1.25 students per method), the
      evaluation / checkpoint period (``steps_per_epoch``, see ``authors_schedule_001``),
      μ = 0.01 for the hint (feature-map norms are in the hundreds) and κ = 1 (not searched;
      the authors' code has no hint or attention term).
    """
    c = base_config("distill")
    c.domains = [domain]
    c.teacher.backbone = "resnet101"
    c.teacher.embedding_dim = 512
    c.model.backbone = "resnet18"
    c.model.embedding_dim = 512
    steps, steps_per_epoch, trial_steps = authors_schedule_001(
        domain if domain in AUTHORS_EPOCHS_001 else "cub")
    c.train.loss = "triplet_batch_hard"            # authors' losses/triplet.py
    c.train.loss_kwargs = {"margin": 0.0}          # TripletLoss(margin=0), their default
    c.train.classes_per_batch = 4                  # run_main.sh: -BatchSize 32
    c.train.images_per_class = 8                   #   -num_instances 8
    c.train.learning_rate = 1e-6 if domain == "sop" else 1e-5   # run_main.sh's LR comment
    c.train.weight_decay = 2e-4                    # train_distillation.py --weight-decay
    c.train.weight_decay_mode = "coupled"          # torch.optim.Adam weight_decay: L2 on g
    c.train.weight_decay_exclude = []              # PyTorch decays every parameter
    c.train.steps = steps
    c.train.steps_per_epoch = steps_per_epoch
    if domain == "sop":
        c.distill.teacher_train = {"learning_rate": 1e-5}   # the paper's; see the docstring
    c.eval.ks = [1, 2, 4, 8, 16]
    c.distill.methods = as_config(DistillMethod, methods)
    c.distill.hint_layers = [list(p) for p in RESNET101_TO_RESNET18]
    c.distill.attention_layers = [list(p) for p in RESNET101_TO_RESNET18]
    c.distill.export = _last_teacher_student(methods)
    c.distill.loss_kwargs.rel = {"aggregation": "frobenius"}   # the authors' code
    c.distill.loss_kwargs.abs = {"aggregation": "mean"}        # the authors' code (= DESIGN §4)
    for term, value in AUTHORS_LAMBDA.get(domain, AUTHORS_LAMBDA["cub"]).items():
        c.distill.weights[term] = value
    c.distill.lambda_search.terms = ["abs", "rel"]
    c.distill.lambda_search.grid = list(LAMBDA_GRID_001)
    c.distill.lambda_search.val_fraction = 0.2
    c.distill.lambda_search.steps = trial_steps   # a quarter of the run (our choice)
    # The run's teacher (trained on the whole training split) guides the trials: no test class
    # leaks; it has seen the validation classes, which makes the validation optimistic about
    # the teacher's terms, but it costs no second ResNet-101, as the authors distil every
    # student from one teacher checkpoint. "reduced" trains one on the 80 % (unbiased).
    c.distill.lambda_search.teacher = "full"
    if domain == "sop":
        c.eval.ks = [1, 10, 100, 1000]  # 001 Table 2
    return c


def paper_004(methods):
    """004 on CUB-200-2011 (Table 4). Inception-BN → NIN-BN is not in Keras: the nearest
    registered pair is ResNet-50 (teacher, ~Inception-BN's depth and accuracy class) →
    ResNet-18 (student, a small network like NIN-BN).

    004 §4 settings: global pooling → FC → L2 normalisation; large-margin softmax (margin 3,
    weight 1) on the FC output before normalisation ("directly connected to the fully connected
    layer"; Hinton KD's student logits come from that head), every other loss on the normalised
    embedding: verification (weight 5) and triplet (weight 0.1), both with margin 0.9; DarkRank
    α = 3, β = 3, λ = 2; SGD momentum 0.9, lr 5e-4 (student) / 0.01 (teacher), weight decay
    1e-4, 100 epochs with ×0.1 at epochs 50 and 75, batch 8 (4 classes × 2 images here),
    256 → random 224 crop + flip. The teacher is trained with the students' losses (heads and
    triplet, ``distill.teacher_heads``; the authors' code, TuSimple/DarkRank ``reid.py``, trains
    its teacher with the same network head as the student). Teacher and students are trained
    from scratch (``weights=""``): 004 "train[s] our model from scratch when experimenting with
    CUB-200-2011 dataset, since the authors discourage the use of ImageNet pre-trained model
    due to sample overlap".

    Weight decay is coupled (``train.weight_decay_mode = "coupled"``): 004 trains in MXNet, whose
    ``wd`` adds 1e-4 · w to the gradient (DESIGN §6), and MXNet's optimizer decays only
    parameters named ``*_weight`` / ``*_gamma`` (``Optimizer.set_wd_mult``, MXNet docs), hence
    ``weight_decay_exclude = ["bias", "beta"]``; the authors' ``reid.py`` uses MXNet's SGD with
    ``wd=0.0001`` through ``Module``, which passes the parameter names. Keras' SGD keeps the
    learning rate inside the momentum buffer as MXNet's does.

    The verification loss (``VerificationHead(mode="contrastive", margin=0.9)``): 004 cites
    Bromley et al. and describes a hard margin between anchors and negatives without a formula;
    the authors' code has no separate verification operator, its ``PYOP/lmnn.py`` loss pulls
    positive pairs by ½‖a − p‖² and puts the 0.9 margin on half-squared distances. So: positive
    pairs ½‖f_i − f_j‖², negative pairs max(0, 0.9 − ½‖f_i − f_j‖²), mean over pairs (see
    ``tfembed.losses.contrastive_verification_loss``).

    Not in the paper, our choices: the embedding size (128), the triplet loss's form (semi-hard
    mining on unsquared distances, margin 0.9; the authors' code applies the margin to
    half-squared distances), L-Softmax without the authors' code's annealing (its LSoftmax
    operator starts at β = 1000 and decays to 5; ours is the pure margin-3 loss, ``lam=0``).
    """
    c = base_config("distill")
    c.domains = ["cub"]
    c.teacher.backbone = "resnet50"
    c.teacher.embedding_dim = 128
    c.teacher.weights = ""   # from scratch on CUB (004 §4)
    c.model.backbone = "resnet18"
    c.model.embedding_dim = 128
    c.model.weights = ""     # from scratch on CUB (004 §4)
    c.train.loss = "triplet_semihard"
    c.train.loss_kwargs = {"margin": 0.9}
    c.train.classes_per_batch = 4
    c.train.images_per_class = 2
    c.train.optimizer = "sgd"
    c.train.learning_rate = 5e-4
    c.train.weight_decay = 1e-4
    c.train.weight_decay_mode = "coupled"              # MXNet wd: L2 added to the gradient
    c.train.weight_decay_exclude = ["bias", "beta"]    # MXNet: only *_weight / *_gamma decay
    c.train.steps = 73300  # 100 epochs of the 5864 CUB training images in batches of 8
    c.train.steps_per_epoch = 733
    c.train.lr_drops = [0.5, 0.75]
    c.distill.teacher_train = {"learning_rate": 0.01}
    c.distill.metric_weight = 0.1
    c.distill.heads = {"lsoftmax": {"weight": 1.0, "margin": 3},
                       "verification": {"weight": 5.0, "mode": "contrastive", "margin": 0.9}}
    c.distill.teacher_heads = True
    c.distill.methods = as_config(DistillMethod, methods)
    c.distill.export = _last_teacher_student(methods)
    c.eval.ks = [1, 2, 4, 8]
    return c


# 001 §5.2 (Table 3): students on the labelled half, both halves, or the unlabelled half.
SEMI_SUPERVISED_METHODS = [student("ml", data="labelled"), student("ml", "abs", data="labelled"),
                           student("ml", "rel", data="labelled"),
                           student("ml", "abs", data="semi"), student("ml", "rel", data="semi"),
                           student("abs", data="unlabelled"), student("rel", data="unlabelled")]


# Smoke: 2 steps and a few of the methods (every method list is checked without training
# by the tests; the paper recipes' smoke runs cover every kind of term).
DEMO_DISTILL_SMOKE = {
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "eval.max_images_per_split": 120,
    "distill.kd_classifier_epochs": 1,
    "distill.lambda_search.grid": [1.0],
    "distill.methods": [student("ml"), student("ml", "rel", "at"), student("ml", "rel", "hint")],
    "distill.export": ["ml+rel+at"],
}


# Smoke settings of the demos on the pretrained networks (distill_demo, darkrank_demo).
PRETRAINED_DISTILL_SMOKE = dict(DEMO_DISTILL_SMOKE, **PRETRAINED_DEMO_SMOKE,
                                **PRETRAINED_TEACHER_SMOKE)


def demo_distill_config(domain="digits", pretrained=True):
    """The shared set-up of the demo distillation recipes (teacher, student, steps).

    ``pretrained``: teacher = the ImageNet-pretrained EfficientNet-Lite0, student = its first two
    stages plus a head (the trunk cut at stride 8, ``block4_out``: 55,504 trainable parameters
    against 3,371,008, 61× fewer; 001's ResNet-101 → ResNet-18 is 3.8×), both 128-d on 64-px
    crops with BatchNorm frozen, Adam 1e-4 (``_base.pretrained_demo_model``). Why two stages:
    trained alone on digits (600 steps, seed 0) the whole network reaches 87.8 R@1, the
    three-stage cut 93.7 — better than the whole network, so it could not be 001's weaker
    student — and the two-stage cut 52.8. False: the earlier small CNNs from scratch (a
    full-width teacher, a quarter-width student with 14.6× fewer weights, Adam 1e-3), which the
    semi-supervised and cross-quality demos still use.
    """
    c = base_config("distill")
    c.domains = [domain]
    if pretrained:
        pretrained_demo_model(c.teacher)
        pretrained_demo_model(c.model, stages=2)
        c.train.learning_rate = DEMO_LEARNING_RATE
        # The student's two stages against the same stages of the teacher (stride 4 and 8:
        # block2_out, 24 channels, and block4_out, 40 channels, in both networks).
        layers = [["stage1", "stage1"], ["stage2", "stage2"]]
    else:
        demo_model(c.teacher, width=1.0)
        demo_model(c.model, width=0.25)
        c.train.learning_rate = 1e-3
        layers = [["stage2", "stage2"], ["stage3", "stage3"]]
    c.train.classes_per_batch = 8
    c.train.images_per_class = 4
    c.train.steps = 600
    c.train.steps_per_epoch = 200
    c.eval.batch_size = 512
    c.distill = distill_config.defaults()
    c.distill.hint_layers = [list(pair) for pair in layers]
    c.distill.attention_layers = [list(pair) for pair in layers]
    return c


# 001's datasets as the teacher recipes name them in their summaries.
DATASETS_001 = {"cub": "CUB-200-2011", "cars": "Cars-196", "sop": "Stanford Online Products"}
TERMS_001 = {"": "", "at": " + attention transfer (001 Eq. 12)", "hint": " + hint (001 Eq. 9)"}


def teacher_recipes_001(kind, expected):
    """``RECIPES`` of the ``rel_teacher`` / ``abs_teacher`` families: for each domain the student
    alone (``ml``) and with the ``kind`` teacher (``ml+<kind>``); on CUB also the teacher term
    with attention transfer or hint (arguments ``cub_at``, ``cub_hint``).

    ``expected``: ``{argument: (001 table, Recall@1 % of each student and the teacher)}``.
    """
    import functools  # noqa: PLC0415

    from tfembed.configs._recipe import Recipe  # noqa: PLC0415

    word = {"rel": "Relative", "abs": "Absolute"}[kind]
    eq = {"rel": "001 Eq. 5, Eq. 7", "abs": "001 Eq. 4, Eq. 7"}[kind]
    recipes = {}
    for arg, (table, result) in expected.items():
        domain, _, term = arg.partition("_")
        methods = ([student("ml"), student("ml", kind)] if not term
                   else [student("ml", kind), student("ml", kind, term)])
        name = f"{kind}_teacher{'_' + term if term else ''}_resnet18_{domain}"
        about = (f"{word} teacher{TERMS_001[term]} ({eq}) on {DATASETS_001[domain]}: ResNet-101 → "
                 f"ResNet-18.\n\nTrains the ResNet-101 teacher, then the ResNet-18 students "
                 f"{', '.join(DistillMethod.of(m).name for m in methods)}; settings and λ's cross-validation in "
                 f"``_distill.paper_001``.\n\nCommand:\n  tfembed-train --recipe {name} --set "
                 f"data_dir=/path/to/datasets\nExpected result (001 {table}, Recall@1 %):\n  "
                 f"{result}.\nSmoke run (small CNNs, 2 steps):\n  tfembed-train --recipe {name} "
                 f"--set smoke=true\n")
        recipes[arg] = Recipe(name, functools.partial(paper_001, domain, methods),
                              PAPER_DISTILL_SMOKE, about=about)
    return recipes
