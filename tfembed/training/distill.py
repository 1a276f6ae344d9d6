"""Training compact students from one teacher (papers 001 and 004): methods, data, heads.

A recipe's ``distill.methods`` lists the students to train after the teacher; each is a row
``student/<method>`` in report.json. A method is ``+``-joined terms, optionally followed by
``@<data>``:

* terms: ``ml`` (the student's metric loss, ``train.loss``), ``abs`` (absolute teacher),
  ``rel`` (relative teacher), ``direct`` (direct distance match, DarkRank's baseline),
  ``darkrank_hard`` / ``darkrank_soft``, ``rkd``, ``snd`` (at most one of these
  embedding-level terms), ``hint`` (``distill.hint_layers``), ``at``
  (``distill.attention_layers``), ``kd`` (Hinton KD on class logits; needs an ``lsoftmax`` head)
  — each weighted by ``distill.weights[term]`` (λ, μ, κ of 001 Eq. 7/9/12);
* data (001 §5.2, with ``distill.labelled_fraction`` < 1): ``@labelled`` (the labelled part
  only), ``@semi`` (labelled c×k batches and unlabelled random batches, label -1, in proportion
  to their sizes: labelled rows get every term, unlabelled rows only the teacher terms),
  ``@unlabelled`` (the unlabelled part only, teacher terms only); no suffix: the whole training
  split, labelled.

``distill.heads`` adds supervised heads owning weights to every student (DarkRank: large-margin
softmax ×1 and verification ×5 next to triplet ×0.1). ``distill.cross_quality`` (001 §5.4)
gives teacher and students different views: ``lowres`` (students see images down-sampled to
``distill.low_resolution_size`` and back up, in training and test) or ``uncropped`` (the
teacher is trained and tested on bounding-box crops, the students on the whole images).
"""

import functools
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfembed.data.preprocess import (
    eval_dataset,
    split_labelled,
    training_batches,
    unlabelled_batches,
)
from tfembed.data.types import Domain
from tfembed.evaluation.report import atomic_save
from tfembed.losses import LargeMarginSoftmaxHead, VerificationHead, get_loss
from tfembed.models.distiller import Distiller
from tfembed.training.callbacks import RecallAtKCallback, SaveStudent
from tfembed.training.specialist import (
    build_model,
    checkpoint_every,
    compile_kwargs,
    eval_sets,
    fit_for_steps,
    make_optimizer,
    teacher_cache,
    teacher_cache_views,
)

#: Embedding-level teacher terms → registered loss names (one per method at most).
EMBEDDING_TERMS = {"abs": "absolute_teacher", "rel": "relative_teacher",
                   "direct": "direct_match", "darkrank_hard": "darkrank_hard",
                   "darkrank_soft": "darkrank_soft", "rkd": "rkd", "snd": "snd"}
OTHER_TERMS = ("ml", "hint", "at", "kd")
DATA = ("full", "labelled", "semi", "unlabelled")
CROSS_QUALITY = ("none", "lowres", "uncropped")


def parse_method(method):
    """``(terms, data)`` of a method name such as ``ml+rel+at@semi``; typos are a clear error."""
    body, _, data = str(method).partition("@")
    data = data or "full"
    terms = [t for t in body.split("+") if t]
    known = (*EMBEDDING_TERMS, *OTHER_TERMS)
    bad = [t for t in terms if t not in known]
    if bad or not terms or data not in DATA:
        raise ValueError(f"cannot parse distill method {method!r} (distill.methods): terms are "
                         f"+-joined from {', '.join(known)}, optionally followed by @<data> "
                         f"with data in {', '.join(DATA[1:])}")
    if sum(t in EMBEDDING_TERMS for t in terms) > 1:
        raise ValueError(f"distill method {method!r} has more than one embedding-level teacher "
                         f"term ({', '.join(EMBEDDING_TERMS)}); use one")
    if data == "unlabelled" and ("ml" in terms):
        raise ValueError(f"distill method {method!r}: unlabelled data has no labels for 'ml'")
    return terms, data


