"""Pipeline ``ensemble`` (paper 002): ABE-M, the M-heads baseline and their ablations on one domain.

Methods (``ensemble.methods``):

* ``abe<M>``          ABE-M with the divergence loss (λ_div = ``ensemble.divergence_weight``);
* ``abe<M>_nodiv``    ABE-M without it (002 Table 2);
* ``mheads<M>``       M-heads (Fig. 1(a)), no divergence loss; ``mheads1`` is the single model;
* ``mheads<M>_div``   M-heads with the divergence loss (002 Table 3).

Every method trains one model on the recipe's domain (``train`` block: the metric loss, the
optimizer, the step budget; ``ensemble.sampler``: the paper's pair batches or c×k batches) and
gives three report rows: ``<method>/ensemble`` (the concatenated embedding of the final model)
and ``<method>/learners``: the mean Recall@K of the M learners on their own (each learner's slice
of the ensemble embedding), with the spread across learners as ``recall@k_std``, both with
``"selection": "final"`` and the final ``step``; and ``<method>/ensemble@best``, ``"selection":
"best_of_evals"``: the ensemble's Recall@K at the evaluation with the highest R@1 (its ``step``;
``evaluations``: how many there were, the final model's included). 002 §4 evaluates "after every
1000 iteration and report[s] the results for the iteration with highest Recall@1"
(``ensemble.eval_every_steps``, 1000 in the paper recipes). That selects on the test set, so the
``@best`` row is optimistic; the ``final`` rows are the held-out result.

The evaluations (step → Recall@K) are kept beside the training checkpoint
(``<run_dir>/backup/recall_history.json``, so a resumed run keeps those made before the
interruption) and collected per method in ``<workdir>/diagnostics/recall_history.json``.

Diagnostics in ``<workdir>/diagnostics/``: ``similarity_histograms`` (002 Fig. 5: cosine
similarity of positive, negative and self pairs, one panel per method) and, for ABE methods,
``attention_masks_<method>`` (Fig. 6).
"""

import functools
import json
import os
import time

import numpy as np
from absl import logging

from tfembed.configs._method import entries
from tfembed.data.pipeline import batches, eval_dataset, training_batches
from tfembed.data.samplers import Pairs
from tfembed.ensemble import diagnostics as ens_diag
from tfembed.ensemble.attention import (
    build_attention_ensemble,
    build_multihead_ensemble,
)
from tfembed.ensemble.config import EnsembleMethod
from tfembed.evaluation.diagnostics import write_diagnostics_index
from tfembed.evaluation.protocol import embed_domains
from tfembed.evaluation.report import format_model_table, recall_rows, write_report
from tfembed.evaluation.retrieval import recall_at_k
from tfembed.io import atomic_save, atomic_write
from tfembed.losses import get_loss
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
from tfembed.training.callbacks import RecallAtKCallback
from tfembed.training.loop import fit_for_steps
from tfembed.training.strategy import get_strategy

SAMPLERS = ("pairs", "classes")
HISTORY_FILENAME = "recall_history.json"   # the evaluations (step → Recall@K) of a method


def check_config(config):
    """Fails before any training on method typos, embedding sizes and the sampler."""
    e = config.ensemble
    dim = int(config.model.embedding_dim)
    methods = entries(EnsembleMethod, e.methods)
    for method in methods:
        m = method.learners
        if dim % m:
            raise ValueError(f"method {method.name!r}: model.embedding_dim {dim} is not a multiple of "
                             f"its {m} learners")
    if e.sampler not in SAMPLERS:
        raise ValueError(f"ensemble.sampler must be one of {SAMPLERS}, got {e.sampler!r}")
    if int(e.eval_every_steps) < 1:
        raise ValueError(f"ensemble.eval_every_steps must be >= 1, got {e.eval_every_steps!r}")
    if 1 not in [int(k) for k in config.eval.ks]:
        raise ValueError(f"eval.ks must contain 1 (the best evaluation is chosen by R@1), got "
                         f"{list(config.eval.ks)}")
    unknown = [m for m in e.get("export", []) if m not in [x.name for x in methods]]
    if unknown:
        raise ValueError(f"ensemble.export names {unknown}, not in ensemble.methods {list(e.methods)}")


