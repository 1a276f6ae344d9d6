"""Builders every method family's runner shares: from a recipe's blocks to models, optimizers,
compile arguments, data transforms, evaluation sets, domains and exports.

Under MirroredStrategy the metric loss sees the global batch (``train.global_batch``, default;
``GlobalBatchLoss`` all-gathers labels and embeddings), so N replicas train the one-device model;
with ``global_batch=False`` each replica's slice is its own batch (the c×k batch is built so that
every slice still holds whole classes when c is a multiple of the replica count).
"""

import os

import keras
import numpy as np
from absl import logging

from tfembed import export as export_lib
from tfembed.data.pipeline import eval_dataset
from tfembed.data.sources import load_domain
from tfembed.data.transforms import Augment
from tfembed.data.types import ImageSpec
from tfembed.data.views import TeacherCacheViews
from tfembed.distill import TeacherCache
from tfembed.losses import GlobalBatchLoss, get_loss
from tfembed.models import build_embedder
from tfembed.optimizers import WEIGHT_DECAY_MODES, CoupledAdam, CoupledSGD
from tfembed.training.strategy import worker_role


def build_model(model_cfg, name=None):
    """An embedder from a recipe's ``model`` block."""
    size = int(model_cfg.image_size)
    weights = model_cfg.get("weights") or None
    return build_embedder(model_cfg.backbone, embedding_dim=int(model_cfg.embedding_dim),
                          input_shape=(size, size, 3), weights=weights, name=name,
                          resize_size=model_resize(model_cfg),
                          freeze_batchnorm=bool(model_cfg.get("freeze_batchnorm", False)),
                          **dict(model_cfg.get("backbone_kwargs", {})))


def untrained_baseline(model_cfg):
    """The report row of ``eval.random_init_baseline``: the recipe's network before training —
    ``baseline/pretrained`` (its pretrained backbone + an untrained projection) when the ``model``
    block names weights, else ``baseline/random_init``. Shows how much of a Recall@K the
    training earned."""
    return "baseline/pretrained" if model_cfg.get("weights") else "baseline/random_init"


def model_resize(model_cfg):
    """The evaluation resize a ``model`` block records in the model's ImageSpec (None: the
    standard 256/224 ratio)."""
    return int(model_cfg.get("resize_size") or 0) or None


def make_optimizer(train_cfg, learning_rate=None):
    """The optimizer a recipe's ``train`` block names (Adam by default, as in 000/001);
    ``learning_rate`` overrides the block's (the universal stage has its own). ``lr_drops``
    (fractions of ``steps``) and ``lr_drop_factor`` give a step-decay schedule.

    ``weight_decay`` with ``weight_decay_mode``: ``"decoupled"`` (default) is Keras' own
    ``weight_decay`` (shrink after the update; AdamW-style); ``"coupled"`` is the L2 term added
    to the gradient, ``g + wd·w``, as PyTorch / MXNet / Caffe ``weight_decay`` means
    (:class:`tfembed.optimizers.CoupledSGD` / ``CoupledAdam``); ``weight_decay_exclude`` lists
    variable-name substrings that do not decay in coupled mode (MXNet: ``["bias", "beta"]``)."""
    name = train_cfg.get("optimizer", "adam").lower()
    lr = float(learning_rate or train_cfg.learning_rate)
    drops = [float(f) for f in train_cfg.get("lr_drops", []) or []]
    if drops:
        # Step decay at fractions of the run (DarkRank: ×0.1 at epochs 50 and 75 of 100).
        factor = float(train_cfg.get("lr_drop_factor", 0.1))
        boundaries = [max(1, int(f * int(train_cfg.steps))) for f in sorted(drops)]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [lr * factor ** i for i in range(len(boundaries) + 1)])
    wd = float(train_cfg.get("weight_decay", 0.0)) or None
    mode = str(train_cfg.get("weight_decay_mode", "decoupled") or "decoupled").lower()
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"train.weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got "
                         f"{mode!r}")
    if mode == "coupled":
        l2 = dict(l2_weight_decay=wd or 0.0,
                  l2_exclude=list(train_cfg.get("weight_decay_exclude", []) or []))
        if name == "adam":
            return CoupledAdam(lr, **l2)
        if name == "sgd":
            return CoupledSGD(lr, momentum=float(train_cfg.get("momentum", 0.9)), **l2)
        if name == "adamw":
            raise ValueError("train.optimizer adamw is decoupled weight decay by definition; "
                             "use adam with train.weight_decay_mode=coupled, or "
                             "weight_decay_mode=decoupled")
    if name == "adam":
        return keras.optimizers.Adam(lr, weight_decay=wd)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=wd or 0.004)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=float(train_cfg.get("momentum", 0.9)),
                                    weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r} (train.optimizer); use adam, adamw or sgd")