def check_config(config):
    """Fails early (before the teacher trains) on typos in the ``distill`` block."""
    d = config.distill
    for method in d.methods:
        terms, data = parse_method(method)
        if data != "full" and float(d.labelled_fraction) >= 1.0:
            raise ValueError(f"distill method {method!r} uses @{data} but "
                             "distill.labelled_fraction is 1 (nothing is unlabelled)")
        if "hint" in terms and not list(d.hint_layers):
            raise ValueError(f"distill method {method!r} uses 'hint' but distill.hint_layers "
                             "is empty")
        if "at" in terms and not list(d.attention_layers):
            raise ValueError(f"distill method {method!r} uses 'at' but "
                             "distill.attention_layers is empty")
        if "kd" in terms and "lsoftmax" not in dict(d.heads):
            raise ValueError(f"distill method {method!r} uses 'kd', which compares class "
                             "logits: add an 'lsoftmax' entry to distill.heads")
    if d.cross_quality not in CROSS_QUALITY:
        raise ValueError(f"distill.cross_quality must be one of {CROSS_QUALITY}, got "
                         f"{d.cross_quality!r}")
    if teacher_cache_views(config) is not None:
        # The cache holds teacher embeddings of labelled c×k streams' fixed views only.
        for method in d.methods:
            terms, data = parse_method(method)
            if {"hint", "at"} & set(terms) or data in ("semi", "unlabelled") or \
                    d.cross_quality != "none":
                raise ValueError(
                    f"distill method {method!r} cannot use teacher_cache.mode="
                    f"{config.teacher_cache.mode!r}: the cache holds teacher embeddings (no "
                    "feature maps for hint/at) of the labelled stream without a cross-quality "
                    "view; set teacher_cache.mode=off")


def row_name(method):
    return f"student/{method}"


def export_name(method):
    """SavedModel name of a method's student (``ml+rel@semi`` → ``student_ml_rel_semi``)."""
    return row_name(method).replace("/", "_").replace("+", "_").replace("@", "_")


def teacher_view(config):
    """Evaluation-view keyword arguments of the teacher (box crops in ``uncropped`` mode)."""
    return {"crop_boxes": config.distill.cross_quality == "uncropped"}


def student_view(config):
    """Evaluation-view keyword arguments of the students (low resolution in ``lowres`` mode)."""
    d = config.distill
    return {"low_resolution_size": int(d.low_resolution_size) if d.cross_quality == "lowres"
            else 0}


def _with_train(domain, split):
    return Domain(domain.name, {**domain.splits, "train": split}, domain.num_classes)


def labelled_parts(domain, config):
    """``(labelled, unlabelled)`` training splits (unlabelled None without semi-supervision)."""
    fraction = float(config.distill.labelled_fraction)
    if fraction >= 1.0:
        return domain.train, None
    return split_labelled(domain.train, fraction, seed=int(config.seed))


def teacher_config(config):
    """The recipe with the teacher's model block and view, for ``train_specialist``."""
    c = config.copy_and_resolve_references()
    c.model = config.teacher
    c.train.crop_boxes = config.distill.cross_quality == "uncropped"
    for key, value in dict(config.distill.get("teacher_train", {})).items():
        if key not in c.train:
            raise ValueError(f"distill.teacher_train.{key} is not a train key; train keys: "
                             f"{', '.join(sorted(c.train))}")
        c.train[key] = value
    return c


def teacher_domain(domain, config):
    """The domain the teacher trains on: only the labelled part under semi-supervision (001
    §5.2: the teacher never sees the labels of the 'unlabelled' images)."""
    labelled, _ = labelled_parts(domain, config)
    return _with_train(domain, labelled)


# ------------------------------------------------------------------------------------- heads

def num_train_classes(split):
    """Size of a classifier over the training labels (labels are ids ``< num_classes``)."""
    return int(np.max(split.labels)) + 1


