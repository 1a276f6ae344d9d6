"""TeacherCache: frozen teachers' embeddings computed once, read by example id while training.

A frozen teacher in inference mode is a pure function of its input. When that input is
deterministic as well — the evaluation transform of each training image, or one of K fixed
augmented views of it (a stream with ``view=TeacherCacheViews(K)``) — the teacher's embedding of
every ``(example, view)`` can be computed once, before training, instead of once per step. The
distillation step then pays for the student alone. The cost moves up front: ``N·max(K, 1)``
teacher forwards for a split of N images, against ``steps·B`` when the teacher runs live, so the
cache pays off as soon as training visits each ``(example, view)`` more than once.

The trade: with the cache, the student sees only K augmentations of each image (or, with
``teacher_views=0``, fresh augmentations while the teacher's target comes from the clean
evaluation view) instead of a fresh draw at every visit. :class:`UniversalDistiller` and
:class:`Distiller` take a cache wherever they take live teachers (through
:class:`tfembed.distill.teachers.CachedTeacher`), and with live teachers on the
same ``teacher_views`` stream they compute the same step (tested).

Storage: one float32 table ``[N_d, V, D]`` per domain (``V = max(K, 1)``), on disk as
``<dir>/<domain index>.npy`` next to ``meta.json`` (what was cached: views, seed, transform,
split sizes, a fingerprint of each teacher's weights). A save is written to a temporary
directory and renamed into place, so an interrupted save leaves no cache behind and the next run
recomputes it. While training the tables are one tensor in host memory, captured by the
train step (not a variable: not checkpointed, not copied per replica).

Example:

>>> cache = TeacherCache.load_or_compute("runs/cache", [cub_teacher, cars_teacher],
...                                      [cub.train, cars.train], teacher_views=4,
...                                      spec=student, seed=0)
>>> distiller = UniversalDistiller(cache, student, distill_loss=SNDLoss(sigma=0.25))
>>> distiller.fit(training_batches([cub.train, cars.train], 32, 4, spec=student,
...                                view=TeacherCacheViews(4), seed=0), ...)
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfembed.data.pipeline import teacher_view_dataset
from tfembed.data.transforms import Augment
from tfembed.data.types import ImageSpec
from tfembed.data.views import check_teacher_views

FORMAT = 1


def _size_meta(size):
    return int(size[0]) if size[0] == size[1] else [int(s) for s in size]


def teacher_fingerprint(model) -> str:
    """SHA-1 of a model's weights: a retrained teacher at the same path is a different teacher."""
    digest = hashlib.sha1()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()


def _teacher_specs(teacher_specs, spec, num_domains):
    """Per-domain teacher specs: ``teacher_specs`` (None entries: ``spec``), or ``spec`` for all."""
    if teacher_specs is None:
        return [spec] * num_domains
    teacher_specs = list(teacher_specs)
    if len(teacher_specs) != num_domains:
        raise ValueError(f"{len(teacher_specs)} teacher_specs for {num_domains} domains")
    return [spec if s is None else ImageSpec.of(s) for s in teacher_specs]


