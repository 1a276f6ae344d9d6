"""Teachers: where a distillation step gets its frozen targets from.

A trainer asks its teacher for the targets of a batch, once, before the gradient tape opens, and
never asks how they are produced. Three kinds exist:

- :class:`LiveTeacher` runs a frozen model in inference mode on the teacher's view of the batch
  (``inputs["images"]``), returning its embedding and, when asked, named feature maps (hint and
  attention transfer);
- :class:`CachedTeacher` reads the embeddings a :class:`~tfembed.distill.cache.TeacherCache`
  computed once, by the batch's ``(example, view)`` keys (no feature maps);
- :class:`DomainTeachers` holds one live teacher per domain and runs only the batch's domain's
  (``tf.switch_case``: paper 000's specialists; DESIGN §5, one teacher per domain batch).

Each returns ``(maps, embedding)``: ``maps`` a dict layer name → ``[B, H, W, C]`` tensor, the
embedding ``[B, D]`` float32, both behind ``stop_gradient``. :func:`as_teacher` turns what a user
passes (a model, a ``.keras`` path, a SavedModel directory, a cache, a list of per-domain models)
into one of these, so the trainers have no branch on what kind of teacher they hold.

Compared with ``keras.distillation``: Keras' ``Distiller`` runs its teacher on the student's
inputs and compares same-structured outputs. An embedding teacher often differs from its student
in dimension (relational losses compare distances, not coordinates), sees another view of the
image (cross-quality distillation), is replaced by a table of precomputed embeddings, or is one of
several (one per domain): hence a teacher object rather than a teacher model.
"""

from typing import Mapping, Optional, Sequence

import keras
import tensorflow as tf
from absl import logging

from tfembed.distill.cache import TeacherCache
from tfembed.models.embedder import feature_model, load_embedder
from tfembed.training.step import freeze, output_dim


def teacher_images(inputs):
    """The teacher's view of a batch: ``inputs["images"]`` (or the plain images tensor)."""
    if isinstance(inputs, Mapping):
        if "images" not in inputs:
            raise ValueError(f"batch inputs need an 'images' key, got {sorted(inputs)}")
        return inputs["images"]
    return inputs


def student_images(inputs):
    """The student's view: ``inputs["student_images"]`` when the batch has one (a degraded view
    in cross-quality distillation, or the augmented view next to a cached teacher's evaluation
    view), else the teacher's images."""
    if isinstance(inputs, Mapping) and "student_images" in inputs:
        return inputs["student_images"]
    return teacher_images(inputs)


def cache_keys(x, who):
    """``(example, view)`` of a batch for a :class:`TeacherCache` lookup, or a clear error."""
    if not isinstance(x, Mapping) or "example" not in x or "view" not in x:
        got = sorted(x) if isinstance(x, Mapping) else "plain images"
        raise ValueError(f"{who} with a TeacherCache needs batches with 'example' and 'view' "
                         f"(a stream with view=TeacherCacheViews(K)), got {got}")
    return x["example"], x["view"]


class Teacher:
    """The teacher protocol: frozen targets for a batch.

    Attributes:
      dim: the embedding dimension (None if unknown).
      num_domains: how many domains it serves (1 for a single teacher).
    """

    dim: Optional[int] = None
    num_domains: int = 1

    def __call__(self, inputs, domain=None):
        """``(maps, embedding)`` of a batch; ``domain`` is the batch's scalar domain id."""
        raise NotImplementedError

    def with_feature_maps(self, layers: Sequence[str]) -> "Teacher":
        """This teacher, also returning the feature maps of ``layers`` (names or stage aliases)."""
        if layers:
            raise ValueError(f"hint and attention transfer need the teacher's feature maps "
                             f"{list(layers)}, which a {type(self).__name__} does not hold; use "
                             "a live teacher")
        return self

    def has_domain(self, domain: int) -> bool:
        """Whether domain ``domain`` has a teacher (a label-loss domain of paper 000 has none)."""
        return True

    def get_config(self):
        """The JSON-able form a trainer's ``get_config`` records (see :func:`teacher_from_config`)."""
        raise NotImplementedError


class LiveTeacher(Teacher):
    """A frozen model run in inference mode on every batch.

    Args:
      model: a ``keras.Model``, a ``.keras`` file or a SavedModel directory (feature maps need
        named layers: a functional model or a ``.keras`` file).
      feature_layers: layers whose outputs are returned next to the embedding.
    """

    def __init__(self, model, feature_layers: Sequence[str] = ()):
        self.source = model if isinstance(model, str) else None
        self.model = freeze(load_embedder(model))
        self.dim = output_dim(self.model)
        self.feature_layers = list(dict.fromkeys(feature_layers))
        # feature_model names the available layers when one is missing.
        self._forward = (freeze(feature_model(self.model, self.feature_layers))
                         if self.feature_layers else self.model)

    def with_feature_maps(self, layers):
        if not layers:
            return self
        # The same model object (not a second load of the same file): one copy of the weights.
        twin = LiveTeacher(self.model, layers)
        twin.source = self.source
        return twin

    @property
    def feature_shapes(self):
        """``{layer: static output shape}`` of the returned feature maps."""
        if not self.feature_layers:
            return {}
        return {name: tuple(o.shape) for name, o in zip(self.feature_layers,
                                                        self._forward.outputs[:-1])}

    def __call__(self, inputs, domain=None):
        outputs = self._forward(teacher_images(inputs), training=False)
        if not isinstance(outputs, (list, tuple)):
            return {}, tf.stop_gradient(tf.cast(outputs, tf.float32))
        maps = {name: tf.stop_gradient(m) for name, m in zip(self.feature_layers, outputs[:-1])}
        return maps, tf.stop_gradient(tf.cast(outputs[-1], tf.float32))

    def get_config(self):
        return self.source or keras.saving.serialize_keras_object(self.model)