def compile_kwargs(config):
    """``compile`` options from a recipe's top-level keys: ``jit_compile`` (XLA) and
    ``run_eagerly`` (debugging)."""
    return {"jit_compile": bool(config.get("jit_compile", False)),
            "run_eagerly": bool(config.get("run_eagerly", False))}


def metric_loss(config, name, kwargs=None):
    """The ``compile`` loss of a plain embedder: ``name`` on the global batch when
    ``train.global_batch`` (the papers' semantics: the loss compares every image of the batch,
    whatever the replica count), else on each replica's slice."""
    loss = get_loss(name, **dict(kwargs or {}))
    return GlobalBatchLoss(loss) if bool(config.train.get("global_batch", True)) else loss


def checkpoint_every(config):
    """``train.checkpoint_every``: steps between training-state checkpoints (0: each epoch)."""
    return int(config.train.get("checkpoint_every", 0) or 0) or None


TEACHER_CACHE_MODES = ("off", "memory", "disk")


def teacher_cache_view(config):
    """The training stream's :class:`TeacherCacheViews`: None when teachers run live."""
    mode = config.teacher_cache.mode
    if mode not in TEACHER_CACHE_MODES:
        raise ValueError(f"teacher_cache.mode must be one of {TEACHER_CACHE_MODES}, got {mode!r}")
    return None if mode == "off" else TeacherCacheViews(int(config.teacher_cache.views))


def teacher_cache(config, teachers, splits, names, default_dir, teacher_specs=None):
    """The recipe's :class:`TeacherCache` of ``teachers`` on ``splits``, or None (mode off).

    The teachers see the training stream's images (``config.model``'s transform, each split's
    flip policy), at their own sizes where ``teacher_specs`` gives them; ``disk`` reuses a
    cache under ``teacher_cache.dir`` (default ``default_dir``) that matches.
    """
    view = teacher_cache_view(config)
    if view is None:
        return None
    c = config.teacher_cache
    directory = None if c.mode == "memory" else (c.dir or default_dir)
    return TeacherCache.load_or_compute(
        directory, teachers, splits, view.count, seed=int(config.seed),
        batch_size=int(config.eval.batch_size), domain_names=names, teacher_specs=teacher_specs,
        **train_transform(config, splits))


def model_spec(model, default: ImageSpec) -> ImageSpec:
    """The :class:`ImageSpec` a trained or loaded model records, else ``default`` (a model with
    no static input size, e.g. some SavedModels)."""
    try:
        return ImageSpec.of(model)
    except ValueError:
        return default


def image_spec(model_cfg) -> ImageSpec:
    """The ImageSpec of a recipe's ``model`` block (or ``teacher`` block): its training crop and
    evaluation resize."""
    return ImageSpec(int(model_cfg.image_size), int(model_cfg.resize_size))


