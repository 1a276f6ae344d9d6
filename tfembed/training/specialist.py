"""Training a specialist: one embedder, one domain, a metric loss, plain ``compile``/``fit``.

This is how every paper trains its single-domain models (000 §5: ResNet50 → 128-d, triplet
semi-hard, batch 128 = 32 classes × 4 images, Adam 1e-5). The run directory gets TensorBoard
logs, a per-epoch checkpoint, the resumable training state (``backup/``, every
``train.checkpoint_every`` steps), the Recall@K history and the final ``.keras`` model.

Under MirroredStrategy the metric loss sees the global batch (``train.global_batch``, default;
``GlobalBatchLoss`` all-gathers labels and embeddings), so N replicas train the one-device model;
with ``global_batch=False`` each replica's slice is its own batch (the c×k batch is built so that
every slice still holds whole classes when c is a multiple of the replica count).
"""

import functools
import os

import keras
import numpy as np
from absl import logging

from tfembed.data.preprocess import eval_dataset, training_batches
from tfembed.data.types import Domain
from tfembed.io import atomic_save
from tfembed.losses import GlobalBatchLoss, get_loss
from tfembed.distill import TeacherCache
from tfembed.models import build_embedder
from tfembed.optimizers import WEIGHT_DECAY_MODES, CoupledAdam, CoupledSGD
from tfembed.training.callbacks import RecallAtKCallback, SaveStudent
from tfembed.training.fault_tolerance import TrainingPreempted, TrainingState, sigterm_checkpoints
from tfembed.training.strategy import fit_under_multi_worker


def build_model(model_cfg, name=None):
    """An embedder from a recipe's ``model`` block."""
    size = int(model_cfg.image_size)
    weights = model_cfg.get("weights") or None
    return build_embedder(model_cfg.backbone, embedding_dim=int(model_cfg.embedding_dim),
                          input_shape=(size, size, 3), weights=weights, name=name,
                          resize_size=model_resize(model_cfg),
                          **dict(model_cfg.get("backbone_kwargs", {})))


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


def teacher_cache_views(config):
    """``teacher_views`` of the training stream: None when teachers run live."""
    mode = config.teacher_cache.mode
    if mode not in TEACHER_CACHE_MODES:
        raise ValueError(f"teacher_cache.mode must be one of {TEACHER_CACHE_MODES}, got {mode!r}")
    return None if mode == "off" else int(config.teacher_cache.views)


def teacher_cache(config, teachers, splits, names, default_dir):
    """The recipe's :class:`TeacherCache` of ``teachers`` on ``splits``, or None (mode off).

    The teachers see the training stream's images (``config.model``'s transform, each split's
    flip policy); ``disk`` reuses a cache under ``teacher_cache.dir`` (default ``default_dir``)
    that matches.
    """
    views = teacher_cache_views(config)
    if views is None:
        return None
    c = config.teacher_cache
    directory = None if c.mode == "memory" else (c.dir or default_dir)
    return TeacherCache.load_or_compute(
        directory, teachers, splits, views, seed=int(config.seed),
        batch_size=int(config.eval.batch_size), domain_names=names,
        **train_transform_kwargs(config, splits))


def train_transform_kwargs(config, domains, model_cfg=None):
    """The training transform's keywords for a stream over ``domains`` (or their splits: anything
    with an ``hflip`` policy), for ``training_batches``, ``unlabelled_batches`` and
    :class:`TeacherCache`: the sizes of ``model_cfg`` (default ``config.model``); ``flip`` per
    domain, ``train.flip`` and the domain's ``hflip`` (DESIGN §6: no mirror images of text);
    the crop mode ``train.crop`` and its ranges ``train.crop_scale`` / ``train.crop_ratio``
    (``random_resized``) / ``train.crop_resize_range`` (``multi_resolution``), empty or absent:
    the defaults of :func:`tfembed.data.preprocess.train_transform`."""
    m = config.model if model_cfg is None else model_cfg
    t = config.train

    def pair(key):
        value = t.get(key)
        return tuple(float(v) for v in value) if value else None

    return dict(image_size=int(m.image_size), resize_size=int(m.resize_size),
                flip=[bool(t.flip) and bool(getattr(d, "hflip", True)) for d in domains],
                crop=str(t.get("crop") or "resize_crop"), crop_scale=pair("crop_scale"),
                crop_ratio=pair("crop_ratio"), crop_resize_range=pair("crop_resize_range"))


