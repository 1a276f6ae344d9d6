"""Training the universal embedding and the paper's baselines (paper 000 §4-5).

A recipe's ``universal.methods`` lists what to build after the specialists
(:class:`tfembed.universal.config.UniversalMethod` entries, named as below), each a row group in
report.json:

* ``concat_pca`` → ``baseline/concat_pca``: the specialists concatenated, PCA to the embedding
  dimension (fitted on training images), L2-normalised.
* ``<loss>_<policy>`` → ``baseline/<loss>_<policy>``: one embedder trained with a metric loss on
  the fused training data; ``<loss>`` is a key of ``universal.fused_losses`` (``triplet``: triplet
  semi-hard, ``ms``: multi-similarity) and ``<policy>`` one of ``naive`` (classes from all domains
  mixed in a batch), ``ds`` (domain-specific: one domain per batch, drawn ∝ its image count),
  ``bal`` (domain-balanced: domains equally likely), ``weighted`` (``universal.weights``).
* ``snd`` / ``rkd`` → ``universal/snd`` / ``universal/rkd``: the student distilled from the
  specialists with :class:`tfembed.universal.UniversalDistiller` under ``universal.policy``;
  ``snd_<policy>`` (``snd_dynamic``, ``snd_bal``...) under its own policy instead.
"""

import functools
import os
import time

import numpy as np
from absl import logging

from tfembed.configs._method import entries
from tfembed.data.pipeline import default_label_offsets, training_batches
from tfembed.data.views import TeacherSpecViews
from tfembed.evaluation.protocol import (
    embed_domains,
    embed_split,
    evaluate,
    evaluate_embeddings,
    is_uned,
)
from tfembed.evaluation.report import format_paper_table, write_report
from tfembed.evaluation.uned import evaluate_uned
from tfembed.io import atomic_save
from tfembed.losses import get_loss
from tfembed.models.concat import concat_features, concat_pca_embedder, fit_pca, largest_input
from tfembed.specialists.runner import specialists_for
from tfembed.training.builders import (
    build_model,
    checkpoint_every,
    compile_kwargs,
    eval_sets,
    export_models,
    image_spec,
    load_domains,
    model_spec,
    make_optimizer,
    metric_loss,
    teacher_cache,
    teacher_cache_view,
    train_transform,
    untrained_baseline,
)
from tfembed.training.callbacks import RecallAtKCallback, SaveStudent
from tfembed.training.loop import fit_for_steps
from tfembed.training.strategy import get_strategy
from tfembed.universal.config import DISTILL_LOSSES, POLICY_ALIASES, UniversalMethod
from tfembed.universal.distiller import UniversalDistiller
from tfembed.universal.dynamic import DynamicDomainSampling, DynamicStream


def fused_loss(method, config):
    """``{"loss", "kwargs"}`` of a fused baseline: its entry in ``universal.fused_losses``."""
    fused = dict(config.universal.fused_losses)
    if method.loss not in fused:
        raise ValueError(f"universal method {method.name!r}: its loss {method.loss!r} is not in "
                         f"universal.fused_losses ({', '.join(sorted(fused))})")
    return fused[method.loss]


def _steps(config):
    u, t = config.universal, config.train
    return (int(u.get("steps") or t.steps), int(u.get("steps_per_epoch") or t.steps_per_epoch))


def _optimizer(config):
    return make_optimizer(config.train, learning_rate=config.universal.get("learning_rate"))


def _batches(domains, offsets, config, policy, multi_domain, start_step=0, view=None):
    t = config.train
    weights = list(config.universal.get("weights") or []) or None
    # flip per domain (train.flip and Domain.hflip): a fused stream of photos and text flips
    # only the photos.
    return training_batches(
        [d.train for d in domains], int(t.classes_per_batch), int(t.images_per_class),
        policy=policy, weights=weights, label_offsets=offsets, seed=int(config.seed),
        multi_domain=multi_domain, view=view, start_step=start_step,
        **train_transform(config, domains))


