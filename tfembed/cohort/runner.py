"""Pipeline ``cohort`` (paper 003, DM²): cohorts trained with relation transfer, their members,
their ensembles, and the distillation of an ensemble into one student (DM² → RKD-DA).

Methods (``cohort.methods``), the rows of 003 Table 1:

* ``independent``  L members trained side by side, no relation transfer (λ = 0);
* ``md``           + relation transfer (model diversity only: the members' projections differ);
* ``md+td``        + temporal diversity (member l updates with probability p_l);
* ``md+vd``        + view diversity (member l sees its own crop and flip of the batch:
  ``train.crop`` — 003's HORDE crops, ``multi_resolution``, in the paper recipes — and the flip
  where the domain allows it, ``Domain.hflip``);
* ``md+td+vd``     all three: DM².

A ``->rkd`` suffix (``md+td+vd->rkd``) also distills the trained cohort's ensemble into a fresh
single model with RKD-DA (003 §4.6: distance 20, angle 40, no metric loss) through the
``Distiller``. Rows: ``<method>/member<l>`` (each member alone), ``<method>/ensemble`` (the
concatenation of the L normalised members) and ``<method>/rkd_student``.
"""

import functools
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfembed.cohort.config import CohortMethod
from tfembed.cohort.mutual_learning import MutualLearningCohort
from tfembed.configs._method import entries
from tfembed.data.pipeline import training_batches
from tfembed.data.sources import load_domain
from tfembed.data.views import CohortViews
from tfembed.distill import Distiller
from tfembed.evaluation.protocol import embed_domains, evaluate, evaluate_embeddings, is_uned
from tfembed.evaluation.report import format_model_table, write_report
from tfembed.io import atomic_save
from tfembed.losses import ArcFaceHead, ProxyNCAHead, get_loss
from tfembed.models import build_embedder
from tfembed.models.embedder import freeze_batchnorm_layers
from tfembed.models.embedder import safe_name
from tfembed.specialists.runner import train_specialist
from tfembed.training.builders import (
    checkpoint_every,
    compile_kwargs,
    eval_sets,
    export_models,
    image_spec,
    load_domains,
    make_optimizer,
    model_resize,
    train_transform,
)
from tfembed.training.callbacks import RecallAtKCallback, SaveStudent
from tfembed.training.loop import fit_for_steps
from tfembed.training.strategy import get_strategy

DIVERSITIES = ("md", "td", "vd")
# 003 §4.8: the final λ_DM² per metric loss (triplet: §4.2).
PAPER_RELATION_WEIGHTS = {
    "triplet_distance_weighted": 20.0, "triplet_semihard": 20.0, "triplet_hard": 20.0,
    "contrastive": 20.0, "binomial_deviance": 20.0, "proxy_nca": 100.0, "arcface": 2000.0,
}
# Losses whose class weights live in a head layer (one per member).
HEADS = {"proxy_nca": ProxyNCAHead, "arcface": ArcFaceHead}


def export_name(row):
    """SavedModel name of a report row, e.g. ``md+td+vd/ensemble`` → ``dm2_md_td_vd_ensemble``."""
    return "dm2_" + re.sub(r"[^A-Za-z0-9]+", "_", row).strip("_")


def check_config(config):
    c = config.cohort
    methods = entries(CohortMethod, c.methods)
    size = int(c.size)
    if size < 1:
        raise ValueError(f"cohort.size must be >= 1, got {size}")
    backbones = list(c.get("backbones", []) or [])
    if backbones and len(backbones) != size:
        raise ValueError(f"cohort.backbones lists {len(backbones)} backbones for a cohort of "
                         f"{size}")
    weights = list(c.get("weights", []) or [])
    if weights and len(weights) != size:
        raise ValueError(f"cohort.weights lists {len(weights)} entries for a cohort of {size}")
    probs = list(c.get("update_probabilities", []) or [])
    if probs and len(probs) != size:
        raise ValueError(f"cohort.update_probabilities lists {len(probs)} values for a cohort "
                         f"of {size}")
    rows = [f"{m.row_prefix}/{part}" for m in methods
            for part in ["ensemble", "rkd_student"] + [f"member{l}" for l in range(size)]]
    unknown = [e for e in c.get("export", []) if e not in rows]
    if unknown:
        raise ValueError(f"cohort.export names {unknown}: not rows of these methods (e.g. "
                         f"{rows[0]!r})")
    if c.placement not in ("none", "devices"):
        raise ValueError(f"cohort.placement must be none or devices, got {c.placement!r}")


def member_backbones(config):
    c = config.cohort
    return list(c.get("backbones", []) or []) or [config.model.backbone] * int(c.size)


def member_weights(config):
    """Each member's ``weights`` (cohort.weights, else model.weights for every member)."""
    given = list(config.cohort.get("weights", []) or [])
    return given or [config.model.get("weights") or None] * int(config.cohort.size)