def train_transform(config, domains, model_cfg=None):
    """``{"spec", "augment"}`` of a training stream over ``domains`` (or their splits: anything
    with an ``hflip`` policy), for ``training_batches``, ``unlabelled_batches`` and
    :class:`TeacherCache`: the sizes of ``model_cfg`` (default ``config.model``); ``flip`` per
    domain, ``train.flip`` and the domain's ``hflip`` (DESIGN §6: no mirror images of text);
    the crop mode ``train.crop`` and its ranges ``train.crop_scale`` / ``train.crop_ratio``
    (``random_resized``) / ``train.crop_resize_range`` (``multi_resolution``), empty or absent:
    the defaults of :func:`tfembed.data.transforms.train_transform`."""
    t = config.train

    def pair(key):
        value = t.get(key)
        return tuple(float(v) for v in value) if value else None

    augment = Augment(flip=[bool(t.flip) and bool(getattr(d, "hflip", True)) for d in domains],
                      crop=str(t.get("crop") or "resize_crop"), crop_scale=pair("crop_scale"),
                      crop_ratio=pair("crop_ratio"), crop_resize_range=pair("crop_resize_range"))
    return dict(spec=image_spec(config.model if model_cfg is None else model_cfg),
                augment=augment)


def eval_sets(domains, offsets, config, multi_domain_input=False, **view):
    """``{domain: (query_ds, gallery_ds | None)}`` for RecallAtKCallback.

    ``view``: ``crop_boxes`` / ``low_resolution_size`` of ``eval_dataset``.

    A UnED domain is watched on its validation pair (UnED selects models on val, never on
    test), by plain Recall@K on each image's first label: a monitor, not UnED's metric.
    """
    from tfembed.data.uned import UNED_EVAL_PAIRS  # noqa: PLC0415

    e = config.eval
    kw = dict(spec=image_spec(config.model), **view)
    sets = {}
    for d, (domain, offset) in enumerate(zip(domains, offsets)):
        dom = d if multi_domain_input else None
        if domain.protocol == "uned":
            pair = UNED_EVAL_PAIRS[domain.name]
            query, index = pair["val"] if set(pair["val"]) <= set(domain.splits) else pair["test"]
            sets[domain.name] = tuple(
                None if s is None else eval_dataset(domain.splits[s], int(e.batch_size),
                                                    label_offset=offset, domain=dom, **kw)
                for s in (query, None if index == query else index))
        elif domain.has_query_gallery:
            sets[domain.name] = tuple(
                eval_dataset(domain.splits[s], int(e.batch_size), label_offset=offset,
                             domain=dom, **kw) for s in ("query", "gallery"))
        else:
            sets[domain.name] = (eval_dataset(domain.splits["test"], int(e.batch_size),
                                              label_offset=offset, domain=dom, **kw), None)
    return sets


def load_domains(config, single=None):
    """The recipe's domains (``config.domains``), read from ``config.data_dir``.

    ``single``: the name of a pipeline that takes exactly one domain (any other count fails).

    With ``eval.max_images_per_split`` > 0 every evaluation split is cut to a seeded random
    subset of that size (quick looks and smoke runs; the paper numbers use every image).
    """
    if single and len(config.domains) != 1:
        raise ValueError(f"the {single} pipeline takes one domain, got {list(config.domains)}")
    data_dir = config.get("data_dir") or None
    domains = [load_domain(name, data_dir=data_dir) for name in config.domains]
    limit = int(config.eval.get("max_images_per_split", 0))
    if limit > 0:
        rng = np.random.default_rng(int(config.seed))
        for domain in domains:
            for name, split in domain.splits.items():
                if name != "train" and len(split) > limit:
                    keep = np.sort(rng.choice(len(split), limit, replace=False))
                    domain.splits[name] = split.subset(keep)
    return domains


def export_models(config, workdir, named_models):
    """Exports each ``(name, model)`` as a SavedModel under the recipe's export root."""
    if not config.export.enabled:
        return []
    if not worker_role()[0]:
        return []   # multi-worker: the chief exports (every worker would add a version)
    root = config.export.root or os.path.join(workdir, "saved_models")
    spec = image_spec(config.model)
    paths = []
    for name, model in named_models:
        path = export_lib.export_model(model, root, name, image_size=spec.size,
                                       resize_size=spec.resize)
        logging.info("exported %s to %s", name, path)
        paths.append(path)
    return paths

