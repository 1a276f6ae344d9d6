"""Build every model a recipe will train before the first step of its first stage.

A recipe trains in stages (specialists, then students; a teacher, then students), and a stage can
take hours. A student that cannot be built (no pretrained weights, a hint layer that does not
exist, an embedding size an ensemble cannot split) used to fail only when its stage began, after
the teacher had trained. :func:`validate_recipe` builds each model the recipe names, with its
weights resolved, runs it once on a zero batch of its input size, and drops it: a recipe that
cannot run fails in seconds, with the error of the model that could not be built.

Teachers given as files (``teachers=``) are loaded to check they exist and load; models are
built on the default device (not under the run's strategy) and freed afterwards. The run seeds
its RNGs after validating, so validation changes no result.
"""

import gc
import time

import numpy as np
from absl import logging

from tfembed.cohort.config import CohortMethod
from tfembed.configs._method import entries
from tfembed.distill.config import DistillMethod
from tfembed.ensemble.config import EnsembleMethod
from tfembed.models import load_embedder

# Heads and classifiers need a class count to be built; its value does not change whether a
# model can be built, and validation runs before any data is read.
_PLACEHOLDER_CLASSES = 8


def _reraise(e, prefix):
    """``e`` again, its message prefixed with what was being built (same type where possible)."""
    try:
        error = type(e)(f"{prefix}: {e}")
    except Exception:  # an exception type with another constructor
        error = RuntimeError(f"{prefix}: {type(e).__name__}: {e}")
    raise error from e


def _forward(what, model, image_size):
    size = int(image_size)
    try:
        model(np.zeros((2, size, size, 3), np.float32), training=False)
    except Exception as e:
        _reraise(e, f"{what} does not run on a {size}x{size} batch")


def _embedder(what, model_cfg):
    from tfembed.training.builders import build_model  # noqa: PLC0415

    try:
        model = build_model(model_cfg, name="validate")
    except Exception as e:
        _reraise(e, f"cannot build {what} ({model_cfg.backbone}, weights="
                    f"{model_cfg.get('weights') or None!r})")
    _forward(what, model, model_cfg.image_size)
    return model


def _teachers(config):
    return list(config.get("teachers", []) or [])


def _validate_embedders(config):
    """specialists / universal / self_distill: the specialists' and the students' embedder."""
    for path in _teachers(config):
        load_embedder(path)
    # Specialists (when trained), fused baselines and distilled students share ``model``.
    return [_embedder("the model block's embedder", config.model)]


def _validate_distill(config):
    from tfembed.distill import runner as distill_lib  # noqa: PLC0415

    distill_lib.check_config(config)  # method and key errors first: they name the key
    teachers = _teachers(config)
    if teachers:
        teacher = load_embedder(teachers[0])
    else:
        teacher = _embedder("the teacher", config.teacher)
    student = _embedder("the student", config.model)
    classifier = None
    if any("kd" in distill_lib.parse_method(m)[0] for m in config.distill.methods):
        import keras  # noqa: PLC0415

        classifier = keras.layers.Dense(_PLACEHOLDER_CLASSES)
    built = [teacher, student]
    for method in [m.name for m in entries(DistillMethod, config.distill.methods)]:
        try:
            built.append(distill_lib.build_distiller(method, student, teacher, config,
                                                     _PLACEHOLDER_CLASSES, classifier))
        except Exception as e:
            _reraise(e, f"cannot build the student of distill method {method!r}")
    return built


def _validate_ensemble(config):
    from tfembed.ensemble import runner as ensemble_lib  # noqa: PLC0415

    ensemble_lib.check_config(config)
    built = []
    for method in [m.name for m in entries(EnsembleMethod, config.ensemble.methods)]:
        try:
            model = ensemble_lib.build_ensemble(method, config)
        except Exception as e:
            _reraise(e, f"cannot build ensemble method {method!r}")
        _forward(f"ensemble method {method!r}", model, config.model.image_size)
        built.append(model)
    return built


def _validate_cohort(config):
    from tfembed.cohort import runner as cohort_lib  # noqa: PLC0415

    cohort_lib.check_config(config)
    members = cohort_lib.build_members(config, int(config.seed))
    for l, member in enumerate(members):
        _forward(f"cohort member {l}", member, config.model.image_size)
    if any(CohortMethod.of(m).distill_rkd for m in config.cohort.methods):
        members.append(_embedder("the cohort's RKD student", config.model))
    return members


VALIDATORS = {
    "specialists": _validate_embedders,
    "universal": _validate_embedders,
    "self_distill": _validate_embedders,
    "distill": _validate_distill,
    "ensemble": _validate_ensemble,
    "cohort": _validate_cohort,
}


def validate_recipe(config):
    """Builds (and runs once) every model ``config`` will train; raises on the first failure."""
    name = config.get("pipeline", "specialists")
    validator = VALIDATORS.get(name)
    if validator is None:
        return
    start = time.time()
    built = validator(config)
    logging.info("recipe %s: %d model(s) built and checked in %.1f s", config.recipe,
                 len(built), time.time() - start)
    del built
    gc.collect()