def export_name(method):
    return f"ensemble_{method}"


def build_ensemble(method, config):
    """The (uncompiled) model of ``method`` from the recipe's ``model`` and ``ensemble`` blocks."""
    method = EnsembleMethod.of(method)
    kind, m, divergence = method.kind, method.learners, method.uses_divergence
    mc, e, t = config.model, config.ensemble, config.train
    size = int(mc.image_size)
    common = dict(
        embedding_dim=int(mc.embedding_dim), input_shape=(size, size, 3),
        resize_size=model_resize(mc), freeze_batchnorm=bool(mc.get("freeze_batchnorm", False)),
        weights=mc.get("weights") or None, pooling=mc.get("pooling", "avg"),
        backbone_kwargs=dict(mc.get("backbone_kwargs", {})),
        branch=e.get("branch") or None,
        metric_loss=get_loss(t.loss, **dict(t.get("loss_kwargs", {}))),
        divergence_weight=float(e.divergence_weight) if divergence else 0.0,
        divergence_margin=float(e.divergence_margin),
        global_batch=bool(e.global_batch))
    if kind == "abe":
        return build_attention_ensemble(
            mc.backbone, num_learners=m, attention_blocks=int(e.attention_blocks) or None,
            name=f"abe{m}", **common)
    kwargs = {"head_init": e.head_init} if e.get("head_init") else {}
    return build_multihead_ensemble(mc.backbone, num_heads=m, name=f"mheads{m}", **common,
                                    **kwargs)


def batch_size(config):
    """Images per batch: 2 × anchors with the pair sampler, else c×k."""
    e, t = config.ensemble, config.train
    if e.sampler == "pairs":
        return 2 * int(e.pair_anchors)
    return int(t.classes_per_batch) * int(t.images_per_class)


def training_data(domain, config, start_step=0):
    """The paper's pair batches (32 anchors + 16 positive / 16 negative partners) or c×k, from
    batch ``start_step`` on."""
    t, e = config.train, config.ensemble
    kw = dict(seed=int(config.seed), start_step=start_step, **train_transform(config, [domain]))
    if e.sampler == "pairs":
        return batches([domain.train], Pairs(int(e.pair_anchors), int(e.pair_positives)), **kw)
    return training_batches([domain.train], int(t.classes_per_batch), int(t.images_per_class),
                            **kw)


def train_ensemble(method, domain, config, run_dir, strategy):
    """Trains (or resumes) one method's model; saves ``<run_dir>/model.keras``.

    Returns ``(model, history, final_step)``: ``history`` is the ensemble's Recall@K every
    ``ensemble.eval_every_steps`` steps, ``[{"step": s, "recall@k": ...}]`` (before a resume
    too: it is saved in ``<run_dir>/backup/``), ``final_step`` the step of the final model.
    """
    os.makedirs(run_dir, exist_ok=True)
    with strategy.scope():
        model = build_ensemble(method, config)
        model.compile(optimizer=make_optimizer(config.train), **compile_kwargs(config))
    ks = tuple(int(k) for k in config.eval.ks)
    recall = RecallAtKCallback(eval_sets([domain], [0], config), ks=ks,
                               every_n_steps=int(config.ensemble.eval_every_steps),
                               history_path=os.path.join(run_dir, "backup", HISTORY_FILENAME))
    fit_for_steps(model, functools.partial(training_data, domain, config),
                  int(config.train.steps), int(config.train.steps_per_epoch), run_dir,
                  recall, what=f"{method} on {domain.name}", batch_size=batch_size(config),
                  checkpoint_every=checkpoint_every(config))
    atomic_save(model, os.path.join(run_dir, "model.keras"))
    history = [{"step": int(h["step"]),
                **{f"recall@{k}": h.get(f"{recall.prefix}{domain.name}_recall@{k}") for k in ks}}
               for h in recall.history]
    return model, history, recall.step


# ---------------------------------------------------------------------------------- evaluation

