"""What a training element shows the model: one augmented view, or extra views for a method.

A stream (:func:`tfembed.data.batches`) draws ``(domain, index)`` from its sampler, loads the
image and hands a :class:`Draw` to its view, which returns the element's inputs:

* ``None`` (the default): ``{"images"}``, one draw of the training transform.
* :class:`StudentView`: cross-quality distillation (001): the teacher's clean view and a degraded
  one for the student, ``{"images", "student_images"}``.
* :class:`CohortViews`: view diversity of a cohort (003): ``L`` independent draws of the crop and
  flip per image, ``{"images": view 0, "views": [L, H, W, 3]}``.
* :class:`TeacherCacheViews`: inputs a cached teacher can look up (one of ``K`` fixed views per
  example, or the evaluation view), ``{"images", "example", "view"}`` (+ ``"student_images"``).

Every draw is a stateless function of the recipe seed and the element number, so each view keeps
the stream reproducible and resumable.
"""

import dataclasses
from typing import NamedTuple

import tensorflow as tf

from tfembed.data.transforms import Augment, eval_transform, low_resolution
from tfembed.data.types import ImageSpec


class Draw(NamedTuple):
    """One element of a stream, before its view is cut.

    ``source`` is the image the views are cut from (its bounding-box crop when the stream crops
    to boxes), ``raw`` the image as loaded; ``index`` its row in its domain's split; ``number``
    the element's position in the stream (its augmentation seed); ``seed`` the recipe seed and
    ``stream_seed`` the stream's base augmentation seed ``[2]``.
    """

    source: tf.Tensor
    raw: tf.Tensor
    index: tf.Tensor
    number: tf.Tensor
    seed: int
    stream_seed: tf.Tensor
    spec: ImageSpec
    augment: Augment
    flip: object   # the element's domain's flip: a bool or a scalar bool tensor

    def transform(self, image, row=0):
        """The training transform of ``image`` with the element's seed (``row`` > 0: another,
        independent draw for the same element)."""
        return self.augment(image, self.stream_seed + [row, self.number], self.spec, self.flip)


def single_view(draw: Draw) -> dict:
    """The default view: one draw of the training transform."""
    return {"images": draw.transform(draw.source)}


STUDENT_VIEWS = ("lowres", "uncropped")


@dataclasses.dataclass(frozen=True)
class StudentView:
    """The student's degraded view of every image (001's cross-quality distillation).

    ``"lowres"``: the clean view down-sampled to ``low_resolution_size`` and back up (50 in
    001); ``"uncropped"``: the clean view is the bounding-box crop, the student's the whole
    image, with the same crop and flip draw (the stream needs ``Split.boxes``).
    """

    kind: str
    low_resolution_size: int = 50

    def __post_init__(self):
        if self.kind not in STUDENT_VIEWS:
            raise ValueError(f"student view must be one of {STUDENT_VIEWS}, got {self.kind!r}")

    @property
    def needs_boxes(self):
        return self.kind == "uncropped"

    def __call__(self, draw: Draw) -> dict:
        image = draw.transform(draw.source)
        if self.kind == "lowres":
            student = low_resolution(image, self.low_resolution_size)
        else:
            student = draw.transform(draw.raw)
        return {"images": image, "student_images": student}


# Seed row of cohort view v: far from the rows other views use.
_COHORT_ROW = 0x9E37


@dataclasses.dataclass(frozen=True)
class CohortViews:
    """``count`` independent draws of the training transform per image (003's view diversity:
    each cohort member sees its own crop and flip; with ``crop="random_resized"`` or
    ``"multi_resolution"`` its own scale, aspect and position). View 0 is the ordinary draw."""

    count: int

    def __post_init__(self):
        if isinstance(self.count, bool) or int(self.count) != self.count or self.count < 1:
            raise ValueError(f"cohort views must be an int >= 1, got {self.count!r}")

    def __call__(self, draw: Draw) -> dict:
        image = draw.transform(draw.source)
        if self.count == 1:
            return {"images": image}
        extra = [draw.transform(draw.source, v * _COHORT_ROW) for v in range(1, self.count)]
        return {"images": image, "views": tf.stack([image] + extra)}


def check_teacher_views(teacher_views):
    if isinstance(teacher_views, bool) or int(teacher_views) != teacher_views or teacher_views < 0:
        raise ValueError(f"teacher_views must be an int >= 0 (0: the evaluation transform, K: K "
                         f"fixed augmented views), got {teacher_views!r}")
    return int(teacher_views)


def fixed_view_seed(seed, example, view):
    """The stateless augmentation seed of view ``view`` of ``example`` (its row in the split).

    Independent of when the pair is drawn, so the pixels (and a frozen teacher's embedding of
    them) are the same every time: what makes a teacher cache exact.
    """
    base = tf.constant([seed, 0xCAC4E], tf.int64)
    base = tf.random.experimental.stateless_fold_in(base, tf.cast(example, tf.int64))
    return tf.random.experimental.stateless_fold_in(base, tf.cast(view, tf.int64))


@dataclasses.dataclass(frozen=True)
class TeacherCacheViews:
    """Inputs whose teacher embedding can be cached (:class:`tfembed.distill.TeacherCache`).

    ``count`` K >= 1: every image is one of K fixed augmented views of its example (crop and flip
    seeded by ``(seed, example, view)``, the view drawn per element), seen by teacher and student
    alike. K = 0: the teacher sees the evaluation transform (``"images"``, view 0) and the student
    the ordinary random augmentation (``"student_images"``). Both add ``"example"`` (the image's
    row in its domain's split) and ``"view"``.
    """

    count: int

    def __post_init__(self):
        check_teacher_views(self.count)

    def __call__(self, draw: Draw) -> dict:
        keys = {"example": draw.index}
        if self.count:
            # Which of the K fixed views this draw shows: a stateless function of the element
            # number (the stream stays resumable); the view's pixels depend on (example, view).
            pick = tf.constant([draw.seed, 0x71E5], tf.int64) + [0, draw.number]
            view = tf.random.stateless_uniform([], pick, 0, self.count, dtype=tf.int32)
            seed = fixed_view_seed(draw.seed, draw.index, view)
            image = draw.augment(draw.source, seed, draw.spec, draw.flip)
            return {"images": image, **keys, "view": view}
        return {"images": eval_transform(draw.source, draw.spec.size, draw.spec.resize),
                "student_images": draw.transform(draw.source), **keys,
                "view": tf.constant(0, tf.int32)}
