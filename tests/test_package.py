"""``import tfembed as te``: the notebook namespaces, imported on first use."""

import subprocess
import sys

import pytest

import tfembed as te


def test_import_tfembed_alone_does_not_start_tensorflow():
    done = subprocess.run([sys.executable, "-c", "import sys, tfembed; "
                           "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_method_packages_give_their_trainers_and_config_entries():
    from tfembed.cohort.config import CohortMethod
    from tfembed.distill import Distiller, UniversalDistiller
    from tfembed.universal.distiller import UniversalDistiller as Own

    assert UniversalDistiller is Own and te.distill.Distiller is Distiller
    assert te.cohort.config.CohortMethod is CohortMethod
    assert te.ensemble.config.EnsembleMethod.of("abe8").learners == 8


def test_namespaces_give_the_notebook_objects():
    import keras

    assert issubclass(te.losses.SNDLoss, keras.losses.Loss)
    assert issubclass(te.distill.Distiller, keras.Model)
    assert issubclass(te.callbacks.RecallAtKCallback, keras.callbacks.Callback)
    for fn in (te.data.load_domain, te.data.training_batches, te.data.batches, te.data.eval_dataset,
               te.models.build_embedder, te.evaluation.recall_at_k, te.export.export_model):
        assert callable(fn)
    assert set(te.__all__) >= {"data", "losses", "models", "evaluation", "callbacks", "export"}
    assert te.data.Domain is __import__("tfembed.data.types", fromlist=["Domain"]).Domain


def test_unknown_attribute_names_itself():
    with pytest.raises(AttributeError, match="no attribute 'lossses'"):
        te.lossses
