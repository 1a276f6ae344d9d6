"""Pretrained sources through KerasHub: ResNet-18/34 ImageNet weights and ``hub:<preset>``
backbones, all from local stand-ins written by the tests (nothing downloads)."""

import os

import keras
import numpy as np
import pytest

from tests.conftest import SMALL_CNN
from tfembed.models import backbone_model, build_embedder, feature_model, load_embedder
from tfembed.models import hub
from tfembed.models import testing as model_testing
from tfembed.models.layers import Preprocess

keras_hub = pytest.importorskip("keras_hub")


@pytest.fixture
def presets(tmp_path, monkeypatch):
    """``$TFEMBED_PRESETS`` pointing at an empty directory the test fills."""
    root = tmp_path / "presets"
    root.mkdir()
    monkeypatch.setenv(hub.PRESETS_ENV, str(root))
    return root


def _x(size=64, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (2, size, size, 3)).astype(np.float32)


def test_local_name_and_resolution(presets):
    assert hub.local_name("hf://timm/resnet18.tv_in1k") == "resnet18.tv_in1k"
    assert hub.local_name("kaggle://keras/resnetv1/keras/resnet_18_imagenet/3") == \
        "resnet_18_imagenet"
    assert hub.local_name("resnet_18_imagenet") == "resnet_18_imagenet"
    # Without a local copy the handle is left to KerasHub (which would download it).
    assert hub.resolve_preset("hf://timm/resnet18.tv_in1k") == "hf://timm/resnet18.tv_in1k"
    (presets / "resnet18.tv_in1k").mkdir()
    assert hub.resolve_preset("hf://timm/resnet18.tv_in1k") == str(presets / "resnet18.tv_in1k")


def test_is_preset():
    assert hub.is_preset("hf://timm/resnet18.tv_in1k")
    assert hub.is_preset("resnet_18_imagenet")     # a KerasHub built-in preset name
    assert not hub.is_preset("imagenet")
    assert not hub.is_preset("/some/dir/resnet18.weights.h5")
    assert not hub.is_preset(None)


def test_resnet18_imagenet_loads_keras_preset_exactly(presets):
    """weights="imagenet" → the default source's local stand-in → our layers; outputs equal."""
    path = model_testing.write_keras_resnet_preset(presets / "resnet18.tv_in1k", "resnet18")
    ours = backbone_model("resnet18", (64, 64, 3), weights="imagenet")
    theirs = keras_hub.models.Backbone.from_preset(path)
    x = _x()
    np.testing.assert_array_equal(np.asarray(ours(x, training=False)),
                                  np.asarray(theirs(x, training=False)))


def test_resnet34_imagenet_through_timm_converter(presets):
    """A timm snapshot (PyTorch layout) goes through KerasHub's converter into our ResNet-34."""
    path, tensors = model_testing.write_timm_resnet_snapshot(presets / "resnet34.tv_in1k",
                                                             "resnet34")
    ours = backbone_model("resnet34", (64, 64, 3), weights="imagenet")
    # The torchvision tensor lands in the same-named layer, transposed to HWIO.
    np.testing.assert_array_equal(ours.get_layer("stage2_block1_proj_conv").kernel.numpy(),
                                  np.transpose(tensors["layer2.0.downsample.0.weight"],
                                               (2, 3, 1, 0)))
    np.testing.assert_array_equal(ours.get_layer("stage4_block3_bn2").moving_variance.numpy(),
                                  tensors["layer4.2.bn2.running_var"])
    theirs = keras_hub.models.Backbone.from_preset(path)
    x = _x()
    np.testing.assert_allclose(np.asarray(ours(x, training=False)),
                               np.asarray(theirs(x, training=False)), rtol=0, atol=0)


def test_embedder_takes_a_preset_directory_as_weights(tmp_path):
    path = model_testing.write_keras_resnet_preset(tmp_path / "r18", "resnet18", seed=3)
    embedder = build_embedder("resnet18", 16, (64, 64, 3), weights=path)
    theirs = keras_hub.models.Backbone.from_preset(path)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    ours = feature_model(embedder, "stage4")(pixels)[0]
    normalised = embedder.get_layer("preprocess")(pixels)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs(normalised)), atol=1e-5)


