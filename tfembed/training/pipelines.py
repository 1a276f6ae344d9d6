"""What ``tfembed-train`` runs: a recipe's ``pipeline`` key names one function here.

``specialists``: train (or load) one specialist per domain, evaluate every specialist on every
domain (own gallery and fused gallery), write report.json, export the models.

``universal`` (paper 000): the specialists, then every method of ``universal.methods`` (the
concatenation and fused-training baselines, the SND/RKD-distilled universal embedding), each
evaluated per domain and on the fused gallery into one report.json (rewritten after every method,
so an interrupted run keeps what it finished), the diagnostics of paper 000's figures, and the
export of the universal models.

``distill`` (papers 001 / 004): one domain, a large teacher (trained, or ``--set teachers=``),
then one compact student per ``distill.methods`` entry (student alone, + absolute / relative
teacher, + hint / attention, DarkRank, Hinton KD, semi-supervised and cross-quality variants),
each evaluated with Recall@K (and NMI / F1) into report.json.

``ensemble`` (paper 002): one domain, one model per ``ensemble.methods`` entry (ABE-M, M-heads,
with or without the divergence loss), each evaluated as an ensemble and per learner, with the
similarity histograms and attention masks of 002's figures.

``cohort`` (paper 003, DM²): one domain, one cohort per ``cohort.methods`` entry (independent,
MD, MD+TD, MD+VD, MD+TD+VD; ``->rkd`` distills its ensemble into one student), each member and
the ensemble evaluated.
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
from tfembed.evaluation.protocol import embed_domains, evaluate_embeddings, evaluate_model
from tfembed.evaluation.clustering import nmi_f1
from tfembed.evaluation.report import format_model_table, format_paper_table, write_report
from tfembed.models import load_embedder
from tfembed.training.specialist import build_model, teacher_cache_views, train_specialist
from tfembed.training.strategy import barrier, get_strategy, precision, worker_role
from tfembed.training.validate import validate_recipe
from tfembed.training import cohort as cohort_lib
from tfembed.training import distill as distill_lib
from tfembed.training import ensemble as ensemble_lib
from tfembed.training import universal as universal_lib

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
    teacher_cache_views(config)   # a bad teacher_cache.mode fails before anything trains
    os.makedirs(workdir, exist_ok=True)
    if config.get("strategy") == "multi_worker":
        get_strategy("multi_worker")   # before any op: collectives are set up at start-up
    # Every model of every stage is built (weights resolved) before the first stage trains, so
    # a student that cannot be built fails in seconds, not after its teacher trained.
    validate_recipe(config)
    keras.utils.set_random_seed(int(config.seed))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2, default=str)
    start = time.time()
    with precision(config.get("precision", "float32")):
        rows = PIPELINES[name](config, workdir)
    barrier()   # multi-worker: the workers leave together
    logging.info("recipe %s finished in %.1f s", config.recipe, time.time() - start)
    return rows


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
    if not worker_role()[0]:
        return []   # multi-worker: the chief exports (every worker would add a version)
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


@pipeline("universal")
def run_universal(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    domains = load_domains(config)
    offsets = default_label_offsets(domains)
    methods = list(config.universal.methods)
    kinds = {m: universal_lib.parse_method(m, config)[0] for m in methods}  # typos fail early
    specialists = specialists_for(config, domains, workdir, strategy)
    ks = tuple(config.eval.ks)
    fused = bool(config.eval.get("fused", True)) and len(domains) > 1
    sizes = _image_sizes(config)
    rows, embedded, histories, models = [], {}, {}, {}

    def evaluate(name, model):
        start = time.time()
        embedded[name] = embed_domains(model, domains, offsets,
                                       batch_size=int(config.eval.batch_size), **sizes)
        rows.extend(evaluate_embeddings(name, embedded[name], ks, fused=fused))
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
        logging.info("evaluated %s in %.1f s", name, time.time() - start)

    if config.eval.get("random_init_baseline", False):
        with strategy.scope():
            evaluate("baseline/random_init", build_model(config.model, name="random_init"))
    for domain, model in zip(domains, specialists):
        evaluate(f"specialist/{domain.name}", model)
    for method in methods:
        name = universal_lib.row_name(method)
        run_dir = os.path.join(workdir, name)
        start = time.time()
        if kinds[method] == "concat_pca":
            model = universal_lib.build_concat_pca(specialists, domains, config, strategy)
        elif kinds[method] == "fused":
            model, histories[name] = universal_lib.train_fused(
                method, domains, offsets, config, run_dir, strategy)
        else:
            model, histories[name] = universal_lib.train_distilled(
                method, domains, offsets, specialists, config, run_dir, strategy)
        models[name] = model
        logging.info("built %s in %.1f s", name, time.time() - start)
        evaluate(name, model)
    write_report(workdir, config.recipe, config.to_dict(), rows)
    for gallery in ("domain", "fused") if fused else ("domain",):
        print(format_paper_table(rows, gallery, ks=[k for k in ks if k <= 8]))
    if config.universal.get("diagnostics", True):
        from tfembed.training.diagnostics import write_universal_diagnostics  # noqa: PLC0415
        write_universal_diagnostics(workdir, domains, embedded, histories, config)
    export = [m for m in config.universal.get("export", []) if m in methods]
    export_models(config, workdir, [(universal_lib.row_name(m).replace("/", "_"),
                                     models[universal_lib.row_name(m)]) for m in export])
    return rows


@pipeline("self_distill")
def run_self_distill(config, workdir):
    """Chooses SND's σ as paper 000 §5 does: distill a specialist into a fresh student of the
    same domain (self-distillation) for each σ of ``universal.sigma_sweep`` and compare Recall@K.
    Rows: ``specialist/<domain>`` and ``self_distill/sigma=<σ>``."""
    strategy = get_strategy(config.get("strategy", "default"))
    domains = load_domains(config, single="self_distill")
    offsets = [0]
    (specialist,) = specialists_for(config, domains, workdir, strategy)
    kw = dict(ks=tuple(config.eval.ks), batch_size=int(config.eval.batch_size),
              **_image_sizes(config))
    rows = evaluate_model(f"specialist/{domains[0].name}", specialist, domains, offsets, **kw)
    for sigma in config.universal.sigma_sweep:
        trial = config.copy_and_resolve_references()
        trial.universal.snd.sigma = float(sigma)
        model, _ = universal_lib.train_distilled(
            "snd", domains, offsets, [specialist], trial,
            os.path.join(workdir, "self_distill", f"sigma_{float(sigma):g}"), strategy)
        rows += evaluate_model(f"self_distill/sigma={float(sigma):g}", model, domains, offsets,
                               **kw)
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
    write_report(workdir, config.recipe, config.to_dict(), rows)
    return rows


@pipeline("distill")
def run_distill(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    distill_lib.check_config(config)  # method typos fail before the teacher trains
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
        embedded = embed_domains(model, domains, [0], batch_size=int(config.eval.batch_size),
                                 image_size=int(model_cfg.image_size),
                                 resize_size=int(model_cfg.resize_size), **view)
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
        teacher, _ = distill_lib.train_teacher(domain, config, os.path.join(workdir, "teacher"),
                                               strategy)
    evaluate(f"teacher/{config.teacher.backbone}", teacher, config.teacher,
             distill_lib.teacher_view(config))
    classifier = None
    if any("kd" in distill_lib.parse_method(m)[0] for m in d.methods):
        classifier = distill_lib.fit_teacher_classifier(
            teacher, distill_lib.teacher_domain(domain, config).train, config,
            distill_lib.num_train_classes(domain.train))
    # distill.lambda_search: λ by cross-validation on held-out training classes (001 §4).
    search = distill_lib.LambdaSearch(domain, teacher, config, workdir, strategy, classifier)
    for method in d.methods:
        name = distill_lib.row_name(method)
        start = time.time()
        method_config, record = search.configure(method)
        if record is not None:
            selection[name] = record
            report()
        students[method], _ = distill_lib.train_student(
            method, domain, teacher, method_config, os.path.join(workdir, name), strategy,
            teacher_classifier=classifier)
        logging.info("trained %s in %.1f s", name, time.time() - start)
        evaluate(name, students[method], config.model, distill_lib.student_view(config))
    report(echo=True)
    print(format_model_table(rows, ks))
    export_models(config, workdir, [(distill_lib.export_name(m), students[m])
                                     for m in d.get("export", []) if m in students])
    return rows


@pipeline("ensemble")
def run_ensemble(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    ensemble_lib.check_config(config)  # method typos fail before anything trains
    domains = load_domains(config, single="ensemble")
    domain = domains[0]
    e = config.ensemble
    ks = tuple(config.eval.ks)
    rows, models, similarity, masks, curves = [], {}, {}, {}, {}
    for method in e.methods:
        start = time.time()
        model, history, step = ensemble_lib.train_ensemble(method, domain, config,
                                                           os.path.join(workdir, method), strategy)
        models[method] = model
        logging.info("trained %s in %.1f s", method, time.time() - start)
        embedded = embed_domains(model, domains, [0], batch_size=int(config.eval.batch_size),
                                 **_image_sizes(config))[domain.name]
        final, learners = ensemble_lib.ensemble_rows(method, domain.name, embedded, ks, step=step)
        # 002 §4 reports the best R@1 over its evaluations: beside the final model, marked.
        curves[method] = ensemble_lib.evaluation_curve(history, final)
        rows += [final, ensemble_lib.best_of_evals_row(method, domain.name, curves[method]),
                 learners]
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
        ensemble_lib.write_history(workdir, domain.name, curves)
        if e.diagnostics:
            similarity[ensemble_lib.title(method)] = ensemble_lib.similarity_panel(
                method, embedded, int(e.diagnostics_max_images), int(e.diagnostics_max_pairs),
                int(config.seed))
            if method.startswith("abe"):
                images = ensemble_lib.mask_images(domain, config)
                masks[method] = (images, model.learner_outputs(images)["masks"])
    write_report(workdir, config.recipe, config.to_dict(), rows)
    print(format_model_table(rows, ks, extra=()))
    print(ensemble_lib.best_of_evals_notes(rows))
    if e.diagnostics:
        ensemble_lib.write_diagnostics(workdir, similarity, masks, seed=int(config.seed))
    export_models(config, workdir, [(ensemble_lib.export_name(m), models[m])
                                     for m in e.get("export", [])])
    return rows


@pipeline("cohort")
def run_cohort(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))  # the RKD student's
    cohort_lib.check_config(config)  # method typos fail before anything trains
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

    def evaluate(name, model):
        embedded = embed_domains(model, domains, [0], batch_size=int(config.eval.batch_size),
                                 **_image_sizes(config))
        rows.extend(evaluate_embeddings(name, embedded, ks, fused=False))
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
        models[name] = model

    for method in config.cohort.methods:
        prefix = cohort_lib.row_prefix(method)
        start = time.time()
        cohort = cohort_lib.train_cohort(method, domain, config, os.path.join(workdir, prefix),
                                         num_classes, pretrained)
        logging.info("trained cohort %s in %.1f s", method, time.time() - start)
        for l, member in enumerate(cohort.members):
            evaluate(f"{prefix}/member{l}", member)
        evaluate(f"{prefix}/ensemble", cohort.ensemble_model())
        if cohort_lib.parse_method(method)[1]:
            student = cohort_lib.distill_rkd(cohort, domain, config,
                                             os.path.join(workdir, prefix, "rkd_student"),
                                             strategy)
            evaluate(f"{prefix}/rkd_student", student)
    write_report(workdir, config.recipe, config.to_dict(), rows)
    print(format_model_table(rows, ks, extra=()))
    export_models(config, workdir, [(cohort_lib.export_name(name), models[name])
                                     for name in config.cohort.get("export", [])
                                     if name in models])
    return rows
