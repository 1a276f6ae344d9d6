"""Shared defaults of all recipes (a private module: not a recipe itself)."""

import ml_collections

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


# SND kernel width for L2-normalised embeddings (squared distances in [0, 4]). Paper 000 tunes σ by
# self-distillation on one dataset and does not publish the value; this is the value our
# self-distillation sweep picked (recipe snd_sigma_selfdistill_demo, docs/papers/000_universal.md).
SND_SIGMA = 0.25


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


def base_config():
    c = ml_collections.ConfigDict()
    c.recipe = ""
    c.pipeline = "specialists"
    c.smoke = False
    c.seed = 0
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
        resize_size=256, backbone_kwargs={}))
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
        # The training crop (tfembed.data.preprocess.train_transform): "resize_crop" (resize
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
    c.eval = ml_collections.ConfigDict(dict(ks=[1, 2, 4, 8], batch_size=128, every_n_epochs=1,
                                            max_images_per_split=0, random_init_baseline=False,
                                            fused=True))
    c.universal = universal_defaults()
    # Pipeline "distill" (papers 001/004): the teacher's model block and the students' methods.
    c.teacher = ml_collections.ConfigDict(dict(
        backbone="resnet101", embedding_dim=512, weights="imagenet", image_size=224,
        resize_size=256, backbone_kwargs={}))
    c.distill = distill_defaults()
    c.ensemble = ensemble_defaults()
    c.cohort = cohort_defaults()
    # Teacher-embedding cache for the distillation students (universal snd/rkd, distill
    # methods): mode "off" (teachers run live on fresh augmentations, the papers' setting),
    # "memory" or "disk" (computed once per run into dir, default <workdir>/.../teacher_cache,
    # reused by every student and by a rerun). views: 0 = the teacher sees the evaluation
    # transform while the student keeps random augmentation; K = K fixed augmented views per
    # image, seen by teacher and student alike.
    c.teacher_cache = ml_collections.ConfigDict(dict(mode="off", views=0, dir=""))
    c.export = ml_collections.ConfigDict(dict(enabled=True, root=""))
    return c


def universal_defaults():
    """The ``universal`` block (pipeline "universal", paper 000); see tfembed/universal/runner.py.

    steps / steps_per_epoch / learning_rate: 0 means "as in ``train``" (the specialists' setting).
    policy: sampling of the distillation batches: ds (domain-specific, the paper's), bal, weighted.
    weights: per-domain weights of the ``weighted`` policy (and of ``*_weighted`` baselines).
    snd: sigma (teacher kernel width), student_sigma (0: same as sigma), perplexity (0: fixed
      sigma; > 0: per-row sigma calibrated to this perplexity). rkd: RKD-DA weights (1:2).
    domain_losses: {domain: loss name} replacing distillation for that domain (000 §5.3).
    global_batch: under MirroredStrategy, SND/RKD on the all-gathered batch (the paper's loss).
    fused_losses: the metric losses of the ``<loss>_<policy>`` baselines.
    pca_max_images: training images per domain the concat_pca PCA is fitted on (0: all).
    sigma_sweep: the σ values the self_distill pipeline compares.
    diagnostics, tsne_max_points: write the figure PNG/JSON pairs; t-SNE points per domain.
    export: the methods whose model is exported as a SavedModel.
    """
    return ml_collections.ConfigDict(dict(
        methods=["concat_pca", "triplet_naive", "triplet_ds", "triplet_bal", "rkd", "snd"],
        steps=0, steps_per_epoch=0, learning_rate=0.0,
        policy="ds", weights=[],
        snd=dict(sigma=SND_SIGMA, student_sigma=0.0, perplexity=0.0),
        rkd=dict(distance_weight=1.0, angle_weight=2.0, delta=1.0),
        domain_losses={}, domain_loss_kwargs={"margin": 0.2},
        global_batch=True,
        fused_losses={"triplet": {"loss": "triplet_semihard", "kwargs": {"margin": 0.2}},
                      "ms": {"loss": "multi_similarity", "kwargs": {}}},
        pca_max_images=10000,
        sigma_sweep=[0.25, 0.5, 1.0, 2.0],
        diagnostics=True,
        tsne_max_points=1000,
        export=["snd", "rkd"],
    ))


