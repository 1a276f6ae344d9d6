"""Specialists: one embedder per domain with a metric loss (paper 000's teachers, and the
single-domain models of every other paper).

``run_specialists`` (pipeline ``specialists``): train (or load, ``--set teachers=``) one
specialist per domain, evaluate every specialist on every domain (own gallery and fused gallery),
write report.json, export the models. 000 §5's settings: ResNet50 → 128-d, triplet semi-hard,
batch 128 = 32 classes × 4 images, Adam 1e-5 (``tfembed/configs/specialist.py``).
"""

import functools
import os

from absl import logging

from tfembed.data.pipeline import default_label_offsets, training_batches
from tfembed.data.types import Domain
from tfembed.evaluation.protocol import evaluate
from tfembed.evaluation.report import write_report
from tfembed.io import atomic_save
from tfembed.models import load_embedder
from tfembed.training.builders import (
    build_model,
    checkpoint_every,
    compile_kwargs,
    eval_sets,
    export_models,
    image_spec,
    load_domains,
    make_optimizer,
    metric_loss,
    train_transform,
    untrained_baseline,
)
from tfembed.training.callbacks import RecallAtKCallback, SaveStudent
from tfembed.training.loop import fit_for_steps
from tfembed.training.strategy import get_strategy


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
        seed=int(config.seed), crop_boxes=crop, **train_transform(config, [domain]))
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


def specialists_for(config, domains, workdir, strategy):
    """Trains one specialist per domain, or loads them from ``config.teachers`` when given."""
    teachers = list(config.get("teachers", []) or [])
    if teachers and len(teachers) != len(domains):
        raise ValueError(f"teachers has {len(teachers)} entries but the recipe has "
                         f"{len(domains)} domains ({', '.join(config.domains)})")
    models = []
    for i, domain in enumerate(domains):
        if teachers:
            logging.info("loading specialist for %s from %s", domain.name, teachers[i])
            models.append(load_embedder(teachers[i]))
        else:
            model, _ = train_specialist(domain, config, os.path.join(
                workdir, "specialists", domain.name), strategy)
            models.append(model)
    return models


def run_specialists(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    domains = load_domains(config)
    offsets = default_label_offsets(domains)
    models = specialists_for(config, domains, workdir, strategy)
    rows = []
    kw = dict(offsets=offsets, ks=tuple(config.eval.ks), batch_size=int(config.eval.batch_size),
              spec=image_spec(config.model), uned_evaluation=config.eval.uned_evaluation)
    if config.eval.get("random_init_baseline", False):
        # The same architecture untrained: shows how much of a Recall@K the training earned
        # (on tiny domains nearest neighbours of random conv features are already strong).
        with strategy.scope():
            untrained = build_model(config.model, name="untrained")
        rows += evaluate(untrained, domains, name=untrained_baseline(config.model), **kw)
    for domain, model in zip(domains, models):
        rows += evaluate(model, domains, name=f"specialist/{domain.name}", **kw)
    write_report(workdir, config.recipe, config.to_dict(), rows)
    export_models(config, workdir, [(f"specialist_{d.name}", m) for d, m in zip(domains, models)])
    return rows
