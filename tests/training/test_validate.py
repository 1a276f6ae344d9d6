"""A recipe whose models cannot be built fails before any stage trains (training/validate.py)."""

import os

import pytest

from tfembed import cli
from tfembed.models import hub


def _train(recipe, workdir, *sets, smoke=True):
    argv = ["tfembed-train", "--recipe", recipe, "--workdir", str(workdir),
            "--set", f"smoke={str(smoke).lower()}", *[a for s in sets for a in ("--set", s)]]
    return cli.train_main(argv)


def test_student_without_weights_fails_before_the_teacher_trains(tmp_path, paper_data_dir,
                                                                  monkeypatch):
    # An offline machine without a local copy of the student's ImageNet preset.
    monkeypatch.setenv(hub.PRESETS_ENV, str(tmp_path / "no_presets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hf_constants
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"cannot build the student .*hf://timm/resnet18"):
        # The recipe's real student (ResNet-18, ImageNet), a small teacher that builds.
        _train("rel_teacher_resnet18_cub", workdir, f"data_dir={paper_data_dir}",
               "teacher.backbone=small_cnn", "teacher.weights=", "model.image_size=32",
               "model.resize_size=36", "teacher.image_size=32", "teacher.resize_size=36",
               smoke=False)
    assert not os.path.exists(workdir / "teacher"), "the teacher trained before the failure"


def test_unknown_hint_layer_fails_before_the_teacher_trains(tmp_path, paper_data_dir):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="no_such_layer"):
        _train("rel_teacher_hint_resnet18_cub", workdir, f"data_dir={paper_data_dir}",
               "distill.hint_layers=[['stage3','no_such_layer']]")
    assert not os.path.exists(workdir / "teacher")


def test_unbuildable_ensemble_fails_before_training(tmp_path):
    # A branching point the network does not have: the ensemble cannot be built.
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="cannot build ensemble method .*no_such_layer"):
        _train("abe_demo", workdir, "ensemble.branch=no_such_layer")
    assert not os.path.exists(workdir / "abe8")
