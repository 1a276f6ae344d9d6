"""What ``tfembed-train`` runs: a recipe's ``pipeline`` key names one method family's runner.

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

import contextlib
import importlib
import json
import os
import time

import keras
from absl import logging

from tfembed.evaluation.report import (
    REPORT_FILENAME,
    aggregate_seeds,
    read_report,
    write_report,
)
from tfembed.io import atomic_write
from tfembed.training.builders import teacher_cache_view
from tfembed.training.strategy import barrier, get_strategy, precision
from tfembed.training.validate import validate_recipe

#: pipeline name → (the module of its method family, its runner function).
PIPELINES = {
    "specialists": ("tfembed.specialists.runner", "run_specialists"),
    "universal": ("tfembed.universal.runner", "run_universal"),
    "self_distill": ("tfembed.universal.runner", "run_self_distill"),
    "distill": ("tfembed.distill.runner", "run_distill"),
    "ensemble": ("tfembed.ensemble.runner", "run_ensemble"),
    "cohort": ("tfembed.cohort.runner", "run_cohort"),
    "evaluate": ("tfembed.evaluation.runner", "run_evaluate"),
}


#: Written in a seed's directory when its run finished: a rerun of the command skips that seed.
SEED_DONE = "seed_done.json"


def run(config, workdir):
    """Runs a resolved recipe in ``workdir``; returns the report rows.

    With ``seeds`` (e.g. ``[0, 1, 2]``) the recipe runs once per seed, in ``seed_<s>/`` with
    ``seed=s``, and ``<workdir>/report.json`` holds each row's mean over the seeds with its
    standard deviation (:func:`tfembed.evaluation.report.aggregate_seeds`). A rerun skips the
    seeds that finished and resumes the one that was interrupted.
    """
    seeds = [int(s) for s in (config.get("seeds") or [])]
    if seeds:
        return _run_seeds(config, workdir, seeds)
    return _run_one(config, workdir)


def _run_seeds(config, workdir, seeds):
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds lists a seed twice: {seeds}")
    rows_per_seed, runs = {}, {}
    for seed in seeds:
        directory = os.path.join(workdir, f"seed_{seed}")
        done = os.path.join(directory, SEED_DONE)
        if os.path.exists(done):
            logging.info("seed %d: finished earlier (%s)", seed, directory)
            rows_per_seed[seed] = read_report(os.path.join(directory, REPORT_FILENAME))["rows"]
        else:
            one = config.copy_and_resolve_references()
            with one.unlocked() if hasattr(one, "unlocked") else contextlib.nullcontext():
                one.seed, one.seeds = seed, []
            logging.info("seed %d of %s: %s", seed, seeds, directory)
            rows_per_seed[seed] = _run_one(one, directory)
            atomic_write(done, lambda f: json.dump({"seed": seed}, f))
        runs[str(seed)] = os.path.relpath(directory, workdir)
    rows = aggregate_seeds(rows_per_seed)
    write_report(workdir, config.recipe, config.to_dict(), rows, extra={"seed_runs": runs})
    return rows


def _run_one(config, workdir):
    name = config.get("pipeline", "specialists")
    if name not in PIPELINES:
        raise ValueError(f"recipe {config.recipe!r} names pipeline {name!r}; known pipelines: "
                         f"{', '.join(sorted(PIPELINES))}")
    module, function = PIPELINES[name]
    runner = getattr(importlib.import_module(module), function)
    if "teacher_cache" in config:
        teacher_cache_view(config)   # a bad teacher_cache.mode fails before anything trains
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
        rows = runner(config, workdir)
    barrier()   # multi-worker: the workers leave together
    logging.info("recipe %s finished in %.1f s", config.recipe, time.time() - start)
    return rows
