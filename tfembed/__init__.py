"""tfembed: deep image embeddings and knowledge transfer between embedding models (Keras 3).

``import tfembed as te`` gives the namespaces a notebook needs, each imported on first use (so
``import tfembed`` alone does not start TensorFlow)::

    te.data          load_domain, batches (sampler → transform → view), training_batches,
                     eval_dataset, Domain, Split, ImageSpec
    te.losses        metric losses (TripletSemiHardLoss, ...) and transfer losses (SNDLoss, ...)
    te.models        build_embedder, load_embedder, the backbone registry
    te.distill       Distiller (papers 001/004), teachers, loss terms, TeacherCache
    te.universal     UniversalDistiller (paper 000)
    te.ensemble      AttentionEnsemble (ABE-M), MultiHeadEnsemble and their builders
    te.cohort        MutualLearningCohort (DM²)
    te.evaluation    recall_at_k, fused_recall, map_at_r, nmi_f1, report.json helpers
    te.callbacks     RecallAtKCallback, SaveStudent
    te.export        export_model, export_from_file (SavedModel for TF Serving)
    te.recipes       the recipe registry behind ``tfembed-train``
"""

import importlib

__version__ = "0.1.0"

_NAMESPACES = {
    "data": "tfembed.data",
    "losses": "tfembed.losses",
    "models": "tfembed.models",
    "distill": "tfembed.distill",
    "universal": "tfembed.universal",
    "ensemble": "tfembed.ensemble",
    "cohort": "tfembed.cohort",
    "evaluation": "tfembed.evaluation",
    "callbacks": "tfembed.training.callbacks",
    "export": "tfembed.export",
    "recipes": "tfembed.recipes",
    "io": "tfembed.io",
}

__all__ = sorted(_NAMESPACES) + ["__version__"]


def __getattr__(name):
    if name in _NAMESPACES:
        module = importlib.import_module(_NAMESPACES[name])
        globals()[name] = module   # later lookups skip __getattr__
        return module
    raise AttributeError(f"module 'tfembed' has no attribute {name!r}")


def __dir__():
    return __all__