def distill_defaults():
    """The ``distill`` block (pipeline "distill", papers 001/004); see tfembed/distill/runner.py.

    methods: students to train, ``+``-joined terms with an optional ``@data`` suffix.
    weights: per-term weights: λ of the embedding-level term (abs, rel, direct, darkrank_*, rkd,
      snd), μ of hint, κ of at, and the Hinton KD weight. 1 here; DarkRank: λ = 2. A term listed
      in ``lambda_search.terms`` has its λ chosen by cross-validation instead (this weight then
      only breaks ties).
    loss_kwargs: hyper-parameters per term (DarkRank α = β = 3, 004 §4; abs / rel
      ``aggregation``: "mean", DESIGN §4, or "frobenius", the authors' code of 001).
    lambda_search: λ by cross-validation (001 §4; tfembed.distill.runner.LambdaSearch), off
      while ``terms`` is empty. terms: the embedding-level terms whose λ is searched (e.g.
      ["abs", "rel"]); grid: the λ values tried (log-spaced), term_grids: {term: grid} per
      term; val_fraction: the share of the *training* classes held out for validation (whole
      classes, seeded; never the test split); steps: training steps of each trial student (0:
      train.steps); teacher: "full" (the run's teacher) or "reduced" (one trained on the
      remaining classes only). The choice goes to report.json under "selection".
    metric_weight: weight of the student's own metric loss (``train.loss``).
    hint_layers / attention_layers: ``[[teacher layer, student layer], ...]``.
    heads: supervised heads with weights, e.g. ``{"lsoftmax": {"weight": 1, "margin": 3}}``
      (``verification``: ``mode`` "logistic" | "contrastive", ``margin``).
    teacher_heads: train the teacher with ``heads`` too (next to ``train.loss`` weighted by
      ``metric_weight``), as 004 trains its teacher with the student's losses; False: the
      teacher is a plain specialist on ``train.loss``.
    kd_temperature, kd_classifier_epochs: Hinton KD's T; epochs of the teacher's linear head.
    labelled_fraction: < 1 splits each training class into labelled / unlabelled (001 §5.2).
    cross_quality: none | lowres | uncropped (001 §5.4); low_resolution_size: 50 in 001.
    teacher_train: overrides of the ``train`` block for the teacher (e.g. its learning rate:
      004 trains the teacher at 0.01 and the student at 5e-4).
    clustering: add NMI and F1 (k-means) to the report rows (004 Table 4).
    export: methods whose student is exported as a SavedModel.
    """
    return ml_collections.ConfigDict(dict(
        methods=["ml", "ml+abs", "ml+rel"],
        weights={"abs": 1.0, "rel": 1.0, "direct": 1.0, "darkrank_hard": 2.0,
                 "darkrank_soft": 2.0, "rkd": 1.0, "snd": 1.0, "hint": 0.01, "at": 1.0,
                 "kd": 1.0},
        loss_kwargs={"darkrank_hard": {"alpha": 3.0, "beta": 3.0},
                     "darkrank_soft": {"alpha": 3.0, "beta": 3.0},
                     "snd": {"sigma": SND_SIGMA},
                     "abs": {"aggregation": "mean"}, "rel": {"aggregation": "mean"}},
        lambda_search=dict(terms=[], grid=[0.1, 0.3, 1.0, 3.0, 10.0], term_grids={},
                           val_fraction=0.2, steps=0, teacher="full"),
        metric_weight=1.0,
        hint_layers=[], attention_layers=[],
        heads={}, teacher_heads=False,
        kd_temperature=4.0, kd_classifier_epochs=30,
        labelled_fraction=1.0,
        cross_quality="none", low_resolution_size=50,
        global_batch=True,
        teacher_train={},
        clustering=True,
        export=[],
    ))


