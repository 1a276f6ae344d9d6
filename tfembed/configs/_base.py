"""Shared defaults of all recipes (a private module: not a recipe itself)."""

import ml_collections

# Smoke settings shared by the paper-scale recipes: tiny images, two steps, no pretrained
# weights, small batches — the whole pipeline runs, nothing it produces is meaningful.
PAPER_SMOKE = {
    "model.weights": "",
    "model.image_size": 32,
    "model.resize_size": 36,
    "train.steps": 2,
    "train.steps_per_epoch": 2,
    "train.classes_per_batch": 4,
    "train.images_per_class": 2,
    "eval.batch_size": 16,
}


def base_config():
    c = ml_collections.ConfigDict()
    c.recipe = ""
    c.pipeline = "specialists"
    c.smoke = False
    c.seed = 0
    c.strategy = "default"
    # Root that holds the datasets (CUB_200_2011/, Stanford_Online_Products/, ...). Empty: the
    # TFEMBED_DATA_DIR environment variable, else ~/tensorflow_datasets/downloads/manual.
    c.data_dir = ""
    c.domains = []
    # Trained specialists (.keras files or SavedModel dirs), one per domain; empty: train them.
    c.teachers = []
    c.model = ml_collections.ConfigDict(dict(
        backbone="resnet50", embedding_dim=128, weights="imagenet", image_size=224,
        resize_size=256, backbone_kwargs={}))
    c.train = ml_collections.ConfigDict(dict(
        loss="triplet_semihard", loss_kwargs={"margin": 0.2}, classes_per_batch=32,
        images_per_class=4, optimizer="adam", learning_rate=1e-5, weight_decay=0.0,
        steps=20000, steps_per_epoch=500, flip=True))
    c.eval = ml_collections.ConfigDict(dict(ks=[1, 2, 4, 8], batch_size=128, every_n_epochs=1,
                                            max_images_per_split=0, random_init_baseline=False))
    c.export = ml_collections.ConfigDict(dict(enabled=True, root=""))
    return c


def paper_specialist(domain):
    """000 §5: ResNet50 (ImageNet), 128-d, batch 128 = 32×4, triplet semi-hard, Adam 1e-5."""
    c = base_config()
    c.domains = [domain]
    return c