def eval_sets(domains, offsets, config, multi_domain_input=False, **view):
    """``{domain: (query_ds, gallery_ds | None)}`` for RecallAtKCallback.

    ``view``: ``crop_boxes`` / ``low_resolution_size`` of ``eval_dataset``.
    """
    m, e = config.model, config.eval
    kw = dict(image_size=int(m.image_size), resize_size=int(m.resize_size), **view)
    sets = {}
    for d, (domain, offset) in enumerate(zip(domains, offsets)):
        dom = d if multi_domain_input else None
        if domain.has_query_gallery:
            sets[domain.name] = tuple(
                eval_dataset(domain.splits[s], int(e.batch_size), label_offset=offset,
                             domain=dom, **kw) for s in ("query", "gallery"))
        else:
            sets[domain.name] = (eval_dataset(domain.splits["test"], int(e.batch_size),
                                              label_offset=offset, domain=dom, **kw), None)
    return sets


def standard_callbacks(run_dir, recall_callback=None, checkpoint=None):
    """Recall@K (first, so the others see its logs), TensorBoard and a per-epoch model save.

    The resumable training state (every N steps) is :func:`fit_for_steps`'s ``TrainingState``.
    """
    callbacks = [recall_callback] if recall_callback is not None else []
    callbacks += [
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
        checkpoint or keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "checkpoint.keras")),
    ]
    return callbacks


def train_specialist(domain: Domain, config, run_dir, strategy, name=None, trainer=None):
    """Trains (or resumes) a specialist for ``domain`` and saves ``<run_dir>/model.keras``.

    Args:
      domain: the domain (its ``train`` split is used; evaluation on its test split).
      config: resolved recipe (``model``, ``train``, ``eval`` blocks, ``seed``).
      run_dir: directory for this model's logs, checkpoints and final model.
      strategy: tf.distribute strategy.
      name: model name (default ``specialist_<domain>``).
      trainer: None (the embedder is compiled with ``train.loss`` and fitted itself), or
        ``model -> keras.Model``: a trainer wrapping the embedder as ``.student`` (e.g. a
        ``Distiller`` with heads and no teacher, DarkRank's teacher), compiled with the same
        optimizer and fitted on the same data instead; the embedder is what is saved.

    Returns:
      ``(model, recall_history)``.
    """
    m, t = config.model, config.train
    os.makedirs(run_dir, exist_ok=True)
    with strategy.scope():
        model = build_model(m, name=name or f"specialist_{domain.name}")
        if trainer is None:
            fitted = model
            model.compile(optimizer=make_optimizer(t),
                          loss=metric_loss(config, t.loss, t.get("loss_kwargs", {})),
                          **compile_kwargs(config))
            # Optimizer slots built now, not inside the first trace of the train step (which
            # makes tf.function trace it twice: ~2× the start-up of every run).
            model.optimizer.build(model.trainable_variables)
        else:
            fitted = trainer(model)   # its compile builds the optimizer slots (Distiller)
            fitted.compile(optimizer=make_optimizer(t), **compile_kwargs(config))
    # train.crop_boxes: train and evaluate on bounding-box crops (a cross-quality teacher).
    crop = bool(t.get("crop_boxes", False))
    train_ds = functools.partial(
        training_batches, [domain.train], int(t.classes_per_batch), int(t.images_per_class),
        seed=int(config.seed), crop_boxes=crop, **train_transform_kwargs(config, [domain]))
    recall = RecallAtKCallback(eval_sets([domain], [0], config, crop_boxes=crop),
                               ks=tuple(config.eval.ks),
                               every_n_epochs=int(config.eval.every_n_epochs))
    fit_for_steps(fitted, train_ds, int(t.steps), int(t.steps_per_epoch), run_dir, recall,
                  what=f"{model.name} on {domain.name}",
                  batch_size=int(t.classes_per_batch) * int(t.images_per_class),
                  checkpoint=(None if trainer is None else
                              SaveStudent(os.path.join(run_dir, "checkpoint.keras"))),
                  checkpoint_every=checkpoint_every(config))
    atomic_save(model, os.path.join(run_dir, "model.keras"))
    return model, recall.history