def _recall_callback(domains, offsets, config):
    return RecallAtKCallback(eval_sets(domains, offsets, config), ks=tuple(config.eval.ks),
                             every_n_epochs=int(config.eval.every_n_epochs))


def train_fused(method, domains, offsets, config, run_dir, strategy):
    """A fused-data baseline (``triplet_ds``...): one embedder, a metric loss, all domains.

    Returns ``(model, recall_history)``.
    """
    method = UniversalMethod.of(method)
    loss = fused_loss(method, config)
    os.makedirs(run_dir, exist_ok=True)
    with strategy.scope():
        model = build_model(config.model, name=f"fused_{method}")
        model.compile(optimizer=_optimizer(config),
                      loss=metric_loss(config, loss["loss"], loss.get("kwargs")),
                      **compile_kwargs(config))
        # Optimizer slots built now, not inside the first trace of the train step (which
        # makes tf.function trace it twice: ~2× the start-up of every run).
        model.optimizer.build(model.trainable_variables)
    steps, per_epoch = _steps(config)
    recall = _recall_callback(domains, offsets, config)
    # Labels are offset per domain, so two domains' class 3 are different classes here.
    fit_for_steps(model, functools.partial(_batches, domains, offsets, config,
                                           POLICY_ALIASES[method.policy], False), steps,
                  per_epoch, run_dir, recall, what=f"baseline {method}",
                  batch_size=int(config.train.classes_per_batch) *
                  int(config.train.images_per_class), checkpoint_every=checkpoint_every(config))
    atomic_save(model, os.path.join(run_dir, "model.keras"))
    return model, recall.history


def distill_loss_for(method, config):
    """The distillation loss object of ``snd`` / ``rkd`` from ``universal.snd`` / ``.rkd``."""
    u, loss = config.universal, UniversalMethod.of(method).loss
    if loss == "snd":
        s = u.snd
        perplexity = float(s.get("perplexity") or 0) or None
        return get_loss("snd", sigma=float(s.sigma),
                        student_sigma=(float(s.student_sigma) if s.get("student_sigma") and
                                       perplexity is None else None),
                        perplexity=perplexity)
    if loss == "rkd":
        r = u.rkd
        return get_loss("rkd", distance_weight=float(r.distance_weight),
                        angle_weight=float(r.angle_weight), delta=float(r.get("delta", 1.0)))
    raise ValueError(f"{method!r} is not a distillation method ({DISTILL_LOSSES})")


