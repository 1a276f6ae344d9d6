"""What ``tfembed-train`` runs: a recipe's ``pipeline`` key names one function here.

``specialists``: train (or load) one specialist per domain, evaluate every specialist on every
domain (own gallery and fused gallery), write report.json, export the models.
"""

import json
import os
import time

import keras
import numpy as np
from absl import logging

from tfembed import export as export_lib
from tfembed.data.preprocess import default_label_offsets
from tfembed.data.sources import load_domain
from tfembed.evaluation.domains import evaluate_model
from tfembed.evaluation.report import write_report
from tfembed.models import load_embedder
from tfembed.training.specialist import build_model, train_specialist
from tfembed.training.strategy import get_strategy

PIPELINES = {}


def pipeline(name):
    def register(fn):
        PIPELINES[name] = fn
        return fn
    return register


def run(config, workdir):
    """Runs a resolved recipe in ``workdir``; returns the report rows."""
    name = config.get("pipeline", "specialists")
    if name not in PIPELINES:
        raise ValueError(f"recipe {config.recipe!r} names pipeline {name!r}; known pipelines: "
                         f"{', '.join(sorted(PIPELINES))}")
    os.makedirs(workdir, exist_ok=True)
    keras.utils.set_random_seed(int(config.seed))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2, default=str)
    start = time.time()
    rows = PIPELINES[name](config, workdir)
    logging.info("recipe %s finished in %.1f s", config.recipe, time.time() - start)
    return rows


def load_domains(config):
    """The recipe's domains (``config.domains``), read from ``config.data_dir``.

    With ``eval.max_images_per_split`` > 0 every evaluation split is cut to a seeded random
    subset of that size (quick looks and smoke runs; the paper numbers use every image).
    """
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


def _image_sizes(config):
    return dict(image_size=int(config.model.image_size), resize_size=int(config.model.resize_size))


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


def export_models(config, workdir, named_models):
    """Exports each ``(name, model)`` as a SavedModel under the recipe's export root."""
    if not config.export.enabled:
        return []
    root = config.export.root or os.path.join(workdir, "saved_models")
    size = int(config.model.image_size)
    resize = int(config.model.resize_size)
    paths = []
    for name, model in named_models:
        path = export_lib.export_model(model, root, name, image_size=(size, size),
                                       resize_size=(resize, resize))
        logging.info("exported %s to %s", name, path)
        paths.append(path)
    return paths


@pipeline("specialists")
def run_specialists(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    domains = load_domains(config)
    offsets = default_label_offsets(domains)
    models = specialists_for(config, domains, workdir, strategy)
    rows = []
    if config.eval.get("random_init_baseline", False):
        # The same architecture untrained: shows how much of a Recall@K the training earned
        # (on tiny domains nearest neighbours of random conv features are already strong).
        with strategy.scope():
            untrained = build_model(config.model, name="random_init")
        rows += evaluate_model("baseline/random_init", untrained, domains, offsets,
                               ks=tuple(config.eval.ks), batch_size=int(config.eval.batch_size),
                               **_image_sizes(config))
    for domain, model in zip(domains, models):
        rows += evaluate_model(f"specialist/{domain.name}", model, domains, offsets,
                               ks=tuple(config.eval.ks), batch_size=int(config.eval.batch_size),
                               **_image_sizes(config))
    write_report(workdir, config.recipe, config.to_dict(), rows)
    export_models(config, workdir, [(f"specialist_{d.name}", m) for d, m in zip(domains, models)])
    return rows