def ensemble_defaults():
    """The ``ensemble`` block (pipeline "ensemble", paper 002); see tfembed/ensemble/runner.py.

    methods: ``abe<M>``, ``abe<M>_nodiv``, ``mheads<M>``, ``mheads<M>_div``; ``model.embedding_dim``
      is the ensemble's size D (each learner D/M).
    divergence_weight, divergence_margin: λ_div and m_div (both 1 in 002).
    branch: layer or stage alias where S ends ("": the backbone's default branch).
    attention_blocks: backbone blocks in the attention trunk C (0: up to the next stage).
    sampler: "pairs" (002: pair_anchors random images + a positive partner for the first
      pair_positives and a negative one for the rest) or "classes" (the train block's c×k).
    head_init: M-heads' initialisation, "copy" | "fresh" ("": copy with pretrained weights).
    global_batch: under MirroredStrategy, the losses on the all-gathered batch.
    diagnostics: write 002's Fig. 5/6; diagnostics_max_images / _max_pairs bound Fig. 5's cost.
    export: methods whose ensemble model is exported as a SavedModel.
    eval_every_steps: Recall@K of the ensemble every this many training steps (002: every 1000
      iterations; replaces ``eval.every_n_epochs`` in this pipeline); the best evaluation by
      R@1 is reported beside the final model (``<method>/ensemble@best``).
    """
    return ml_collections.ConfigDict(dict(
        methods=["abe8"],
        divergence_weight=1.0, divergence_margin=1.0,
        branch="", attention_blocks=0,
        sampler="pairs", pair_anchors=32, pair_positives=16,
        head_init="",
        global_batch=True,
        diagnostics=True, diagnostics_max_images=2000, diagnostics_max_pairs=200000,
        export=[],
        eval_every_steps=1000,
    ))


def cohort_defaults():
    """The ``cohort`` block (pipeline "cohort", paper 003); see tfembed/cohort/runner.py.

    methods: independent | md | md+td | md+vd | md+td+vd, optionally ``->rkd``.
    size: members L. backbones: one per member for a heterogeneous cohort ([]: model.backbone).
    weights: one per member ([]: model.weights for all); a heterogeneous cohort started from
      local weights files needs one file per architecture.
    relation_weight: final λ_DM² (0: the paper's value for train.loss: 20 triplet / contrastive
      / binomial, 100 proxy-NCA, 2000 ArcFace). warmup_epochs: λ's linear warm-up (3 in 003).
    update_probabilities: p_l of temporal diversity ([]: 2^-(l-1) per backbone type).
    freeze_batchnorm: BatchNorm frozen in every member (003: CUB and Cars).
    placement: "devices" puts member l on device l mod #GPUs (or logical CPUs); "none".
    pretrain_domain: a domain to train one network on first; every member then starts from its
      backbone (the analogue of 003's ImageNet initialisation: members differ only in their
      projection). "": members start from model.weights.
    rkd: RKD-DA weights of the ->rkd student (003 §4.6: distance 20, angle 40, no metric loss).
    export: report rows whose model is exported, e.g. "md+td+vd/ensemble", "md+td+vd/member0".
    """
    return ml_collections.ConfigDict(dict(
        methods=["md+td+vd"], size=4, backbones=[], weights=[],
        relation_weight=0.0, warmup_epochs=3.0,
        update_probabilities=[],
        freeze_batchnorm=False,
        placement="devices",
        pretrain_domain="",
        rkd={"distance_weight": 20.0, "angle_weight": 40.0},
        export=[],
    ))


def paper_universal(domains):
    """000 §5.2: the specialists of ``domains`` (paper settings), then every method of Table 2."""
    c = base_config()
    c.pipeline = "universal"
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
