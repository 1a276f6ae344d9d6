"""Training a specialist: one embedder, one domain, a metric loss, plain ``compile``/``fit``.

This is how every paper trains its single-domain models (000 §5: ResNet50 → 128-d, triplet
semi-hard, batch 128 = 32 classes × 4 images, Adam 1e-5). The run directory gets TensorBoard
logs, a per-epoch checkpoint, a backup for resuming after an interruption, the Recall@K history
and the final ``.keras`` model.

Under MirroredStrategy the metric loss is computed per replica on the replica's slice of the
global batch (Keras scales it for the replica count); the c×k batch is built so that every slice
still holds whole classes when c is a multiple of the replica count.
"""

import os

import keras
import numpy as np
from absl import logging

from tfembed.data.preprocess import eval_dataset, training_batches
from tfembed.data.types import Domain
from tfembed.losses import get_loss
from tfembed.models import build_embedder
from tfembed.training.callbacks import RecallAtKCallback


def build_model(model_cfg, name=None):
    """An embedder from a recipe's ``model`` block."""
    size = int(model_cfg.image_size)
    weights = model_cfg.get("weights") or None
    return build_embedder(model_cfg.backbone, embedding_dim=int(model_cfg.embedding_dim),
                          input_shape=(size, size, 3), weights=weights, name=name,
                          **dict(model_cfg.get("backbone_kwargs", {})))


def make_optimizer(train_cfg, learning_rate=None):
    """The optimizer a recipe's ``train`` block names (Adam by default, as in 000/001);
    ``learning_rate`` overrides the block's (the universal stage has its own). ``lr_drops``
    (fractions of ``steps``) and ``lr_drop_factor`` give a step-decay schedule."""
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
    if name == "adam":
        return keras.optimizers.Adam(lr, weight_decay=wd)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=wd or 0.004)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=float(train_cfg.get("momentum", 0.9)),
                                    weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r} (train.optimizer); use adam, adamw or sgd")


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
    """Recall@K (first, so the others see its logs), TensorBoard, checkpoint, backup."""
    callbacks = [recall_callback] if recall_callback is not None else []
    callbacks += [
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
        checkpoint or keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "checkpoint.keras")),
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
    ]
    return callbacks


def train_specialist(domain: Domain, config, run_dir, strategy, name=None):
    """Trains (or resumes) a specialist for ``domain`` and saves ``<run_dir>/model.keras``.

    Args:
      domain: the domain (its ``train`` split is used; evaluation on its test split).
      config: resolved recipe (``model``, ``train``, ``eval`` blocks, ``seed``).
      run_dir: directory for this model's logs, checkpoints and final model.
      strategy: tf.distribute strategy.
      name: model name (default ``specialist_<domain>``).

    Returns:
      ``(model, recall_history)``.
    """
    m, t = config.model, config.train
    os.makedirs(run_dir, exist_ok=True)
    with strategy.scope():
        model = build_model(m, name=name or f"specialist_{domain.name}")
        model.compile(optimizer=make_optimizer(t),
                      loss=get_loss(t.loss, **dict(t.get("loss_kwargs", {}))),
                      jit_compile=False)
        # Optimizer slots built now, not inside the first trace of the train step (which
        # makes tf.function trace it twice: ~2× the start-up of every run).
        model.optimizer.build(model.trainable_variables)
    # train.crop_boxes: train and evaluate on bounding-box crops (a cross-quality teacher).
    crop = bool(t.get("crop_boxes", False))
    train_ds = training_batches(
        [domain.train], int(t.classes_per_batch), int(t.images_per_class),
        image_size=int(m.image_size), resize_size=int(m.resize_size), flip=bool(t.flip),
        seed=int(config.seed), crop_boxes=crop)
    recall = RecallAtKCallback(eval_sets([domain], [0], config, crop_boxes=crop),
                               ks=tuple(config.eval.ks),
                               every_n_epochs=int(config.eval.every_n_epochs))
    fit_for_steps(model, train_ds, int(t.steps), int(t.steps_per_epoch), run_dir, recall,
                  what=f"{model.name} on {domain.name}",
                  batch_size=int(t.classes_per_batch) * int(t.images_per_class))
    model.save(os.path.join(run_dir, "model.keras"))
    return model, recall.history


def fit_for_steps(model, train_ds, steps, steps_per_epoch, run_dir, recall_callback, what,
                  batch_size, checkpoint=None):
    """``model.fit`` for ``steps`` steps (rounded up to whole epochs) with the standard callbacks.

    ``checkpoint``: a callback saving the model each epoch (default ``ModelCheckpoint`` on the
    model itself; distillers pass one that saves only the student).
    """
    steps_per_epoch = max(1, min(int(steps_per_epoch), int(steps)))
    epochs = max(1, int(np.ceil(steps / steps_per_epoch)))
    logging.info("training %s: %d steps of %d images", what, epochs * steps_per_epoch, batch_size)
    model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
              callbacks=standard_callbacks(run_dir, recall_callback, checkpoint), verbose=2)
