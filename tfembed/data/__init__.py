"""Data: datasets as ``Domain`` objects (class-disjoint train/test splits) and tf.data pipelines.

``load_domain("cub", data_dir=...)`` reads a dataset in its official on-disk layout (or a demo
domain shipped with tfembed: ``digits``, ``fashion``, ``glyphs``); ``training_batches`` yields
c×k class-balanced batches; ``eval_dataset`` the deterministic evaluation view. Both take
``spec=model`` to read the image sizes from the model's :class:`ImageSpec`.
"""

from tfembed.data.preprocess import (
    default_label_offsets,
    eval_dataset,
    training_batches,
    unlabelled_batches,
)
from tfembed.data.sources import DatasetNotFoundError, load_domain, read_folder, verify_images
from tfembed.data.types import Domain, ImageSpec, Split

__all__ = [
    "Domain",
    "Split",
    "ImageSpec",
    "DatasetNotFoundError",
    "load_domain",
    "read_folder",
    "verify_images",
    "training_batches",
    "eval_dataset",
    "unlabelled_batches",
    "default_label_offsets",
]
