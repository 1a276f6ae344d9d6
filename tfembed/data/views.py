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
* :class:`TeacherSpecViews`: teachers that take other image sizes than the student (specialists
  from other teams, DESIGN §7): the batch's domain's teacher's view at its own
  :class:`ImageSpec` and the student's at its own, ``{"images", "student_images"}``.

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
    domain: object = 0

    def transform(self, image, row=0, spec=None):
        """The training transform of ``image`` with the element's seed (``row`` > 0: another,
        independent draw for the same element) at the stream's sizes, or at ``spec``'s."""
        return self.augment(image, self.stream_seed + [row, self.number],
                            self.spec if spec is None else spec, self.flip)


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


@dataclasses.dataclass(frozen=True)
class TeacherSpecViews:
    """Each domain's teacher sees the image at its own :class:`ImageSpec`, the student at the
    stream's (DESIGN §7: specialists trained by other teams at other sizes).

    ``specs``: one ImageSpec (or model) per domain, the teacher's; None for a domain without a
    teacher. ``{"images"}`` is the teacher's view of the batch's domain, ``"student_images"``
    the student's. Both are the same draw of the training transform (one seed, one flip), each
    at its own sizes: under ``crop="random_resized"`` the same box of the source image; under
    ``"resize_crop"`` each crop is placed uniformly within its own resize, so the two crops
    cover the image up to the crop jitter (a few pixels) differently. A domain whose teacher
    takes the student's sizes gets the student's pixels. The elements of a batch must come from
    one domain (domain-specific or balanced sampling), as the teachers' sizes differ.
    """

    specs: tuple

    def __post_init__(self):
        specs = tuple(None if s is None else ImageSpec.of(s) for s in self.specs)
        if not specs:
            raise ValueError("TeacherSpecViews needs one teacher spec per domain")
        object.__setattr__(self, "specs", specs)

    def __call__(self, draw: Draw) -> dict:
        student = draw.transform(draw.source)

        def view(spec):
            if spec is None or spec.same_sizes(draw.spec):
                return lambda: student
            return lambda: draw.transform(draw.source, spec=spec)

        if len(self.specs) == 1:
            teacher = view(self.specs[0])()
        else:
            # The teachers take different sizes: only the element's domain's view is cut.
            teacher = tf.switch_case(tf.cast(draw.domain, tf.int32),
                                     [view(s) for s in self.specs])
        return {"images": teacher, "student_images": student}


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