def update_probabilities(config):
    """003's p_l = 2^-(l-1), counted per backbone type in heterogeneous cohorts (§4.7: 3 × BNI +
    1 × R50 → 1, 0.5, 0.25, 1), unless ``cohort.update_probabilities`` lists them."""
    given = list(config.cohort.get("update_probabilities", []) or [])
    if given:
        return [float(p) for p in given]
    seen, probs = {}, []
    for backbone in member_backbones(config):
        probs.append(2.0 ** -seen.get(backbone, 0))
        seen[backbone] = seen.get(backbone, 0) + 1
    return probs


def relation_weight(config):
    w = float(config.cohort.relation_weight)
    return w if w > 0 else PAPER_RELATION_WEIGHTS.get(config.train.loss, 20.0)


def placement(config):
    """Member devices: round robin over the GPUs (else the logical CPUs) when placement is
    ``devices`` and there is more than one; None otherwise."""
    if config.cohort.placement != "devices":
        return None
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        return None
    return [devices[l % len(devices)] for l in range(int(config.cohort.size))]


def build_members(config, seed, devices=None, pretrained=None):
    """The L embedders: same pretrained backbone weights, projections initialised per member
    (model diversity, 003 §4.3); BatchNorm frozen when ``cohort.freeze_batchnorm`` or
    ``model.freeze_batchnorm``. Member l
    is built on ``devices[l]`` so its variables live there. ``pretrained``: an embedder whose
    backbone weights (every layer but the projection) every member starts from."""
    m = config.model
    size = int(m.image_size)
    members = []
    for l, (backbone, weights) in enumerate(zip(member_backbones(config),
                                                 member_weights(config))):
        keras.utils.set_random_seed(seed + 1000 * l)
        with tf.device(devices[l] if devices else None):
            member = build_embedder(backbone, int(m.embedding_dim), input_shape=(size, size, 3),
                                    weights=weights or None, resize_size=model_resize(m),
                                    name=f"member{l}_{safe_name(backbone)}",
                                    **dict(m.get("backbone_kwargs", {})))
        if pretrained is not None:
            copy_backbone(pretrained, member)
        if config.cohort.freeze_batchnorm or m.get("freeze_batchnorm", False):
            freeze_batchnorm_layers(member)
        members.append(member)
    return members


def copy_backbone(source, member):
    """Copies every weight of ``source`` into the same-named layers of ``member``, except the
    projection (``embedding_dense``): 003's members share pretrained weights and differ only in
    their randomly initialised projection."""
    names = {layer.name for layer in member.layers}
    for layer in source.layers:
        if layer.name != "embedding_dense" and layer.name in names and layer.get_weights():
            member.get_layer(layer.name).set_weights(layer.get_weights())


def build_cohort(method, config, num_classes, pretrained=None):
    method = CohortMethod.of(method)
    used = method.diversities
    c, t = config.cohort, config.train
    seed = int(config.seed)
    devices = placement(config)
    members = build_members(config, seed, devices, pretrained)
    heads = None
    if t.loss in HEADS:
        heads = [HEADS[t.loss](num_classes, name=f"{t.loss}_{l}",
                               **dict(t.get("loss_kwargs", {}))) for l in range(len(members))]
        metric = None
    else:
        metric = get_loss(t.loss, **dict(t.get("loss_kwargs", {})))
    warmup = int(round(float(c.warmup_epochs) * int(t.steps_per_epoch)))
    return MutualLearningCohort(
        members, metric_loss=metric, heads=heads,
        relation_weight=relation_weight(config) if "md" in used else 0.0,
        warmup_steps=warmup,
        update_probabilities=update_probabilities(config) if "td" in used else None,
        devices=devices, seed=seed, name=method.row_prefix.replace("+", "_"))


def training_data(domain, config, method, start_step=0):
    """The cohort's stream; with view diversity each member gets its own draw of the training
    transform (``train.crop``: 003's HORDE-style crops in the paper recipes; the flip where the
    domain allows it)."""
    used = CohortMethod.of(method).diversities
    t = config.train
    view = CohortViews(int(config.cohort.size)) if "vd" in used else None
    return training_batches([domain.train], int(t.classes_per_batch), int(t.images_per_class),
                            seed=int(config.seed), view=view, start_step=start_step,
                            **train_transform(config, [domain]))


def train_cohort(method, domain, config, run_dir, num_classes, pretrained=None):
    """Trains one cohort (members on their devices); saves ``member<l>.keras`` files."""
    os.makedirs(run_dir, exist_ok=True)
    cohort = build_cohort(method, config, num_classes, pretrained)
    cohort.compile(optimizer=make_optimizer(config.train), **compile_kwargs(config))
    recall = RecallAtKCallback(eval_sets([domain], [0], config), ks=tuple(config.eval.ks),
                               every_n_epochs=int(config.eval.every_n_epochs))
    t = config.train
    fit_for_steps(cohort, functools.partial(training_data, domain, config, method), int(t.steps),
                  int(t.steps_per_epoch), run_dir, recall, what=f"cohort {method} on {domain.name}",
                  batch_size=int(t.classes_per_batch) * int(t.images_per_class),
                  checkpoint_every=checkpoint_every(config))
    for l, member in enumerate(cohort.members):
        atomic_save(member, os.path.join(run_dir, f"member{l}.keras"))
    return cohort