def test_wrong_architecture_is_refused(tmp_path):
    path = model_testing.write_keras_resnet_preset(tmp_path / "r34", "resnet34")
    with pytest.raises(ValueError, match="stackwise_num_blocks"):
        backbone_model("resnet18", (64, 64, 3), weights=path)


def test_other_normalisation_is_refused(tmp_path):
    path = model_testing.write_keras_resnet_preset(tmp_path / "r18", "resnet18",
                                                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="normalises pixels"):
        backbone_model("resnet18", (64, 64, 3), weights=path)


def test_offline_imagenet_fails_only_at_the_download(presets, monkeypatch):
    """No local copy and no network: the error is the download's, with what to do offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hf_constants
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    with pytest.raises(ValueError) as info:
        backbone_model("resnet18", (64, 64, 3), weights="imagenet")
    message = str(info.value)
    assert "hf://timm/resnet18.tv_in1k" in message and hub.PRESETS_ENV in message
    assert "No ImageNet weights are bundled" not in message


def test_small_cnn_still_has_no_imagenet_weights():
    with pytest.raises(ValueError, match="No ImageNet weights"):
        backbone_model("small_cnn", (32, 32, 3), weights="imagenet")


def _tiny_hub_resnet(directory):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32], stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2], block_type="basic_block")
    backbone.save_to_preset(str(directory))
    keras_hub.layers.ImageConverter(image_size=(32, 32), scale=[0.01, 0.02, 0.03],
                                    offset=[-1.0, 0.5, 0.0]).save_to_preset(str(directory))
    return backbone


def test_hub_backbone_with_stages_and_preset_normalisation(tmp_path):
    backbone = _tiny_hub_resnet(tmp_path / "tiny_resnet")
    name = f"hub:{tmp_path / 'tiny_resnet'}"
    embedder = build_embedder(name, 8, (32, 32, 3), weights="imagenet")
    pre = embedder.get_layer("preprocess")
    assert pre.mode == "affine"
    np.testing.assert_allclose(pre.scale, [0.01, 0.02, 0.03])
    np.testing.assert_allclose(pre.offset, [-1.0, 0.5, 0.0])
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    # Pyramid P2, P3 → stage1, stage2 (stride 4, 8), as for every other backbone.
    stage1, stage2, emb = feature_model(embedder, ["stage1", "stage2"])(pixels)
    expected = backbone(pixels * np.float32([0.01, 0.02, 0.03]) + np.float32([-1.0, 0.5, 0.0]))
    np.testing.assert_allclose(np.asarray(stage2), np.asarray(expected), atol=1e-5)
    assert stage1.shape[1:3] == (8, 8) and stage2.shape[1:3] == (4, 4)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="stage4"):
        feature_model(embedder, "stage4")


def test_hub_backbone_random_init_and_keras_round_trip(tmp_path):
    _tiny_hub_resnet(tmp_path / "tiny_resnet")
    name = f"hub:{tmp_path / 'tiny_resnet'}"
    embedder = build_embedder(name, 8, (32, 32, 3), weights=None)
    assert embedder.name == "embedder_hub_tiny_resnet"
    path = str(tmp_path / "hub.keras")
    embedder.save(path)
    loaded = load_embedder(path)
    pixels = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(pixels)), np.asarray(embedder(pixels)),
                               atol=1e-6)
    # Stage aliases resolve on the loaded model without the preset.
    feature_model(loaded, ["stage1"])


def test_hub_vit_uses_the_class_token(tmp_path):
    keras.utils.set_random_seed(0)
    vit = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=1,
                                       num_heads=2, hidden_dim=16, mlp_dim=32)
    vit.save_to_preset(str(tmp_path / "tiny_vit"))
    keras_hub.layers.ImageConverter(image_size=(32, 32), scale=1 / 127.5,
                                    offset=-1.0).save_to_preset(str(tmp_path / "tiny_vit"))
    embedder = build_embedder(f"hub:{tmp_path / 'tiny_vit'}", 8, (32, 32, 3),
                              weights="imagenet")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    tokens = vit(pixels / 127.5 - 1.0)
    pooled = keras.Model(embedder.inputs, embedder.get_layer("global_pool").output)(pixels)
    np.testing.assert_allclose(np.asarray(pooled), np.asarray(tokens)[:, 0], atol=1e-5)


# CLIP / SigLIP: dual-tower presets, of which the embedder takes the image tower only. A text
# vocabulary of 97 tokens gives the text tower a weight shape the image tower cannot have.
_TEXT_VOCAB = 97


def _tiny_dual_tower(directory, kind):
    keras.utils.set_random_seed(0)
    tower = dict(patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
                 image_shape=(32, 32, 3))
    text = dict(vocabulary_size=_TEXT_VOCAB, embedding_dim=16, hidden_dim=16, num_layers=1,
                num_heads=2, intermediate_dim=32, max_sequence_length=8)
    if kind == "clip":
        backbone = keras_hub.models.CLIPBackbone(
            keras_hub.models.CLIPVisionEncoder(**tower),
            keras_hub.models.CLIPTextEncoder(**text), projection_dim=8)
        converter = keras_hub.layers.CLIPImageConverter
    else:
        backbone = keras_hub.models.SigLIPBackbone(
            keras_hub.models.SigLIPVisionEncoder(**tower),
            keras_hub.models.SigLIPTextEncoder(**text))
        converter = keras_hub.layers.SigLIPImageConverter
    backbone.save_to_preset(str(directory))
    converter(image_size=(32, 32), scale=[0.01, 0.02, 0.03],
              offset=[-1.0, 0.5, 0.0]).save_to_preset(str(directory))
    return backbone


def _image_feature(backbone, normalised):
    """The image feature the preset's own model computes before its projection / head."""
    if isinstance(backbone, keras_hub.models.CLIPBackbone):
        # CLIPBackbone.get_vision_embeddings: vision_pooler (the class token) of the encoder's
        # layer-normed sequence, then vision_projection, which is not part of the image tower.
        return backbone.vision_pooler(backbone.vision_encoder({"images": normalised}))
    # SigLIPBackbone.get_vision_embeddings is the vision encoder's output: already pooled by
    # its attention-pooling head.
    return backbone.get_vision_embeddings(normalised)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hub_dual_tower_uses_the_image_feature(tmp_path, kind):
    backbone = _tiny_dual_tower(tmp_path / f"tiny_{kind}", kind)
    embedder = build_embedder(f"hub:{tmp_path / f'tiny_{kind}'}", 8, (32, 32, 3),
                              weights="imagenet")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    normalised = pixels * np.float32([0.01, 0.02, 0.03]) + np.float32([-1.0, 0.5, 0.0])
    expected = np.asarray(_image_feature(backbone, normalised))
    assert expected.shape == (2, 16)
    pooled = keras.Model(embedder.inputs, embedder.get_layer("global_pool").output)(pixels)
    np.testing.assert_allclose(np.asarray(pooled), expected, atol=1e-5)
    # The image tower only: its weights exactly, nothing of the text tower or the projection.
    nested = embedder.get_layer(f"hub_tiny_{kind}")
    assert nested.count_params() == backbone.vision_encoder.count_params()
    def text_weights(weights):
        return [w.path for w in weights
                if _TEXT_VOCAB in tuple(w.shape) or "token_embedding" in w.path]

    assert text_weights(backbone.weights)   # the check would see the text tower
    assert not text_weights(embedder.weights)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hub_dual_tower_refuses_another_image_size(tmp_path, kind):
    _tiny_dual_tower(tmp_path / f"tiny_{kind}", kind)
    with pytest.raises(ValueError, match=r"image tower takes \(32, 32\) images.*image_size to 32"):
        build_embedder(f"hub:{tmp_path / f'tiny_{kind}'}", 8, (48, 48, 3), weights="imagenet")


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hub_dual_tower_keras_round_trip(tmp_path, kind):
    _tiny_dual_tower(tmp_path / f"tiny_{kind}", kind)
    embedder = build_embedder(f"hub:{tmp_path / f'tiny_{kind}'}", 8, (32, 32, 3),
                              weights="imagenet")
    path = str(tmp_path / f"{kind}.keras")
    embedder.save(path)
    loaded = load_embedder(path)
    pixels = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(pixels)), np.asarray(embedder(pixels)),
                               atol=1e-6)