def learner_slices(embeddings, num_learners):
    """``[N, D]`` ensemble embeddings → ``[M, N, D/M]``: each learner's own embedding."""
    n, d = embeddings.shape
    return np.transpose(embeddings.reshape(n, num_learners, d // num_learners), (1, 0, 2))


def ensemble_rows(method, domain_name, embedded, ks, step=None):
    """``<method>/ensemble`` and ``<method>/learners`` rows of the final model (``"selection":
    "final"``, and ``step`` when given) from the embedded evaluation split.

    ``embedded``: ``(query_emb, query_labels, gallery_emb | None, gallery_labels | None)``.
    """
    m = EnsembleMethod.of(method).learners
    q, ql, g, gl = embedded
    final = {"selection": "final", **({} if step is None else {"step": int(step)})}
    rows = [recall_rows(f"{method}/ensemble", domain_name, "domain",
                        recall_at_k(q, ql, ks, gallery_embeddings=g, gallery_labels=gl),
                        learners=m, **final)]
    qs = learner_slices(q, m)
    gs = learner_slices(g, m) if g is not None else [None] * m
    per_learner = [recall_at_k(qs[i], ql, ks, gallery_embeddings=gs[i], gallery_labels=gl)
                   for i in range(m)]
    mean = {k: float(np.mean([r[k] for r in per_learner])) for k in ks}
    std = {f"recall@{k}_std": float(np.std([r[k] for r in per_learner])) for k in ks}
    rows.append(recall_rows(f"{method}/learners", domain_name, "domain", mean, learners=m,
                            **std, **final))
    return rows


# ------------------------------------------------------------ best over evaluations (002 §4)

def evaluation_curve(history, final_row):
    """``history`` (``train_ensemble``'s) with the final model's ``<method>/ensemble`` row as
    the entry of its step (one evaluation of the final model, the report's): every evaluation's
    ``{"step", "recall@k"...}``, by step."""
    final = int(final_row["step"])
    recalls = {k: v for k, v in final_row.items() if k.startswith("recall@") and "_" not in k}
    return [dict(h) for h in history if int(h["step"]) < final] + [{"step": final, **recalls}]


def best_of_evals_row(method, domain_name, curve):
    """``<method>/ensemble@best``: the evaluation of ``curve`` with the highest R@1 (the
    latest of equals, so a tie with the final model is the final model), ``"selection":
    "best_of_evals"``, its ``step`` and the number of ``evaluations``."""
    m = EnsembleMethod.of(method).learners
    best = max(curve, key=lambda e: (-1.0 if e.get("recall@1") is None else e["recall@1"],
                                     e["step"]))
    recalls = {int(k.split("@")[1]): v for k, v in best.items() if k.startswith("recall@")}
    return recall_rows(f"{method}/ensemble@best", domain_name, "domain", recalls, learners=m,
                       selection="best_of_evals", step=int(best["step"]),
                       evaluations=len(curve))


def best_of_evals_notes(rows):
    """One line per ``@best`` row, for under the printed table: what it is and its step."""
    return "\n".join(
        f"{r['model']}: the best R@1 of {r['evaluations']} evaluations (step {r['step']}), "
        "selected on the test set as 002 does: optimistic; the 'final' rows are the held-out "
        "result" for r in rows if r.get("selection") == "best_of_evals")


def write_history(workdir, domain_name, curves):
    """``<workdir>/diagnostics/recall_history.json``: ``{"domain", "note", "methods": {method:
    [{"step", "recall@k"...}]}}``, the curves to plot (atomically). Returns the path."""
    path = os.path.join(workdir, "diagnostics", HISTORY_FILENAME)
    text = json.dumps({"domain": domain_name,
                       "note": "Recall@K of each method's ensemble embedding at every evaluation "
                               "(test split); the last entry is the final model",
                       "methods": curves}, indent=2, allow_nan=False)
    atomic_write(path, lambda f: f.write(text + "\n"))
    return path


# --------------------------------------------------------------------------------- diagnostics

def title(method):
    """A figure title in the paper's words: ``abe8_nodiv`` → "ABE-8 without L_div"."""
    entry = EnsembleMethod.of(method)
    kind, m = entry.kind, entry.learners
    name = f"ABE-{m}" if kind == "abe" else (f"{m}-heads" if m > 1 else "1-head")
    if entry.name.endswith("_nodiv"):
        name += " without L_div"
    elif entry.name.endswith("_div"):
        name += " with L_div"
    return name


def mask_images(domain, config, count=6):
    """``count`` evaluation images (pixels) of as many classes, spread over the label range,
    for the mask figure."""
    split = domain.splits["query" if domain.has_query_gallery else "test"]
    classes = np.unique(split.labels)
    chosen = classes[np.linspace(0, len(classes) - 1, min(count, len(classes))).astype(int)]
    split = split.subset(np.array([np.flatnonzero(split.labels == c)[0] for c in chosen]))
    ds = eval_dataset(split, count, spec=image_spec(config.model))
    images, _ = next(iter(ds))
    return images


def write_diagnostics(workdir, similarity_panels, mask_panels, seed=0):
    """Fig. 5 (one panel per method) and Fig. 6 (one file per ABE method); returns the paths."""
    out = os.path.join(workdir, "diagnostics")
    os.makedirs(out, exist_ok=True)
    figures = {}
    if similarity_panels:
        path = os.path.join(out, "similarity_histograms")
        ens_diag.plot_similarity_histograms(similarity_panels, path)
        figures["similarity_histograms"] = path + ".png"
    for method, (images, masks) in mask_panels.items():
        path = os.path.join(out, f"attention_masks_{method}")
        ens_diag.plot_attention_masks(np.asarray(images), np.asarray(masks), path)
        figures[f"attention_masks_{method}"] = path + ".png"
    if figures:
        write_diagnostics_index(out, figures)
    logging.info("wrote ensemble diagnostics to %s", out)
    return figures


def similarity_panel(method, embedded, max_images, max_pairs, seed):
    """Cosine similarities of positive / negative / self pairs of a method's learners."""
    m = EnsembleMethod.of(method).learners
    q, ql, _, _ = embedded
    if max_images and len(q) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(q), max_images, replace=False))
        q, ql = q[keep], ql[keep]
    return ens_diag.pair_similarities(learner_slices(q, m), ql, max_pairs=max_pairs, seed=seed)