def train_distilled(method, domains, offsets, teachers, config, run_dir, strategy):
    """The universal student distilled from ``teachers`` (one per domain, None allowed for a
    domain with a ``universal.domain_losses`` entry). Returns ``(student, recall_history)``."""
    u, method = config.universal, UniversalMethod.of(method)
    os.makedirs(run_dir, exist_ok=True)
    names = [d.name for d in domains]
    domain_losses = {}
    for name, loss in dict(u.get("domain_losses") or {}).items():
        if name not in names:
            raise ValueError(f"universal.domain_losses names {name!r}, not a recipe domain "
                             f"({', '.join(names)})")
        domain_losses[name] = get_loss(loss, **dict(u.get("domain_loss_kwargs") or {}))
    chosen = method.policy or u.policy
    policy = POLICY_ALIASES.get(chosen, chosen)
    if policy == "naive":
        raise ValueError("universal.policy 'naive' mixes domains in a batch; a specialist can "
                         "only embed its own domain, so distillation needs ds, bal, weighted "
                         "or dynamic")
    teachers = [None if n in domain_losses else t for n, t in zip(names, teachers)]
    # Specialists from elsewhere may take other image sizes than the student (DESIGN §7): each
    # then sees its domain's images cut at its own ImageSpec (TeacherSpecViews, or a cache
    # computed at those sizes); dimensions may differ too (zero-padded by the teachers).
    spec = image_spec(config.model)
    specs = [None if t is None else model_spec(t, spec) for t in teachers]
    own_sizes = any(s is not None and not s.same_sizes(spec) for s in specs)
    # One cache for every distilled method of the run (same teachers, same stream).
    cache = teacher_cache(config, teachers, [d.train for d in domains], names,
                          os.path.join(os.path.dirname(run_dir), "teacher_cache"),
                          teacher_specs=specs if own_sizes else None)
    view = teacher_cache_view(config)
    if view is None and own_sizes:
        view = TeacherSpecViews(specs)
    with strategy.scope():
        student = build_model(config.model, name=f"universal_{method}")
        distiller = UniversalDistiller(
            cache if cache is not None else teachers, student,
            distill_loss_for(method, config), domain_losses=domain_losses, domain_names=names,
            global_batch=bool(u.get("global_batch", True)), name=f"distiller_{method}")
        distiller.compile(optimizer=_optimizer(config), **compile_kwargs(config))
    steps, per_epoch = _steps(config)
    recall = _recall_callback(domains, offsets, config)
    if policy == "dynamic":
        t = config.train
        data = DynamicStream(
            DynamicDomainSampling([len(d.train) for d in domains], per_epoch, int(config.seed),
                                  initial=str(u.get("dynamic", {}).get("initial", "balanced")),
                                  path=os.path.join(run_dir, "sampling.json")),
            [d.train for d in domains], int(t.classes_per_batch), int(t.images_per_class),
            label_offsets=offsets, seed=int(config.seed), multi_domain=True, view=view,
            **train_transform(config, domains))
    else:
        data = functools.partial(_batches, domains, offsets, config, policy, True, view=view)
    fit_for_steps(distiller, data,
                  steps, per_epoch,
                  run_dir, recall, what=f"universal {method} ({policy} sampling)",
                  batch_size=int(config.train.classes_per_batch) *
                  int(config.train.images_per_class),
                  checkpoint=SaveStudent(os.path.join(run_dir, "checkpoint.keras")),
                  checkpoint_every=checkpoint_every(config))
    atomic_save(student, os.path.join(run_dir, "model.keras"))
    return student, recall.history


def concat_spec(specialists, default):
    """The concatenation's :class:`ImageSpec`: its largest specialist's."""
    return model_spec(specialists[largest_input(specialists)], default)


def build_concat_pca(specialists, domains, config, strategy):
    """The concatenation baseline, PCA fitted on (a seeded sample of) the training images."""
    m = config.model
    limit = int(config.universal.get("pca_max_images", 0) or 0)
    rng = np.random.default_rng(int(config.seed))
    # The specialists side by side, without projection: what the PCA is fitted on; at the
    # largest specialist's sizes when they differ (the smaller ones get it resized).
    joint = concat_features(specialists)
    spec = concat_spec(specialists, image_spec(m))
    features = []
    for domain in domains:
        split = domain.train
        if limit and len(split) > limit:
            split = split.subset(np.sort(rng.choice(len(split), limit, replace=False)))
        emb, _ = embed_split(joint, split, spec=spec, batch_size=int(config.eval.batch_size))
        features.append(emb)
    features = np.concatenate(features)
    dim = min(int(m.embedding_dim), features.shape[1], len(features) - 1)
    mean, components = fit_pca(features, dim)
    logging.info("concat_pca: PCA %d → %d fitted on %d training images", features.shape[1], dim,
                 len(features))
    with strategy.scope():
        return concat_pca_embedder(specialists, mean, components)