def test_hub_vit_embedder_saves_and_loads(tmp_path):
    """KerasHub 0.32's ViT patch layer writes two derived keys into its config that its
    constructor refuses; ``load_embedder`` (and ``export_from_file``) load such a file anyway."""
    preset = model_testing.write_vit_preset(tmp_path / "vit", image_shape=(32, 32, 3),
                                            patch_size=8, num_layers=1, num_heads=2,
                                            hidden_dim=16, mlp_dim=32)
    embedder = build_embedder(f"hub:{preset}", 8, (32, 32, 3), weights="imagenet")
    path = tmp_path / "vit.keras"
    embedder.save(path)
    loaded = load_embedder(str(path))
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(pixels)), np.asarray(embedder(pixels)),
                               atol=1e-6)


def test_preprocess_affine_serialises():
    layer = Preprocess("affine", scale=[1.0, 2.0, 3.0], offset=0.5)
    clone = Preprocess.from_config(layer.get_config())
    x = np.ones((1, 2, 2, 3), np.float32)
    np.testing.assert_allclose(np.asarray(clone(x)), [[[[1.5, 2.5, 3.5]] * 2] * 2])
    with pytest.raises(ValueError, match="affine"):
        Preprocess("affine")
    with pytest.raises(ValueError, match="affine"):
        Preprocess("torch", scale=1.0, offset=0.0)