def build_heads(config, num_classes):
    """``[(head layer, weight)]`` from ``distill.heads`` (``lsoftmax``, ``verification``)."""
    heads = []
    for name, spec in dict(config.distill.heads).items():
        spec = dict(spec)
        weight = float(spec.pop("weight", 1.0))
        if name == "lsoftmax":
            heads.append((LargeMarginSoftmaxHead(num_classes, name="lsoftmax_loss", **spec),
                          weight))
        elif name == "verification":
            heads.append((VerificationHead(name="verification_loss", **spec), weight))
        else:
            raise ValueError(f"unknown head {name!r} in distill.heads; use lsoftmax or "
                             "verification")
    return heads


def fit_teacher_classifier(teacher, split, config, num_classes):
    """A frozen linear classifier on the teacher's embeddings, for Hinton KD.

    The teacher is a metric-learning embedder without a class head; a softmax layer fitted on
    its (fixed, evaluation-view) embeddings of the training images supplies the soft targets.
    """
    ds = eval_dataset(split, int(config.eval.batch_size), image_size=int(config.teacher.image_size),
                      resize_size=int(config.teacher.resize_size), **teacher_view(config))
    emb = np.asarray(teacher.predict(ds.map(lambda x, y: x), verbose=0), np.float32)
    keras.utils.set_random_seed(int(config.seed))
    classifier = keras.Sequential([keras.Input((emb.shape[1],)),
                                   keras.layers.Dense(num_classes, name="teacher_logits")],
                                  name="teacher_classifier")
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    history = classifier.fit(emb, split.labels, batch_size=256,
                             epochs=int(config.distill.kd_classifier_epochs), verbose=0)
    logging.info("teacher classifier: training accuracy %.3f",
                 history.history["accuracy"][-1])
    return classifier


# -------------------------------------------------------------------------------------- data

def _batches(split, config, labelled=True, start_step=0):
    m, t, d = config.model, config.train, config.distill
    kw = dict(image_size=int(m.image_size), resize_size=int(m.resize_size), flip=bool(t.flip),
              seed=int(config.seed), start_step=start_step)
    view = d.cross_quality if d.cross_quality != "none" else None
    if labelled:
        return training_batches([split], int(t.classes_per_batch), int(t.images_per_class),
                                student_view=view, low_resolution_size=int(d.low_resolution_size),
                                teacher_views=teacher_cache_views(config), **kw)
    if view is not None:
        raise ValueError("cross-quality and semi-supervised distillation are not combined")
    return unlabelled_batches(split, int(t.classes_per_batch) * int(t.images_per_class), **kw)


def training_data(domain, config, data, start_step=0):
    """The batches of a method's ``data`` (see the module docstring), from batch ``start_step``
    on (a resumed run's position; the streams are pure functions of the seed and step)."""
    labelled, unlabelled = labelled_parts(domain, config)
    if data == "full":
        return _batches(domain.train, config, start_step=start_step)
    if data == "labelled":
        return _batches(labelled, config, start_step=start_step)
    if data == "unlabelled":
        return _batches(unlabelled, config, labelled=False, start_step=start_step)
    # @semi: both streams, each batch from one of them with probability ∝ its image count, so
    # an epoch sees labelled and unlabelled images at their natural ratio. The choice of step s
    # is a stateless draw of (seed, s): replaying the first start_step draws tells where each
    # stream stands when a run resumes.
    fraction = len(labelled) / (len(labelled) + len(unlabelled))
    seed = tf.constant([int(config.seed), 0x5E31], tf.int64)

    def choice(step):
        u = tf.random.stateless_uniform([], seed + [0, step], dtype=tf.float64)
        return tf.cast(u >= fraction, tf.int64)

    from_unlabelled = int(tf.data.Dataset.range(int(start_step)).map(choice).reduce(
        tf.constant(0, tf.int64), lambda a, b: a + b))
    return tf.data.Dataset.choose_from_datasets(
        [_batches(labelled, config, start_step=int(start_step) - from_unlabelled),
         _batches(unlabelled, config, labelled=False, start_step=from_unlabelled)],
        tf.data.Dataset.counter(int(start_step)).map(choice)).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------ models

