"""The in-memory description of a dataset that every reader returns.

A reader never decodes images: it lists them (paths, or pixels for the small demo domains) with
their labels, so that the tf.data pipeline in ``preprocess.py``/``sampling.py`` does the decoding in
parallel. Labels are contiguous ints ``0..num_classes-1`` over the *whole* domain (train and test
classes are disjoint ranges), so a multi-domain pipeline only has to add a per-domain offset.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

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
    """

    labels: np.ndarray
    paths: Optional[np.ndarray] = None
    images: Optional[np.ndarray] = None
    boxes: Optional[np.ndarray] = None
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    hflip: bool = True

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
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
                     hflip=self.hflip)


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
    """

    name: str
    splits: Dict[str, Split]
    num_classes: int
    hflip: bool = True

    def __post_init__(self):
        # Splits carry the policy (the pipelines take splits); copies, so that a split shared
        # with another Domain object keeps that domain's policy.
        self.hflip = bool(self.hflip)
        self.splits = {name: split if split.hflip == self.hflip
                       else dataclasses.replace(split, hflip=self.hflip)
                       for name, split in self.splits.items()}

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def has_query_gallery(self) -> bool:
        return "query" in self.splits
