"""The in-memory description of a dataset that every reader returns.

A reader never decodes images: it lists them (paths, or pixels for the small demo domains) with
their labels, so that the tf.data pipeline in ``pipeline.py``/``sampling.py`` does the decoding in
parallel. Labels are contiguous ints ``0..num_classes-1`` over the *whole* domain (train and test
classes are disjoint ranges), so a multi-domain pipeline only has to add a per-domain offset.

:class:`ImageSpec` says what pixels a model takes; an embedder built by
``tfembed.models.build_embedder`` carries it, so the pipelines, the evaluation and the export read
the sizes from the model instead of from every call.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


@dataclasses.dataclass
class Split:
    """One split of one domain.

    Attributes:
      labels: ``int64 [N]`` class ids, contiguous over the domain.
      paths: ``[N]`` image file paths (str), or None for an in-memory split.
      images: ``uint8 [N, H, W, C]`` pixels for in-memory splits (demo domains), else None.
      boxes: optional ``float32 [N, 4]`` bounding boxes ``(x, y, w, h)`` in pixels (CUB, CARS196).
      skipped: ``(path, reason)`` for every listed image that was unreadable and left out.
      hflip: a mirrored image keeps its class (the augmentation policy of the split's domain,
        copied from :attr:`Domain.hflip`); the training transforms never flip a split where it
        is False, whatever their ``flip`` argument.
      label_sets: optional ``int64 [N, L]`` every label of each image, −1 padded, for datasets
        whose evaluation images may belong to several classes (UnED's ``class_id`` lists);
        ``labels`` then holds each image's first label. None: one label per image.
    """

    labels: np.ndarray
    paths: Optional[np.ndarray] = None
    images: Optional[np.ndarray] = None
    boxes: Optional[np.ndarray] = None
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    hflip: bool = True
    label_sets: Optional[np.ndarray] = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.label_sets is not None:
            self.label_sets = np.asarray(self.label_sets, dtype=np.int64).reshape(
                len(self.labels), -1)
        if (self.paths is None) == (self.images is None):
            raise ValueError("a Split holds either `paths` or `images`, exactly one of them")
        if self.paths is not None:
            self.paths = np.asarray(self.paths, dtype=object)
        n = len(self.paths) if self.paths is not None else len(self.images)
        if n != len(self.labels):
            raise ValueError(f"{n} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.labels)

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.labels)

    def subset(self, indices) -> "Split":
        """The rows ``indices`` of this split (same representation, same label space)."""
        indices = np.asarray(indices, np.int64)
        pick = lambda a: None if a is None else a[indices]  # noqa: E731
        return Split(labels=self.labels[indices], paths=pick(self.paths),
                     images=pick(self.images), boxes=pick(self.boxes), skipped=list(self.skipped),
                     hflip=self.hflip, label_sets=pick(self.label_sets))


@dataclasses.dataclass
class Domain:
    """A dataset seen as one domain of a (multi-domain) embedding problem.

    Attributes:
      name: short name used in reports (``cub``, ``cars``, ``inshop``, ``sop``, ``digits``...).
      splits: ``{"train": Split, "test": Split}``; In-shop style datasets have
        ``{"train", "query", "gallery"}`` instead of ``"test"``.
      num_classes: number of classes over all splits (labels are ``< num_classes``).
      hflip: augmentation policy: a mirrored image keeps its class, so a random horizontal flip
        is a valid training augmentation (DESIGN §6: augmentations must not change a class).
        False for text (the demo ``digits`` and ``glyphs``: a mirrored 'b' is a 'd', a mirrored
        "08" reads "80") and for any domain whose mirror image is another class; True for
        photos of objects (CUB, CARS196, SOP, In-shop, ImageNet...). Copied onto every split
        (``Split.hflip``) at construction, so each stream built from the splits obeys it.
      protocol: how the domain is evaluated: ``"recall"`` (Recall@K on ``test``, or ``query``
        against ``gallery``: ``tfembed.evaluation.protocol``) or ``"uned"`` (UnED's R@1 / mMP@5
        on its query/index split pairs, separate and merged: ``tfembed.evaluation.uned``). A
        UnED domain is also called ``cars``, so the name alone cannot tell.
    """

    name: str
    splits: Dict[str, Split]
    num_classes: int
    hflip: bool = True
    protocol: str = "recall"

    def __post_init__(self):
        # Splits carry the policy (the pipelines take splits); copies, so that a split shared
        # with another Domain object keeps that domain's policy.
        self.hflip = bool(self.hflip)
        if self.protocol not in ("recall", "uned"):
            raise ValueError(f"Domain {self.name!r}: protocol must be 'recall' or 'uned', got "
                             f"{self.protocol!r}")
        self.splits = {name: split if split.hflip == self.hflip
                       else dataclasses.replace(split, hflip=self.hflip)
                       for name, split in self.splits.items()}

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def has_query_gallery(self) -> bool:
        return "query" in self.splits


#: The standard evaluation transform: resize to 256, centre-crop 224.
DEFAULT_IMAGE_SIZE, DEFAULT_RESIZE_SIZE = (224, 224), (256, 256)


Size = Union[int, Sequence[int]]


def as_size(size: Size, what: str = "size") -> Tuple[int, int]:
    """``224`` or ``(224, 224)`` → ``(224, 224)``; anything else is a ValueError naming ``what``."""
    if isinstance(size, bool):
        raise ValueError(f"{what} must be an int or a (height, width) pair, got {size!r}")
    if isinstance(size, (int, np.integer)):
        pair = (int(size), int(size))
    else:
        try:
            pair = tuple(int(s) for s in size)
        except TypeError:
            raise ValueError(f"{what} must be an int or a (height, width) pair, got {size!r}") from None
        if len(pair) != 2:
            raise ValueError(f"{what} must be an int or a (height, width) pair, got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return pair


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """The pixels a model takes and the evaluation transform that makes them.

    Attributes:
      size: ``(height, width)`` of the model's input (the centre crop; the training crop).
      resize: ``(height, width)`` the evaluation transform resizes to before the centre crop
        (default: the 256/224 ratio of the standard transform applied to ``size``).
      channels: channels of the float ``0..255`` pixels the model takes.
      normalisation: the model's own input normalisation (its ``Preprocess`` mode; informational:
        models normalise internally, the pipelines always feed ``0..255`` pixels).

    An embedder carries its spec (``build_embedder(..., resize_size=...)`` records the resize in
    its config); :meth:`of` reads it back, from a model or a saved one.
    """

    size: Tuple[int, int] = DEFAULT_IMAGE_SIZE
    resize: Optional[Tuple[int, int]] = None
    channels: int = 3
    normalisation: Optional[str] = None

    def __post_init__(self):
        size = as_size(self.size, "ImageSpec size")
        if self.resize is None:
            ratio = DEFAULT_RESIZE_SIZE[0] / DEFAULT_IMAGE_SIZE[0]
            resize = tuple(int(round(s * ratio)) for s in size)
        else:
            resize = as_size(self.resize, "ImageSpec resize")
        if resize[0] < size[0] or resize[1] < size[1]:
            raise ValueError(f"ImageSpec resize {resize} must be at least its size {size}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "resize", resize)
        object.__setattr__(self, "channels", int(self.channels))

    @classmethod
    def of(cls, source: Union["ImageSpec", object, None] = None) -> "ImageSpec":
        """The spec of ``source``: an ImageSpec, a model (its input shape and the resize recorded
        by ``build_embedder``; an ensemble's or trainer's ``image_spec`` property, which is its
        embedder's), or None (the standard 224/256 transform)."""
        if source is None:
            return cls()
        if isinstance(source, ImageSpec):
            return source
        # Subclassed models (ensembles, trainers) state it: their inner embedder's.
        own = getattr(type(source), "image_spec", None)
        if isinstance(own, property):
            return source.image_spec
        # A SavedModel loaded by load_embedder: the spec its export recorded (tfembed.json).
        recorded = getattr(source, "recorded_image_spec", None)
        if isinstance(recorded, ImageSpec):
            return recorded
        shape = _input_shape(source)
        if shape is None or None in shape[1:3]:
            raise ValueError(f"cannot read an ImageSpec from {source!r}: it has no single image "
                             "input of static (height, width); pass image_size/resize_size")
        preprocess = _preprocess_layer(source)
        return cls(size=shape[1:3], resize=getattr(preprocess, "resize_size", None),
                   channels=shape[3] or 3, normalisation=getattr(preprocess, "mode", None))

    def same_sizes(self, other: Optional["ImageSpec"]) -> bool:
        """Whether ``other`` cuts the same pixels (crop and resize; the normalisation is the
        model's own business, inside it)."""
        return other is not None and (self.size, self.resize) == (other.size, other.resize)

    def sizes(self, image_size=None, resize_size=None):
        """``(image_size, resize_size)`` of this spec; an explicit size must agree with it."""
        for given, own, what in ((image_size, self.size, "image_size"),
                                 (resize_size, self.resize, "resize_size")):
            if given is not None and as_size(given, what) != own:
                raise ValueError(f"{what}={given!r} contradicts the model's ImageSpec ({what} "
                                 f"{own}); leave it out to use the model's")
        return self.size, self.resize


def resolve_sizes(image_size=None, resize_size=None, spec=None):
    """``(image_size, resize_size)`` pairs of a pipeline call: from ``spec`` (an ImageSpec or a
    model) when given, else the arguments (a missing resize: the 256/224 ratio of the size), else
    the standard 224/256 transform."""
    if spec is not None:
        return ImageSpec.of(spec).sizes(image_size, resize_size)
    # A size without a resize gets the standard transform's 256/224 ratio, as a model's spec does.
    own = ImageSpec(image_size if image_size is not None else DEFAULT_IMAGE_SIZE, resize_size)
    return own.size, own.resize


def _input_shape(model) -> Optional[Sequence]:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    return tuple(inputs[0].shape)


def _preprocess_layer(model):
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "Preprocess":
            return layer
        if hasattr(layer, "layers"):   # a nested model (an ensemble's backbone)
            found = _preprocess_layer(layer)
            if found is not None:
                return found
    return None