def build_distiller(method, student, teacher, config, num_classes, teacher_classifier=None):
    """The :class:`Distiller` of ``method`` (not compiled)."""
    terms, _ = parse_method(method)
    d, t = config.distill, config.train
    weights = dict(d.weights)
    embedding_terms = [x for x in terms if x in EMBEDDING_TERMS]
    distill_loss = None
    if embedding_terms:
        term = embedding_terms[0]
        distill_loss = get_loss(EMBEDDING_TERMS[term], **dict(d.loss_kwargs.get(term, {})))
    return Distiller(
        student, teacher, distill_loss=distill_loss,
        distill_weight=float(weights.get(embedding_terms[0], 1.0)) if embedding_terms else 0.0,
        metric_loss=(get_loss(t.loss, **dict(t.get("loss_kwargs", {})))
                     if "ml" in terms else None),
        metric_weight=float(d.get("metric_weight", 1.0)),
        hint_layers=[tuple(p) for p in d.hint_layers] if "hint" in terms else (),
        hint_weight=float(weights.get("hint", 0.0)) if "hint" in terms else 0.0,
        attention_layers=[tuple(p) for p in d.attention_layers] if "at" in terms else (),
        attention_weight=float(weights.get("at", 0.0)) if "at" in terms else 0.0,
        # Heads see only labelled rows; on unlabelled data they learn from KD alone, if at all.
        heads=build_heads(config, num_classes),
        teacher_classifier=teacher_classifier if "kd" in terms else None,
        kd_weight=float(weights.get("kd", 1.0)) if "kd" in terms else 0.0,
        kd_temperature=float(d.get("kd_temperature", 4.0)),
        global_batch=bool(d.get("global_batch", True)),
        name=export_name(method).replace("student_", "distiller_", 1))


def train_student(method, domain, teacher, config, run_dir, strategy, teacher_classifier=None):
    """Trains the student of ``method`` and saves ``<run_dir>/model.keras``.

    Returns ``(student, recall_history)``.
    """
    terms, data = parse_method(method)
    os.makedirs(run_dir, exist_ok=True)
    num_classes = num_train_classes(domain.train)
    if {*EMBEDDING_TERMS, "kd"} & set(terms):
        # Every method of the run on the same data shares one cache (same teacher, stream).
        split = domain.train if data == "full" else labelled_parts(domain, config)[0]
        teacher = teacher_cache(config, [teacher], [split], [domain.name], os.path.join(
            os.path.dirname(run_dir), f"teacher_cache_{data}")) or teacher
    with strategy.scope():
        keras.utils.set_random_seed(int(config.seed))
        student = build_model(config.model, name="student")
        distiller = build_distiller(method, student, teacher, config, num_classes,
                                    teacher_classifier)
        distiller.compile(optimizer=make_optimizer(config.train), **compile_kwargs(config))
    recall = RecallAtKCallback(
        eval_sets([domain], [0], config, **student_view(config)), ks=tuple(config.eval.ks),
        every_n_epochs=int(config.eval.every_n_epochs))
    # The callback embeds with self.model (the distiller), whose call is the student.
    t = config.train
    fit_for_steps(distiller, functools.partial(training_data, domain, config, data), int(t.steps),
                  int(t.steps_per_epoch), run_dir, recall, what=f"student {method}",
                  batch_size=int(t.classes_per_batch) * int(t.images_per_class),
                  checkpoint=SaveStudent(os.path.join(run_dir, "checkpoint.keras")),
                  checkpoint_every=checkpoint_every(config))
    atomic_save(distiller.student, os.path.join(run_dir, "model.keras"))
    return distiller.student, recall.history