def fit_for_steps(model, data, steps, steps_per_epoch, run_dir, recall_callback, what,
                  batch_size, checkpoint=None, checkpoint_every=None):
    """``model.fit`` for ``steps`` steps (rounded up to whole epochs), resumable.

    Args:
      model: a compiled trainer (optimizer slots built).
      data: ``start_step -> tf.data.Dataset``, the training stream from a given batch number
        (``functools.partial(training_batches, ..., )`` and the pipelines' ``training_data``);
        a plain dataset is also accepted and is skipped forward on resume (which computes the
        skipped batches: fine in a notebook, slow for a long run).
      steps, steps_per_epoch: the schedule.
      run_dir: the run directory: ``backup/`` (training state), ``logs/``, the epoch checkpoint.
      recall_callback: the Recall@K callback (or None); its ``resume_at(step)`` is called with
        the restored step.
      what, batch_size: for the log line.
      checkpoint: a callback saving the model each epoch (default ``ModelCheckpoint`` on the
        model itself; distillers pass one that saves only the student).
      checkpoint_every: steps between training-state checkpoints (default: once per epoch).

    A rerun of the same command restores ``backup/`` and continues from its step, mid-epoch if
    need be; a finished run is not trained again. Raises ``NonFiniteLossError`` on a NaN/Inf
    loss and ``TrainingPreempted`` after checkpointing on SIGTERM (see
    :mod:`tfembed.training.fault_tolerance`).
    """
    steps_per_epoch = max(1, min(int(steps_per_epoch), int(steps)))
    epochs = max(1, int(np.ceil(steps / steps_per_epoch)))
    total = epochs * steps_per_epoch
    state = TrainingState(os.path.join(run_dir, "backup"),
                          every_n_steps=int(checkpoint_every or steps_per_epoch), total_steps=total,
                          schedule={"steps_per_epoch": steps_per_epoch,
                                    "batch_size": int(batch_size)})
    start = state.restore(model)
    if callable(getattr(recall_callback, "resume_at", None)):
        recall_callback.resume_at(start)   # its global step, and its saved evaluation history
    if start >= total:
        logging.info("%s: already trained (%d steps, state in %s)", what, total, state.directory)
        return
    make = data if callable(data) else (lambda start_step: data.skip(start_step))
    fit_under_multi_worker(model)   # Keras 3's fit fails there otherwise (keras#20585)
    callbacks = [state] + standard_callbacks(run_dir, recall_callback, checkpoint)
    logging.info("training %s: %d steps of %d images%s", what, total, batch_size,
                 f" (resuming at step {start})" if start else "")
    with sigterm_checkpoints(state):
        while state.step < total:
            epoch, done = divmod(state.step, steps_per_epoch)
            # A resumed run first finishes its interrupted epoch, then runs whole epochs.
            end = epoch + 1 if done else epochs
            expected = state.step + (end - epoch) * steps_per_epoch - done
            # shuffle=False: the stream is already sampled (Keras ignores shuffle for a
            # tf.data.Dataset, and warns when it is left at its default True).
            model.fit(make(start_step=state.step), initial_epoch=epoch, epochs=end,
                      steps_per_epoch=steps_per_epoch - done, callbacks=callbacks, verbose=2,
                      shuffle=False)
            if state.preempted:
                raise TrainingPreempted(state.step, state.directory)
            if state.step != expected:  # another callback stopped training (early stopping)
                break