def distill_rkd(cohort, domain, config, run_dir, strategy):
    """003 §4.6: the cohort's ensemble → one fresh single model by RKD-DA (no metric loss)."""
    from tfembed.training.builders import build_model  # noqa: PLC0415

    os.makedirs(run_dir, exist_ok=True)
    c, m, t = config.cohort, config.model, config.train
    teacher = cohort.ensemble_model()
    with strategy.scope():
        keras.utils.set_random_seed(int(config.seed) + 7)
        student = build_model(m, name="rkd_student")
        distiller = Distiller(teacher, student, distill_loss=get_loss("rkd", **dict(c.rkd)),
                              metric_loss=None)
        distiller.compile(optimizer=make_optimizer(t), **compile_kwargs(config))
    recall = RecallAtKCallback(eval_sets([domain], [0], config), ks=tuple(config.eval.ks),
                               every_n_epochs=int(config.eval.every_n_epochs))
    ds = functools.partial(training_batches, [domain.train], int(t.classes_per_batch),
                           int(t.images_per_class), seed=int(config.seed) + 1,
                           **train_transform(config, [domain]))
    fit_for_steps(distiller, ds, int(t.steps), int(t.steps_per_epoch), run_dir, recall,
                  what=f"RKD-DA student of {cohort.name}",
                  batch_size=int(t.classes_per_batch) * int(t.images_per_class),
                  checkpoint=SaveStudent(os.path.join(run_dir, "checkpoint.keras")),
                  checkpoint_every=checkpoint_every(config))
    atomic_save(student, os.path.join(run_dir, "model.keras"))
    logging.info("distilled %s into %s", cohort.name, student.name)
    return student


def evaluate_cohort(cohort, prefix, domains, config):
    """``[(name, model, rows)]`` for each member and the ensemble.

    The ensemble is the concatenation of the members' embeddings (``ensemble_model``), so its
    rows are scored on the members' embeddings rather than by a second forward pass of every
    member (in ``dm2_demo`` on 2 CPU cores, a cohort's evaluation took ~50 s before, ~20 s
    after)."""
    ks = tuple(config.eval.ks)
    kw = {"spec": image_spec(config.model), "batch_size": int(config.eval.batch_size)}
    names = [f"{prefix}/member{l}" for l in range(len(cohort.members))] + [f"{prefix}/ensemble"]
    models = list(cohort.members) + [cohort.ensemble_model()]
    if is_uned(domains):  # UnED's protocol embeds and scores each model itself
        return [(n, m, evaluate(m, domains, name=n, offsets=[0], ks=ks, fused=False, **kw))
                for n, m in zip(names, models)]
    embedded = [embed_domains(m, domains, [0], **kw) for m in cohort.members]
    ensemble = {}
    for domain, (_, ql, g, gl) in embedded[0].items():
        parts = [e[domain] for e in embedded]
        ensemble[domain] = (np.concatenate([p[0] for p in parts], axis=1), ql,
                            None if g is None else np.concatenate([p[2] for p in parts], axis=1),
                            gl)
    return [(n, m, evaluate_embeddings(n, e, ks, fused=False))
            for n, m, e in zip(names, models, embedded + [ensemble])]


def run_cohort(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))  # the RKD student's
    check_config(config)  # method typos fail before anything trains
    domains = load_domains(config, single="cohort")
    domain = domains[0]
    ks = tuple(config.eval.ks)
    num_classes = int(domain.train.labels.max()) + 1
    rows, models = [], {}
    pretrained = None
    if config.cohort.get("pretrain_domain"):
        # The analogue of 003's ImageNet initialisation: one network trained on another domain,
        # whose backbone every member of every cohort starts from.
        source = load_domain(config.cohort.pretrain_domain,
                             data_dir=config.get("data_dir") or None)
        pretrained, _ = train_specialist(source, config, os.path.join(workdir, "pretrained"),
                                         strategy, name=f"pretrained_{source.name}")

    def save_rows(name, model, new_rows):
        rows.extend(new_rows)
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
        models[name] = model

    def evaluate_and_save(name, model):
        save_rows(name, model, evaluate(model, domains, name=name, offsets=[0], ks=ks,
                                        fused=False, spec=image_spec(config.model),
                                        batch_size=int(config.eval.batch_size)))

    for method in entries(CohortMethod, config.cohort.methods):
        prefix = method.row_prefix
        start = time.time()
        cohort = train_cohort(method, domain, config, os.path.join(workdir, prefix),
                                         num_classes, pretrained)
        logging.info("trained cohort %s in %.1f s", method, time.time() - start)
        for name, model, new_rows in evaluate_cohort(cohort, prefix, domains, config):
            save_rows(name, model, new_rows)
        if method.distill_rkd:
            student = distill_rkd(cohort, domain, config,
                                             os.path.join(workdir, prefix, "rkd_student"),
                                             strategy)
            evaluate_and_save(f"{prefix}/rkd_student", student)
    write_report(workdir, config.recipe, config.to_dict(), rows)
    print(format_model_table(rows, ks, extra=()))
    export_models(config, workdir, [(export_name(name), models[name])
                                     for name in config.cohort.get("export", [])
                                     if name in models])
    return rows
