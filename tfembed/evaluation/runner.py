"""Evaluation only (pipeline ``evaluate``): trained models scored on the recipe's domains.

``models`` lists ``.keras`` files or SavedModel directories (from tfembed or elsewhere). Each is
evaluated at the image sizes it records (its ``ImageSpec``; ``model``'s when it records none) by
its domains' protocol — UnED's separate and merged index for ``uned:<domain>`` domains,
Recall@K on the own and fused galleries otherwise — and report.json gets its rows, named by
``model_names`` (default: each file's name). Nothing is trained or exported.
"""

import os

from absl import logging

from tfembed.evaluation.protocol import evaluate
from tfembed.evaluation.report import write_report
from tfembed.models import load_embedder
from tfembed.training.builders import image_spec, load_domains, model_spec


def model_name(path) -> str:
    """A report name for a model file: its name without extension, or its directory's name for
    the generic ones (``.../cars/model.keras`` → ``cars``, ``.../snd/1`` → ``snd``)."""
    parts = os.path.normpath(str(path)).split(os.sep)
    stem = os.path.splitext(parts[-1])[0]
    if (stem in ("model", "checkpoint", "saved_model") or stem.isdigit()) and len(parts) > 1:
        return parts[-2]
    return stem


def run_evaluate(config, workdir):
    paths = [str(p) for p in (config.get("models") or [])]
    if not paths:
        raise ValueError("the evaluate pipeline needs the models to score: --set "
                         "models=a.keras,b.keras (.keras files or SavedModel directories)")
    names = [str(n) for n in (config.get("model_names") or [])] or [model_name(p) for p in paths]
    if len(names) != len(paths):
        raise ValueError(f"model_names has {len(names)} entries for {len(paths)} models")
    if len(set(names)) != len(names):
        raise ValueError(f"two models would share a report name ({names}); set model_names")
    domains = load_domains(config)
    default = image_spec(config.model)
    rows = []
    for name, path in zip(names, paths):
        logging.info("evaluating %s (%s)", name, path)
        model = load_embedder(path)
        rows += evaluate(model, domains, name=name, ks=tuple(config.eval.ks),
                         batch_size=int(config.eval.batch_size), spec=model_spec(model, default),
                         uned_evaluation=config.eval.uned_evaluation)
        write_report(workdir, config.recipe, config.to_dict(), rows, echo=False)
    write_report(workdir, config.recipe, config.to_dict(), rows)
    return rows