def test_weights_file_stand_in_for_keras_applications(tmp_path):
    """The dry runs' stand-in for keras.applications' *_notop.h5 loads through weights=path."""
    path = model_testing.write_backbone_weights(tmp_path / "mobilenet.weights.h5", "mobilenet",
                                                (64, 64, 3), alpha=0.25)
    a = backbone_model("mobilenet", (64, 64, 3), weights=path, alpha=0.25)
    b = backbone_model("mobilenet", (64, 64, 3), weights=path, alpha=0.25)
    x = _x()
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
    assert os.path.getsize(path) > 0


def test_remote_preset_without_image_converter_has_no_normalisation(monkeypatch):
    # A published backbone without image_converter.json: KerasHub raises FileNotFoundError,
    # which is the preset's content, not a failed download.
    def missing(*args, **kwargs):
        raise FileNotFoundError("image_converter.json")

    monkeypatch.setattr(keras_hub.layers.ImageConverter, "from_preset", missing)
    assert hub.preset_normalisation("hf://someone/backbone-without-converter") is None

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(keras_hub.layers.ImageConverter, "from_preset", offline)
    with pytest.raises(ValueError, match="network"):
        hub.preset_normalisation("hf://someone/backbone-without-converter")


def test_cohort_members_on_a_hub_preset_path_get_valid_names(tmp_path):
    from tfembed import recipes
    from tfembed.cohort import runner as cohort

    _tiny_hub_resnet(tmp_path / "tiny_resnet")
    c = recipes.resolve("dm2_demo", ["cohort.size=2", *SMALL_CNN, "model.image_size=32"])
    c.cohort.backbones = [f"hub:{tmp_path / 'tiny_resnet'}", "small_cnn"]
    c.model.backbone_kwargs = {}
    members = cohort.build_members(c, seed=0)
    assert "/" not in members[0].name and members[0].name.startswith("member0_hub_")