def run_universal(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    domains = load_domains(config)
    offsets = default_label_offsets(domains)
    methods = entries(UniversalMethod, config.universal.methods)   # typos fail early
    for method in methods:
        if method.kind == "fused":
            fused_loss(method, config)
    specialists = specialists_for(config, domains, workdir, strategy)
    ks = tuple(config.eval.ks)
    uned = is_uned(domains)
    fused = bool(config.eval.get("fused", True)) and len(domains) > 1 and not uned
    spec = image_spec(config.model)
    rows, embedded, histories, models = [], {}, {}, {}

    def evaluate(name, model, own_spec=None):
        start = time.time()
        # Specialists (and their concatenation) at their own sizes: ones loaded from elsewhere
        # may take other sizes than the student.
        if uned:
            # UnED's benchmark instead of 000's galleries: separate and merged index (the
            # merged index plays the fused gallery's part); no diagnostics at that scale.
            rows.extend(evaluate_uned(model, domains, evaluation=config.eval.uned_evaluation,
                                      name=name, spec=own_spec or spec,
                                      batch_size=int(config.eval.batch_size)))
        else:
            embedded[name] = embed_domains(model, domains, offsets, spec=own_spec or spec,
                                           batch_size=int(config.eval.batch_size))
            rows.extend(evaluate_embeddings(name, embedded[name], ks, fused=fused))
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
        logging.info("evaluated %s in %.1f s", name, time.time() - start)

    if config.eval.get("random_init_baseline", False):
        with strategy.scope():
            evaluate(untrained_baseline(config.model), build_model(config.model, name="untrained"))
    for domain, model in zip(domains, specialists):
        evaluate(f"specialist/{domain.name}", model, own_spec=model_spec(model, spec))
    for method in methods:
        name = method.row
        run_dir = os.path.join(workdir, name)
        start = time.time()
        if method.kind == "concat_pca":
            model = build_concat_pca(specialists, domains, config, strategy)
        elif method.kind == "fused":
            model, histories[name] = train_fused(
                method, domains, offsets, config, run_dir, strategy)
        else:
            model, histories[name] = train_distilled(
                method, domains, offsets, specialists, config, run_dir, strategy)
        models[name] = model
        logging.info("built %s in %.1f s", name, time.time() - start)
        evaluate(name, model, own_spec=(concat_spec(specialists, spec)
                                        if method.kind == "concat_pca" else None))
    write_report(workdir, config.recipe, config.to_dict(), rows)
    for gallery in () if uned else ("domain", "fused") if fused else ("domain",):
        print(format_paper_table(rows, gallery, ks=[k for k in ks if k <= 8]))
    if config.universal.get("diagnostics", True) and not uned:
        from tfembed.universal.figures import write_universal_diagnostics  # noqa: PLC0415
        write_universal_diagnostics(workdir, domains, embedded, histories, config)
    export = [m for m in methods if m.name in config.universal.get("export", [])]
    export_models(config, workdir, [(m.row.replace("/", "_"), models[m.row]) for m in export])
    return rows


def run_self_distill(config, workdir):
    """Chooses SND's σ as paper 000 §5 does: distill a specialist into a fresh student of the
    same domain (self-distillation) for each σ of ``universal.sigma_sweep`` and compare Recall@K.
    Rows: ``specialist/<domain>`` and ``self_distill/sigma=<σ>``."""
    strategy = get_strategy(config.get("strategy", "default"))
    domains = load_domains(config, single="self_distill")
    offsets = [0]
    (specialist,) = specialists_for(config, domains, workdir, strategy)
    kw = dict(offsets=offsets, ks=tuple(config.eval.ks), batch_size=int(config.eval.batch_size),
              spec=image_spec(config.model))
    rows = evaluate(specialist, domains, name=f"specialist/{domains[0].name}", **kw)
    for sigma in config.universal.sigma_sweep:
        trial = config.copy_and_resolve_references()
        trial.universal.snd.sigma = float(sigma)
        model, _ = train_distilled(
            "snd", domains, offsets, [specialist], trial,
            os.path.join(workdir, "self_distill", f"sigma_{float(sigma):g}"), strategy)
        rows += evaluate(model, domains, name=f"self_distill/sigma={float(sigma):g}", **kw)
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
    write_report(workdir, config.recipe, config.to_dict(), rows)
    return rows
