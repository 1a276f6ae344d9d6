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
softmax ×1 on the pre-normalisation FC output, verification ×5 next to triplet ×0.1), and with
``distill.teacher_heads`` to the teacher too (004 trains its teacher with the student's losses;
see :func:`train_teacher`). ``distill.cross_quality`` (001 §5.4)
gives teacher and students different views: ``lowres`` (students see images down-sampled to
``distill.low_resolution_size`` and back up, in training and test) or ``uncropped`` (the
teacher is trained and tested on bounding-box crops, the students on the whole images).

``distill.lambda_search`` (off by default) chooses λ of the embedding-level term by
cross-validation, as 001 §4 does ("learned by cross validation", DESIGN §6): the last
``val_fraction`` of a seeded permutation of the *training* classes is held out, a student is
trained on the remaining training classes for each λ of a log-spaced grid, the λ with the best
Recall@1 on the held-out classes is chosen, and the real student is trained on the whole training
split with it. The test split is never read. See :class:`LambdaSearch`; the choice goes to
report.json under ``"selection"``.
"""

import dataclasses
import functools
import math
import os
import time
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfembed.configs._method import entries
from tfembed.data.pipeline import (
    eval_dataset,
    labelled_mask,
    split_labelled,
    training_batches,
    unlabelled_batches,
)
from tfembed.data.types import Domain, Split
from tfembed.data.views import StudentView
from tfembed.distill.config import EMBEDDING_TERMS, DistillMethod
from tfembed.distill.distiller import Distiller
from tfembed.evaluation.clustering import nmi_f1
from tfembed.evaluation.protocol import embed_domains, evaluate_embeddings
from tfembed.evaluation.report import format_model_table, write_report
from tfembed.evaluation.retrieval import recall_at_k
from tfembed.io import atomic_save
from tfembed.losses import LargeMarginSoftmaxHead, VerificationHead, get_loss
from tfembed.models import load_embedder
from tfembed.specialists.runner import train_specialist
from tfembed.training.builders import (
    build_model,
    checkpoint_every,
    compile_kwargs,
    eval_sets,
    export_models,
    image_spec,
    load_domains,
    make_optimizer,
    teacher_cache,
    teacher_cache_view,
    train_transform,
)
from tfembed.training.callbacks import RecallAtKCallback, SaveStudent
from tfembed.training.loop import fit_for_steps
from tfembed.training.strategy import get_strategy

CROSS_QUALITY = ("none", "lowres", "uncropped")


def parse_method(method):
    """``(terms, data)`` of a :class:`DistillMethod` entry (a dict of its fields or a name such
    as ``ml+rel+at@semi``); a bad entry is a clear error."""
    entry = DistillMethod.of(method)
    return list(entry.terms), entry.data


def check_config(config):
    """Fails early (before the teacher trains) on typos in the ``distill`` block."""
    d = config.distill
    for method in [m.name for m in entries(DistillMethod, d.methods)]:
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
    if bool(d.get("teacher_heads", False)) and not dict(d.heads):
        raise ValueError("distill.teacher_heads trains the teacher with distill.heads, which is "
                         "empty")
    if d.cross_quality not in CROSS_QUALITY:
        raise ValueError(f"distill.cross_quality must be one of {CROSS_QUALITY}, got "
                         f"{d.cross_quality!r}")
    # Loss hyper-parameters (e.g. loss_kwargs.rel.aggregation) fail now, not after the teacher.
    for term in {t for m in d.methods for t in parse_method(m)[0] if t in EMBEDDING_TERMS}:
        try:
            get_loss(EMBEDDING_TERMS[term], **dict(d.loss_kwargs.get(term, {})))
        except (TypeError, ValueError) as err:
            raise ValueError(f"distill.loss_kwargs.{term}: {err}") from None
    lambda_search_settings(config)   # typos in distill.lambda_search fail here too
    if teacher_cache_view(config) is not None:
        # The cache holds teacher embeddings of labelled c×k streams' fixed views only.
        for method in [m.name for m in entries(DistillMethod, d.methods)]:
            terms, data = parse_method(method)
            if {"hint", "at"} & set(terms) or data in ("semi", "unlabelled") or \
                    d.cross_quality != "none":
                raise ValueError(
                    f"distill method {method!r} cannot use teacher_cache.mode="
                    f"{config.teacher_cache.mode!r}: the cache holds teacher embeddings (no "
                    "feature maps for hint/at) of the labelled stream without a cross-quality "
                    "view; set teacher_cache.mode=off")


def row_name(method):
    return f"student/{DistillMethod.of(method).name}"


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
    return Domain(domain.name, {**domain.splits, "train": split}, domain.num_classes,
                  hflip=domain.hflip)


def labelled_parts(domain, config):
    """``(labelled, unlabelled)`` training splits (unlabelled None without semi-supervision)."""
    if getattr(domain, "partition", None) is not None:
        return domain.partition   # a λ-search domain keeps the run's own draw (SearchDomain)
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
    ds = eval_dataset(split, int(config.eval.batch_size), spec=image_spec(config.teacher),
                      **teacher_view(config))
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
    t, d = config.train, config.distill
    # The split carries its domain's flip policy (Split.hflip).
    kw = dict(seed=int(config.seed), start_step=start_step, **train_transform(config, [split]))
    cross_quality = d.cross_quality != "none"
    if labelled:
        # A cached teacher's keys, or the student's degraded view (001's cross-quality); the
        # recipe check refuses both at once.
        view = (StudentView(d.cross_quality, int(d.low_resolution_size)) if cross_quality
                else teacher_cache_view(config))
        return training_batches([split], int(t.classes_per_batch), int(t.images_per_class),
                                view=view, **kw)
    if cross_quality:
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

def build_distiller(method, student, teacher, config, num_classes, teacher_classifier=None,
                    name=None):
    """The :class:`Distiller` of ``method`` (not compiled); ``teacher`` may be None for a method
    without teacher terms (``ml``: the model's own losses and heads)."""
    terms, _ = parse_method(method)
    d, t = config.distill, config.train
    weights = dict(d.weights)
    embedding_terms = [x for x in terms if x in EMBEDDING_TERMS]
    distill_loss = None
    if embedding_terms:
        term = embedding_terms[0]
        distill_loss = get_loss(EMBEDDING_TERMS[term], **dict(d.loss_kwargs.get(term, {})))
    return Distiller(
        teacher, student, distill_loss=distill_loss,
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
        name=name or export_name(method).replace("student_", "distiller_", 1))


def train_teacher(domain, config, run_dir, strategy):
    """Trains the run's teacher on :func:`teacher_domain` with :func:`teacher_config` and saves
    ``<run_dir>/model.keras``; returns ``(teacher, recall_history)``.

    Without ``distill.teacher_heads`` the teacher is a plain specialist on ``train.loss``. With
    it, the teacher trains as method ``ml`` does — ``train.loss`` weighted by
    ``distill.metric_weight`` plus ``distill.heads`` (a :class:`Distiller` without a teacher) —
    on the same data and schedule: 004's teacher is trained with the losses of its students
    (L-Softmax ×1, verification ×5, triplet ×0.1; the authors' code, TuSimple/DarkRank
    ``reid.py``, trains the Inception-BN teacher with the very network head the NIN-BN student
    gets). The heads are dropped; the embedder is the teacher.
    """
    t_config = teacher_config(config)
    trainer = None
    if bool(config.distill.get("teacher_heads", False)):
        num_classes = num_train_classes(domain.train)

        def trainer(model):
            return build_distiller("ml", model, None, t_config, num_classes,
                                   name="teacher_trainer")

    return train_specialist(teacher_domain(domain, config), t_config, run_dir, strategy,
                            name="teacher", trainer=trainer)


def train_student(method, domain, teacher, config, run_dir, strategy, teacher_classifier=None,
                  num_classes=None):
    """Trains the student of ``method`` and saves ``<run_dir>/model.keras``.

    ``num_classes``: the class count of the student's heads (default: ``domain.train``'s); it
    must match ``teacher_classifier``'s when KD compares their logits.

    Returns ``(student, recall_history)``.
    """
    terms, data = parse_method(method)
    os.makedirs(run_dir, exist_ok=True)
    num_classes = int(num_classes or num_train_classes(domain.train))
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


# ------------------------------------------------------------------------ λ by cross-validation

#: Keys of ``distill.lambda_search`` (see ``configs/_base.py`` ``distill_defaults``).
LAMBDA_SEARCH_KEYS = ("terms", "grid", "term_grids", "val_fraction", "steps", "teacher")
#: The teachers a λ search can use (see :class:`LambdaSearch`).
SEARCH_TEACHERS = ("full", "reduced")


def _positive_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def lambda_search_settings(config):
    """The checked ``distill.lambda_search`` block as a plain dict, or None when it is off.

    Off: the block is missing or empty, or its ``terms`` list is empty. A wrong key, term or
    value is a ValueError naming the key (:func:`check_config` calls this before anything
    trains). Returns ``{"terms", "grids": {term: sorted λ values}, "val_fraction", "steps",
    "teacher"}``.
    """
    block = config.distill.get("lambda_search", None)
    block = dict(block.to_dict() if hasattr(block, "to_dict") else (block or {}))
    where = "distill.lambda_search"
    for key in block:
        if key not in LAMBDA_SEARCH_KEYS:
            raise ValueError(f"{where}.{key} is not a lambda_search key; keys: "
                             f"{', '.join(LAMBDA_SEARCH_KEYS)}")
    terms = list(dict.fromkeys(block.get("terms", []) or []))
    term_grids = dict(block.get("term_grids", {}) or {})
    for key, names in (("terms", terms), ("term_grids", list(term_grids))):
        for term in names:
            if term not in EMBEDDING_TERMS:
                raise ValueError(f"{where}.{key}: {term!r} is not an embedding-level teacher "
                                 f"term; λ can be searched for {', '.join(EMBEDDING_TERMS)}")
    if not terms:
        return None
    grids = {}
    for term in terms:
        key = f"term_grids.{term}" if term in term_grids else "grid"
        values = list(term_grids.get(term, block.get("grid", [])) or [])
        if not values or not all(_positive_number(v) for v in values):
            raise ValueError(f"{where}.{key} must be a non-empty list of positive λ values "
                             f"(log-spaced, e.g. [0.1, 0.3, 1, 3, 10]), got {values!r}")
        grids[term] = sorted({float(v) for v in values})
    fraction = block.get("val_fraction", 0.2)
    if not (_positive_number(fraction) and fraction < 1):
        raise ValueError(f"{where}.val_fraction must be in (0, 1), got {fraction!r}")
    steps = block.get("steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{where}.steps must be an integer >= 0 (0: train.steps), got {steps!r}")
    teacher = block.get("teacher", "full")
    if teacher not in SEARCH_TEACHERS:
        raise ValueError(f"{where}.teacher must be one of {', '.join(SEARCH_TEACHERS)}, got "
                         f"{teacher!r}")
    return {"terms": terms, "grids": grids, "val_fraction": float(fraction),
            "steps": int(steps), "teacher": teacher}


def searched_term(method, settings):
    """The embedding-level term of ``method`` whose λ the search chooses, or None."""
    if settings is None:
        return None
    terms, _ = parse_method(method)
    return next((t for t in terms if t in EMBEDDING_TERMS and t in settings["terms"]), None)


def validation_classes(split, seed, val_fraction):
    """``(remaining, validation)`` class ids of a training split, both sorted.

    The validation classes are the last ``val_fraction`` (rounded; at least one, at most all
    but one) of a permutation of the split's classes seeded by ``seed``: whole classes, as the
    test classes are, so the validation measures what the test measures (retrieval of unseen
    classes).
    """
    classes = np.unique(split.labels)
    n = len(classes)
    if n < 2:
        raise ValueError(f"distill.lambda_search holds out whole training classes, but the "
                         f"training split has {n} class(es); it needs at least 2")
    n_val = min(n - 1, max(1, int(round(float(val_fraction) * n))))
    order = np.random.default_rng([int(seed), 0x1A3B]).permutation(classes)
    return np.sort(order[: n - n_val]), np.sort(order[n - n_val:])


@dataclasses.dataclass
class SearchDomain(Domain):
    """The domain a λ search trains and validates on, cut from a training split alone.

    ``splits``: ``train`` = the images of the remaining training classes, ``test`` = the
    images of the held-out validation classes (only the labelled ones under semi-supervision:
    the others have no label to validate with). No image of the real test split.

    Attributes:
      partition: the semi-supervised ``(labelled, unlabelled)`` parts of ``train``, cut from the
        real run's own draw (an image is labelled in the search iff it is in the real run), or
        None without semi-supervision. :func:`labelled_parts` returns it as it is.
    """

    partition: Optional[Tuple[Split, Optional[Split]]] = None


def search_domain(domain, config, val_fraction):
    """The :class:`SearchDomain` of ``domain``'s training split (``validation_classes`` seeded by
    ``config.seed``).

    Under semi-supervision the unlabelled images of the validation classes are left out too,
    although in the 001 §5.2 setting their labels are hidden: the validation classes are held
    out as if before the labels were dropped, so no search student sees an image of a class it
    is validated on, as the real students never see the test classes.
    """
    train = domain.train
    _, val = validation_classes(train, int(config.seed), val_fraction)
    in_val = np.isin(train.labels, val)
    fraction = float(config.distill.labelled_fraction)
    partition = None
    val_rows = np.flatnonzero(in_val)
    if fraction < 1.0:
        keep = labelled_mask(train, fraction, seed=int(config.seed))   # labelled_parts' draw
        partition = (train.subset(np.flatnonzero(keep & ~in_val)),
                     train.subset(np.flatnonzero(~keep & ~in_val)))
        val_rows = np.flatnonzero(keep & in_val)
    fields = {f.name: getattr(domain, f.name) for f in dataclasses.fields(Domain)}
    fields["splits"] = {"train": train.subset(np.flatnonzero(~in_val)),
                        "test": train.subset(val_rows)}
    return SearchDomain(**fields, partition=partition)


def choose_lambda(trials, default):
    """The λ of the best ``(λ, validation R@1)`` trial. Ties go to the λ nearest ``default``
    (the recipe's ``distill.weights[term]``) on a log scale, then to the smaller: without
    evidence the recipe's value stands (e.g. a validation R@1 of 1 everywhere)."""
    best = max(r for _, r in trials)
    tied = [v for v, r in trials if r >= best - 1e-12]
    prior = math.log(default) if default and default > 0 else 0.0
    return min(tied, key=lambda v: (abs(math.log(v) - prior), v))


class LambdaSearch:
    """λ of a student's embedding-level term chosen by cross-validation (001 §4: λ "is learned
    by cross validation"; 001 §5.1: "The optimal parameters are selected according to the
    performance on the validation set ... We use the whole training set to retrain with optimal
    parameters"; DESIGN §6).

    For a method whose embedding-level term is in ``distill.lambda_search.terms`` (``ml+rel``,
    ``ml+abs+at``, ``rel@unlabelled``...), :meth:`configure` trains one student per λ of the
    term's grid (``term_grids[term]``, else ``grid``) on the remaining training classes of
    :func:`search_domain`, for ``steps`` steps (0: ``train.steps``), everything else as the real
    student (terms, data, μ / κ, heads, views, seed, initialisation); measures each one's
    Recall@1 on the held-out validation classes (each validation image queries the others, in
    the students' evaluation view); and returns the recipe with ``distill.weights[term]`` set to
    the best λ (ties: :func:`choose_lambda`), with which the pipeline trains the real student on
    the whole training split. Each method is searched on its own, as the paper selects per
    experiment. A grid of one value is no search: that λ, nothing trained. The trials live in
    ``<workdir>/lambda_search/<student>/lambda_<λ>/`` (a rerun resumes them).

    The real test split is never read: the search only sees the :class:`SearchDomain` cut from
    the training split.

    The teacher (``distill.lambda_search.teacher``):

    * ``"full"`` (default): the run's own teacher, trained on the whole training split, the
      validation classes included. Nothing of the test classes leaks and it costs no extra
      training (the authors' code, too, distils every student from one teacher checkpoint),
      but it is optimistic: on the validation classes the teacher is better than it is on
      unseen classes, so the teacher's terms look more useful at validation than at test, which
      can favour a larger λ.
    * ``"reduced"``: a teacher trained from the recipe's ``teacher`` block on the remaining
      classes only (``<workdir>/lambda_search/teacher``, even when ``teachers`` supplies the
      run's teacher): the validation classes are as new to it as the test classes are to the
      real teacher, an unbiased analogue of the real run, for the price of a second teacher.

    Args:
      domain: the run's domain (only its training split is used).
      teacher: the run's teacher; teacher_classifier: its Hinton-KD classifier (or None).
      config: the resolved recipe; workdir: the run directory; strategy: tf.distribute strategy.
    """

    def __init__(self, domain, teacher, config, workdir, strategy, teacher_classifier=None):
        self.settings = lambda_search_settings(config)
        self.domain, self.teacher, self.config = domain, teacher, config
        self.directory = os.path.join(workdir, "lambda_search")
        self.strategy = strategy
        self.teacher_classifier = teacher_classifier
        self._search_domain = None
        self._reduced = None
        self.records = {}   # row name -> record, the report's "selection"

    @property
    def search_domain(self):
        if self._search_domain is None:
            self._search_domain = search_domain(self.domain, self.config,
                                                self.settings["val_fraction"])
        return self._search_domain

    def _search_teacher(self):
        """``(teacher, classifier)`` that guide the trial students."""
        if self.settings["teacher"] == "full":
            return self.teacher, self.teacher_classifier
        if self._reduced is None:
            c = self.config
            # As the run's teacher is trained (train_teacher), on the remaining classes only.
            teacher, _ = train_teacher(self.search_domain, c,
                                       os.path.join(self.directory, "teacher"), self.strategy)
            classifier = None
            if self.teacher_classifier is not None:
                classifier = fit_teacher_classifier(
                    teacher, teacher_domain(self.search_domain, c).train, c,
                    num_train_classes(self.search_domain.train))
            self._reduced = (teacher, classifier)
        return self._reduced

    def validation_recall(self, student):
        """Recall@1 of ``student`` on the validation classes (its evaluation view)."""
        embedded = embed_domains(student, [self.search_domain], [0],
                                 spec=image_spec(self.config.model),
                                 batch_size=int(self.config.eval.batch_size),
                                 **student_view(self.config))
        q, ql, _, _ = embedded[self.search_domain.name]
        return float(recall_at_k(q, ql, ks=(1,))[1])

    def select(self, method):
        """The selection record of ``method`` (None when none of its terms is searched)."""
        term = searched_term(method, self.settings)
        if term is None:
            return None
        s, c = self.settings, self.config
        grid = s["grids"][term]
        default = float(dict(c.distill.weights).get(term, 1.0))
        record = {"parameter": f"distill.weights.{term}", "term": term, "grid": grid,
                  "metric": "recall@1", "default": default, "searched": len(grid) > 1,
                  "trials": [], "chosen": grid[0]}
        name = row_name(method)
        if len(grid) == 1:
            logging.info("λ search for %s: one value in the grid, λ = %g (nothing trained)",
                         name, grid[0])
            return record
        domain = self.search_domain
        steps = s["steps"] or int(c.train.steps)
        record.update({
            "val_fraction": s["val_fraction"], "steps": steps, "teacher": s["teacher"],
            "train_classes": int(len(domain.train.classes)),
            "val_classes": int(len(domain.splits["test"].classes)),
            "train_images": int(len(domain.train)), "val_images": int(len(domain.splits["test"])),
            "tie_break": "nearest the default on a log scale, then the smaller"})
        if record["val_classes"] < 2:
            logging.warning("λ search for %s: one validation class, so Recall@1 is 1 for every "
                            "λ and the default stands; use more training classes or a larger "
                            "val_fraction", name)
        teacher, classifier = self._search_teacher()
        trial = c.copy_and_resolve_references()
        trial.train.steps = steps
        trial.teacher_cache.dir = ""   # its own cache next to the trials, not the run's
        for value in grid:
            trial.distill.weights[term] = float(value)
            run_dir = os.path.join(self.directory, export_name(method), f"lambda_{value:g}")
            # The full teacher's KD classifier was fitted on every training class (labels keep
            # their ids in the search split), so the trial heads are as wide.
            classes = (num_train_classes(self.domain.train)
                       if self.settings["teacher"] == "full" else None)
            student, _ = train_student(method, domain, teacher, trial, run_dir, self.strategy,
                                       teacher_classifier=classifier, num_classes=classes)
            recall = self.validation_recall(student)
            record["trials"].append({"lambda": float(value), "val_recall@1": recall})
            logging.info("λ search for %s: λ = %g → validation R@1 %.4f", name, value, recall)
        record["chosen"] = choose_lambda(
            [(t["lambda"], t["val_recall@1"]) for t in record["trials"]], default)
        logging.info("λ search for %s: chose λ = %g of %s (%d validation classes, %d training "
                     "classes, %d steps, %s teacher)", name, record["chosen"], grid,
                     record["val_classes"], record["train_classes"], steps, s["teacher"])
        return record

    def configure(self, method):
        """``(config, record)``: the recipe the real student of ``method`` trains with (λ of its
        searched term set to the choice) and the selection record (None, and the recipe
        unchanged, when nothing is searched for it)."""
        record = self.select(method)
        if record is None:
            return self.config, None
        self.records[row_name(method)] = record
        c = self.config.copy_and_resolve_references()
        c.distill.weights[record["term"]] = float(record["chosen"])
        return c, record


def run_distill(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    check_config(config)  # method typos fail before the teacher trains
    domains = load_domains(config, single="distill")
    domain = domains[0]
    d = config.distill
    ks = tuple(config.eval.ks)
    rows, students, selection = [], {}, {}

    def report(echo=False):   # report.json, with the λ choices once there are some
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=echo,
                     extra={"selection": selection} if selection else None)

    def evaluate(name, model, model_cfg, view):
        start = time.time()
        embedded = embed_domains(model, domains, [0], spec=image_spec(model_cfg),
                                 batch_size=int(config.eval.batch_size), **view)
        new = evaluate_embeddings(name, embedded, ks, fused=False)
        if d.get("clustering", True):
            q, ql, g, gl = embedded[domain.name]
            x, y = (q, ql) if g is None else (np.concatenate([q, g]), np.concatenate([ql, gl]))
            new[0].update(nmi_f1(x, y, seed=int(config.seed)))
        rows.extend(new)
        report()
        logging.info("evaluated %s in %.1f s", name, time.time() - start)

    teachers = list(config.get("teachers", []) or [])
    if teachers:
        if len(teachers) != 1:
            raise ValueError(f"the distill pipeline takes one teacher, got {teachers}")
        teacher = load_embedder(teachers[0])
    else:
        # A plain specialist, or with distill.teacher_heads the students' heads too (004).
        teacher, _ = train_teacher(domain, config, os.path.join(workdir, "teacher"),
                                               strategy)
    evaluate(f"teacher/{config.teacher.backbone}", teacher, config.teacher,
             teacher_view(config))
    classifier = None
    if any("kd" in parse_method(m)[0] for m in d.methods):
        classifier = fit_teacher_classifier(
            teacher, teacher_domain(domain, config).train, config,
            num_train_classes(domain.train))
    # distill.lambda_search: λ by cross-validation on held-out training classes (001 §4).
    search = LambdaSearch(domain, teacher, config, workdir, strategy, classifier)
    for method in [m.name for m in entries(DistillMethod, d.methods)]:
        name = row_name(method)
        start = time.time()
        method_config, record = search.configure(method)
        if record is not None:
            selection[name] = record
            report()
        students[method], _ = train_student(
            method, domain, teacher, method_config, os.path.join(workdir, name), strategy,
            teacher_classifier=classifier)
        logging.info("trained %s in %.1f s", name, time.time() - start)
        evaluate(name, students[method], config.model, student_view(config))
    report(echo=True)
    print(format_model_table(rows, ks))
    export_models(config, workdir, [(export_name(m), students[m])
                                     for m in d.get("export", []) if m in students])
    return rows