def run_ensemble(config, workdir):
    strategy = get_strategy(config.get("strategy", "default"))
    check_config(config)  # method typos fail before anything trains
    domains = load_domains(config, single="ensemble")
    domain = domains[0]
    e = config.ensemble
    ks = tuple(config.eval.ks)
    rows, models, similarity, masks, curves = [], {}, {}, {}, {}
    for method in [m.name for m in entries(EnsembleMethod, e.methods)]:
        start = time.time()
        model, history, step = train_ensemble(method, domain, config,
                                                           os.path.join(workdir, method), strategy)
        models[method] = model
        logging.info("trained %s in %.1f s", method, time.time() - start)
        embedded = embed_domains(model, domains, [0], spec=image_spec(config.model),
                                 batch_size=int(config.eval.batch_size))[domain.name]
        final, learners = ensemble_rows(method, domain.name, embedded, ks, step=step)
        # 002 §4 reports the best R@1 over its evaluations: beside the final model, marked.
        curves[method] = evaluation_curve(history, final)
        rows += [final, best_of_evals_row(method, domain.name, curves[method]),
                 learners]
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
        write_history(workdir, domain.name, curves)
        if e.diagnostics:
            similarity[title(method)] = similarity_panel(
                method, embedded, int(e.diagnostics_max_images), int(e.diagnostics_max_pairs),
                int(config.seed))
            if method.startswith("abe"):
                images = mask_images(domain, config)
                masks[method] = (images, model.learner_outputs(images)["masks"])
    write_report(workdir, config.recipe, config.to_dict(), rows)
    print(format_model_table(rows, ks, extra=()))
    print(best_of_evals_notes(rows))
    if e.diagnostics:
        write_diagnostics(workdir, similarity, masks, seed=int(config.seed))
    export_models(config, workdir, [(export_name(m), models[m])
                                     for m in e.get("export", [])])
    return rows