class TeacherCache:
    """Teacher embeddings per ``(domain, example, view)``, looked up inside the train step.

    Args:
      tables: one float32 array ``[N_d, V, D]`` per domain, or ``None`` for a domain without a
        teacher (a label-loss domain of :class:`UniversalDistiller`; its lookups return zeros).
      teacher_views: the ``teacher_views`` of the training stream the tables match (0: the
        evaluation transform, one view; K: K fixed augmented views).
      domain_names: names of the domains (default ``domain0``...).
      meta: the description written to ``meta.json`` (see :meth:`describe`).
      directory: where the cache is saved, if it is (what ``get_config`` of a trainer records).
    """

    def __init__(self, tables: Sequence[Optional[np.ndarray]], teacher_views: int,
                 domain_names: Optional[Sequence[str]] = None, meta: Optional[dict] = None,
                 directory: Optional[str] = None):
        self.teacher_views = check_teacher_views(teacher_views)
        self.views = max(self.teacher_views, 1)
        tables = [None if t is None else np.asarray(t, np.float32) for t in tables]
        present = [t for t in tables if t is not None]
        if not present:
            raise ValueError("a TeacherCache needs at least one domain with a teacher table")
        for d, t in enumerate(tables):
            if t is not None and (t.ndim != 3 or t.shape[1] != self.views):
                raise ValueError(f"table {d} has shape {t.shape}; expected [examples, "
                                 f"{self.views} views, dim]")
        # Teachers of different dimensions (DESIGN §7): zero-padded to the largest, which keeps
        # every distance, as DomainTeachers does for live teachers.
        self.dim = max(t.shape[-1] for t in present)
        present = [np.pad(t, ((0, 0), (0, 0), (0, self.dim - t.shape[-1]))) for t in present]
        self.num_domains = len(tables)
        self.domain_names = ([str(n) for n in domain_names] if domain_names else
                             [f"domain{d}" for d in range(self.num_domains)])
        if len(self.domain_names) != self.num_domains:
            raise ValueError(f"{len(self.domain_names)} domain_names for {self.num_domains} "
                             "tables")
        self.meta = dict(meta or {})
        self.directory = directory
        self._tables = tables
        self.examples = [0 if t is None else len(t) for t in tables]
        sizes = [n * self.views for n in self.examples]
        flat = np.concatenate([t.reshape(-1, self.dim) for t in present])
        # Host memory: a table can be far larger than an accelerator can spare, and a gather of
        # B rows is cheap to copy. A tensor, not a variable: the train step captures it by
        # reference, checkpoints do not save it, and a strategy does not copy it per replica.
        with tf.init_scope(), tf.device("/CPU:0"):
            self._flat = tf.constant(flat)
            self._offsets = tf.constant(np.cumsum([0] + sizes)[:-1], tf.int64)
            self._examples = tf.constant(self.examples, tf.int64)
            self._present = tf.constant([t is not None for t in tables])

    def table(self, domain: int) -> Optional[np.ndarray]:
        """The ``[N, V, D]`` embeddings of one domain (None without a teacher)."""
        return self._tables[domain]

    def lookup(self, domain, example, view):
        """The cached teacher embeddings ``[B, D]`` float32 of a batch.

        Args:
          domain: the batch's domain, a scalar or ``[B]`` int.
          example: ``[B]`` row of each image in its domain's split (``inputs["example"]``).
          view: ``[B]`` view of each image (``inputs["view"]``).
        """
        domain = tf.cast(domain, tf.int64)
        example = tf.cast(example, tf.int64)
        view = tf.cast(view, tf.int64)
        present = tf.gather(self._present, domain)
        in_range = tf.logical_and(
            tf.logical_and(example >= 0, example < tf.gather(self._examples, domain)),
            tf.logical_and(view >= 0, view < self.views))
        check = tf.debugging.Assert(
            tf.reduce_all(tf.logical_or(tf.logical_not(present), in_range)),
            ["TeacherCache: an (example, view) outside the cached split; the cache was computed "
             "for other data (examples per domain, views):", self._examples, self.views])
        with tf.control_dependencies([check]):
            rows = tf.gather(self._offsets, domain) + example * self.views + view
            rows = tf.where(present, rows, tf.zeros_like(rows))
        emb = tf.gather(self._flat, rows)
        # XLA drops the Assert and clamps the gather: make such rows NaN, so the loss turns
        # non-finite and the run stops naming the step, instead of training on another
        # example's target.
        bad = tf.logical_and(present, tf.logical_not(in_range))
        emb = tf.where(bad[..., None], tf.constant(float("nan")), emb)
        return emb * tf.cast(present, tf.float32)[..., None]

    # ------------------------------------------------------------------------------ compute

    @staticmethod
    def describe(teachers, splits, teacher_views, *, spec=None, augment: Optional[Augment] = None,
                 seed=0, crop_boxes=False, domain_names=None, teacher_specs=None) -> dict:
        """What a cache of these teachers and splits holds: the ``meta.json`` it must match."""
        spec = ImageSpec.of(spec)
        own = _teacher_specs(teacher_specs, spec, len(splits))
        augment = Augment() if augment is None else augment
        kw = augment.crop_kwargs
        mode = kw["crop"]
        # Only the ranges the mode uses (JSON lists, as meta.json reads back).
        crop_meta = {"mode": mode, **({"scale": list(kw["crop_scale"]),
                                       "ratio": list(kw["crop_ratio"])}
                                      if mode == "random_resized" else {}),
                     **({"resize_range": list(kw["crop_resize_range"])}
                        if mode == "multi_resolution" else {})}
        return {
            "format": FORMAT,
            "teacher_views": check_teacher_views(teacher_views),
            # The fixed views depend on the seed and the transform (the flip per domain: its
            # policy and the recipe's switch; the crop mode); the eval view on neither.
            "seed": int(seed) if teacher_views else None,
            "flip": augment.flips(splits) if teacher_views else None,
            "crop": crop_meta if teacher_views else None,
            # Square sizes as one int (the format caches were written in before ImageSpec).
            "image_size": _size_meta(spec.size), "resize_size": _size_meta(spec.resize),
            "crop_boxes": bool(crop_boxes),
            "domains": [{"name": str(domain_names[d]) if domain_names else f"domain{d}",
                         "examples": len(split),
                         "teacher": None if t is None else teacher_fingerprint(t),
                         # A teacher at its own sizes (DESIGN §7); absent: the stream's.
                         **({} if own[d].same_sizes(spec) else
                            {"image_size": _size_meta(own[d].size),
                             "resize_size": _size_meta(own[d].resize)})}
                        for d, (t, split) in enumerate(zip(teachers, splits))],
        }

    @classmethod
    def compute(cls, teachers, splits, teacher_views, *, spec=None,
                augment: Optional[Augment] = None, seed=0, crop_boxes=False, batch_size=128,
                domain_names=None, meta=None, teacher_specs=None):
        """Runs every teacher (inference mode) over every ``(example, view)`` of its split.

        Args:
          teachers: one frozen embedder per domain (None: no teacher for that domain).
          splits: the matching training splits (``Split``), the ones the stream samples.
          teacher_views, spec, augment, seed, crop_boxes: as given to
            :func:`tfembed.data.batches` for the training stream (``view=TeacherCacheViews(
            teacher_views)``; ``augment.flip``: a bool or one per split; a split whose ``hflip``
            is False is never flipped).
          batch_size: teacher batch size.
          teacher_specs: one :class:`ImageSpec` per domain for teachers that take other sizes
            than the stream's ``spec`` (None entries, or None: ``spec``). Teacher ``d`` embeds
            view ``(example, view)`` cut at its own sizes with the seed the stream uses for it.
        """
        if len(teachers) != len(splits):
            raise ValueError(f"{len(teachers)} teachers for {len(splits)} splits")
        augment = Augment() if augment is None else augment
        meta = meta or cls.describe(teachers, splits, teacher_views, spec=spec, augment=augment,
                                    seed=seed, crop_boxes=crop_boxes, domain_names=domain_names,
                                    teacher_specs=teacher_specs)
        own = _teacher_specs(teacher_specs, ImageSpec.of(spec), len(splits))
        flips = augment.flips(splits)
        views = max(int(teacher_views), 1)
        tables = []
        for d, (teacher, split) in enumerate(zip(teachers, splits)):
            if teacher is None:
                tables.append(None)
                continue
            ds = teacher_view_dataset(split, teacher_views, batch_size, spec=own[d],
                                      augment=dataclasses.replace(augment, flip=flips[d]),
                                      seed=seed, crop_boxes=crop_boxes)
            forward = tf.function(lambda x, t=teacher: tf.cast(t(x, training=False), tf.float32))
            emb = np.concatenate([forward(batch).numpy() for batch in ds])
            tables.append(emb.reshape(len(split), views, -1))
            logging.info("teacher cache: domain %s, %d examples × %d views → %s",
                         meta["domains"][d]["name"], len(split), views, tables[-1].shape)
        return cls(tables, teacher_views, [m["name"] for m in meta["domains"]], meta=meta)

    # ------------------------------------------------------------------------------ storage

    def save(self, directory: str) -> str:
        """Writes the cache atomically (temporary directory, then rename); returns its path."""
        directory = os.path.abspath(directory)
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
        try:
            for d, table in enumerate(self._tables):
                if table is not None:
                    np.save(os.path.join(tmp, f"{d}.npy"), table)
            meta = dict(self.meta, format=FORMAT, teacher_views=self.teacher_views,
                        domain_names=self.domain_names,
                        present=[t is not None for t in self._tables])
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1)
            old = None
            if os.path.exists(directory):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
                os.rename(directory, os.path.join(old, "cache"))
            os.rename(tmp, directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.directory = directory
        return directory

    @classmethod
    def load(cls, directory: str):
        """The cache saved in ``directory``; a clear error when there is none."""
        directory = os.path.abspath(directory)
        meta_path = os.path.join(directory, "meta.json")
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"no teacher cache in {directory} (looked for {meta_path})")
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"teacher cache {directory} has format {meta.get('format')}; this "
                             f"version reads format {FORMAT}")
        tables = [np.load(os.path.join(directory, f"{d}.npy")) if present else None
                  for d, present in enumerate(meta["present"])]
        return cls(tables, meta["teacher_views"], meta["domain_names"], meta=meta,
                   directory=directory)

    @classmethod
    def load_or_compute(cls, directory: Optional[str], teachers, splits, teacher_views, **kwargs):
        """The saved cache when it matches these teachers and splits, else a new one (saved).

        ``directory`` None keeps the cache in memory. A cache on disk that describes other
        teachers (a different fingerprint), splits or views is recomputed and replaced, and the
        log says which entry differed.
        """
        compute_kw = {k: kwargs.pop(k) for k in ("batch_size",) if k in kwargs}
        meta = cls.describe(teachers, splits, teacher_views, **kwargs)
        if directory and os.path.exists(os.path.join(directory, "meta.json")):
            cache = cls.load(directory)
            stale = [k for k in meta if cache.meta.get(k) != meta[k]]
            if not stale:
                logging.info("teacher cache: reusing %s", directory)
                return cache
            logging.warning("teacher cache %s was computed for different %s; recomputing",
                            directory, ", ".join(stale))
        cache = cls.compute(teachers, splits, teacher_views, meta=meta, **kwargs, **compute_kw)
        if directory:
            cache.save(directory)
        return cache