class CachedTeacher(Teacher):
    """Embeddings read from a :class:`TeacherCache` by the batch's ``(example, view)``.

    The batches must carry ``"example"`` and ``"view"`` (a stream with ``view=TeacherCacheViews(K)``).
    """

    def __init__(self, cache: TeacherCache):
        self.cache = cache
        self.dim = cache.dim
        self.num_domains = cache.num_domains

    def has_domain(self, domain):
        return self.cache.table(domain) is not None

    def __call__(self, inputs, domain=None):
        example, view = cache_keys(inputs, "a trainer")
        domain = tf.constant(0, tf.int32) if domain is None else domain
        return {}, tf.stop_gradient(self.cache.lookup(domain, example, view))

    def get_config(self):
        if self.cache.directory is None:
            raise ValueError("an in-memory TeacherCache cannot be serialized: save() it, or save "
                             "the student alone")
        return {"teacher_cache": self.cache.directory}


class DomainTeachers(Teacher):
    """One live teacher per domain; only the batch's domain's teacher runs.

    Args:
      teachers: indexed by domain id, each what :class:`LiveTeacher` takes, or None for a
        domain without a teacher (its embeddings are zeros; a label loss replaces
        distillation there).
      domain_names: names used in error messages.

    Specialists from different teams (DESIGN §7) may differ in embedding dimension and input
    size. Dimensions: every teacher's embedding is zero-padded to the largest (``dim``); a
    zero-padded vector keeps every distance, and distances are all SND, RKD and the relative
    teacher compare. Input sizes: each teacher gets ``inputs["images"]`` as the batch carries
    them, so a stream for teachers of other sizes than the student's cuts each domain's images
    at its teacher's size (``tfembed.data.TeacherSpecViews``) and the student's apart
    (``"student_images"``); ``specs`` lists the teachers' :class:`ImageSpec`.
    """

    def __init__(self, teachers: Sequence, domain_names: Optional[Sequence[str]] = None):
        teachers = list(teachers)
        if not teachers:
            raise ValueError("DomainTeachers needs at least one teacher (one per domain)")
        self.num_domains = len(teachers)
        self.domain_names = (list(domain_names) if domain_names
                             else [f"domain{d}" for d in range(self.num_domains)])
        self.teachers = [None if t is None else LiveTeacher(t) for t in teachers]
        dims = [t.dim for t in self.teachers if t is not None and t.dim]
        self.dim = max(dims) if dims else None
        if len(set(dims)) > 1:
            logging.info("domain teachers of %s-d embeddings: zero-padded to %d-d (distances "
                         "unchanged)", "/".join(str(t.dim if t else "-") for t in self.teachers),
                         self.dim)

    @property
    def specs(self):
        """Each domain's teacher's :class:`ImageSpec` (None: no teacher, or none readable)."""
        from tfembed.data.types import ImageSpec  # noqa: PLC0415

        def spec(t):
            try:
                return None if t is None else ImageSpec.of(t.model)
            except ValueError:
                return None
        return [spec(t) for t in self.teachers]

    def has_domain(self, domain):
        return self.teachers[domain] is not None

    @property
    def models(self):
        return [None if t is None else t.model for t in self.teachers]

    def __call__(self, inputs, domain=None):
        images = teacher_images(inputs)
        if domain is None:
            if self.num_domains != 1:
                raise ValueError("several domain teachers need multi-domain batches "
                                 "({'images', 'domain'}, labels)")
            domain = tf.constant(0, tf.int32)
        dim = self.dim or 1
        batch = tf.shape(images)[0]

        def branch(teacher):
            if teacher is None:  # label-loss domain: nothing to distill
                return lambda: tf.zeros([batch, dim], tf.float32)

            def run():
                emb = tf.cast(teacher.model(images, training=False), tf.float32)
                if teacher.dim and teacher.dim < dim:   # zero-pad: distances unchanged
                    emb = tf.pad(emb, [[0, 0], [0, dim - teacher.dim]])
                return emb
            return run

        return {}, tf.stop_gradient(tf.switch_case(domain, [branch(t) for t in self.teachers]))

    def get_config(self):
        return [None if t is None else t.get_config() for t in self.teachers]


def as_teacher(teacher, domain_names=None) -> Optional[Teacher]:
    """The :class:`Teacher` behind what a trainer was given.

    A :class:`Teacher` is returned as is; a :class:`TeacherCache` becomes a
    :class:`CachedTeacher`; a list or tuple (one entry per domain) :class:`DomainTeachers`; a
    model, ``.keras`` path or SavedModel directory a :class:`LiveTeacher`; None stays None (no
    teacher term).
    """
    if teacher is None or isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, TeacherCache):
        return CachedTeacher(teacher)
    if isinstance(teacher, (list, tuple)):
        return DomainTeachers(teacher, domain_names)
    return LiveTeacher(teacher)


def teacher_from_config(config):
    """What :meth:`Teacher.get_config` recorded, as :func:`as_teacher` accepts it."""
    if isinstance(config, Mapping) and "teacher_cache" in config:
        return TeacherCache.load(config["teacher_cache"])
    if isinstance(config, list):
        return [teacher_from_config(c) for c in config]
    if config is None or isinstance(config, str):
        return config
    return keras.saving.deserialize_keras_object(config)
