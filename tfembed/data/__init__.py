"""Data: datasets as ``Domain`` objects (class-disjoint train/test splits) and tf.data pipelines.

``load_domain("cub", data_dir=...)`` reads a dataset in its official on-disk layout (or a demo
domain shipped with tfembed: ``digits``, ``fashion``, ``glyphs``). A training stream is composed
from a sampler, a transform and a view (:func:`batches`); ``training_batches`` is the c×k
class-balanced one, ``eval_dataset`` the deterministic evaluation view. Both take ``spec=model``
to read the image sizes from the model's :class:`ImageSpec`.

>>> ds = te.data.batches([cars.train], te.data.Pairs(32, 16), spec=model,
...                      augment=te.data.Augment(crop="random_resized"))
"""

from tfembed.data.pipeline import (
    batches,
    default_label_offsets,
    eval_dataset,
    training_batches,
    unlabelled_batches,
)
from tfembed.data.samplers import ClassBalanced, Pairs, Scheduled, Uniform
from tfembed.data.sources import (
    DatasetNotFoundError,
    load_domain,
    read_folder,
    verify_images,
)
from tfembed.data.transforms import Augment
from tfembed.data.types import Domain, ImageSpec, Split
from tfembed.data.views import CohortViews, StudentView, TeacherCacheViews, TeacherSpecViews

__all__ = [
    "Domain",
    "Split",
    "ImageSpec",
    "DatasetNotFoundError",
    "load_domain",
    "read_folder",
    "verify_images",
    "batches",
    "ClassBalanced",
    "Pairs",
    "Scheduled",
    "Uniform",
    "Augment",
    "StudentView",
    "CohortViews",
    "TeacherCacheViews",
    "TeacherSpecViews",
    "training_batches",
    "eval_dataset",
    "unlabelled_batches",
    "default_label_offsets",
]
