"""UniversalDistiller: one student embedding distilled from m frozen domain specialists (paper 000).

Paper 000 (Feng et al., "Unifying Specialist Image Embedding into Universal Image Embedding")
trains one specialist per domain, then trains a universal student on domain-specific batches
(every image of a batch from one domain, the domain drawn in proportion to its size, c classes ×
k=4 images inside it) with a distillation loss between the batch's specialist and the student:
SND (KL between the teachers' and the student's neighbour distributions, §3.2) or RKD (§3.1).
For a coarse domain such as ImageNet a label-based loss can replace distillation (§5.3:
triplet on ImageNet images, SND on the fine-grained domain).

It is the :class:`~tfembed.distill.Distiller` with a per-domain teacher
(:class:`~tfembed.distill.teachers.DomainTeachers`, or a multi-domain cache) and one
:class:`~tfembed.distill.terms.DomainTerm`; the step is the Distiller's (DESIGN §5):

1. the batch's domain ``d`` is read from ``x["domain"]`` (one value per batch; checked);
2. only teacher ``d`` runs (``tf.switch_case``), in inference mode, outside the gradient tape
   (or its cached embeddings are read);
3. the student runs in training mode inside the tape;
4. with ``global_batch=True`` teacher and student embeddings (and labels) are all-gathered over
   the replicas, so SND/RKD see the whole c×k batch as in the paper, not one replica's slice;
5. the loss of domain ``d`` (distillation, or its ``domain_losses`` entry) is scaled for the
   replica count, as Keras scales a ``keras.losses.Loss``.

Example:

>>> student = tfembed.models.build_embedder("resnet50", 128, weights="imagenet")
>>> distiller = UniversalDistiller(["runs/cub/model.keras", "runs/cars/model.keras"], student,
...                                distill_loss=SNDLoss(sigma=0.25), domain_names=["cub", "cars"])
>>> distiller.compile(optimizer=keras.optimizers.Adam(1e-5))
>>> distiller.fit(training_batches([cub.train, cars.train], 32, 4), steps_per_epoch=500)
>>> distiller.student.save("universal.keras")   # only the student is kept
"""


from typing import Mapping, Optional, Sequence, Union

import keras
import tensorflow as tf

from tfembed.distill.cache import TeacherCache
from tfembed.distill.distiller import Distiller, check_teacher_first
from tfembed.distill.teachers import as_teacher
from tfembed.distill.terms import DomainTerm
from tfembed.losses.base import deserialize_loss, serialize_loss
from tfembed.models.embedder import load_embedder


@keras.saving.register_keras_serializable(package="tfembed")
class UniversalDistiller(Distiller):
    """A student embedder trained from m frozen specialists, one per domain.

    Args:
      teachers: list indexed by domain id; each a ``.keras`` path, a SavedModel directory, a
        ``keras.Model``, or ``None`` for a domain whose ``domain_losses`` entry replaces
        distillation. Teachers may differ in embedding dimension (zero-padded to the largest:
        distances, which SND and RKD compare, are unchanged) and in input size (DESIGN §7:
        feed batches from a stream with ``view=tfembed.data.TeacherSpecViews(specs)``, which
        cuts each domain's images at its teacher's size and the student's apart). Or a
        :class:`TeacherCache` of their embeddings: the step then reads the batch's teacher
        embeddings by ``(example, view)`` instead of running a teacher.
      student: the universal embedder (a ``keras.Model`` mapping images to ``[B, D]``).
      distill_loss: ``fn(teacher_emb, student_emb) -> scalar``: a registered loss name
        (``"snd"``, ``"rkd"``...), a tfembed Loss object (``SNDLoss(sigma=...)``) or a callable.
      domain_losses: optional ``{domain id or name: loss}``; a label loss
        ``fn(labels, student_emb)`` used for that domain instead of distillation (000 §5.3).
      domain_names: names used in the per-domain loss logs (default ``domain0``...).
      global_batch: under ``tf.distribute``, compute the loss on the all-gathered global batch
        (default, the paper's loss) instead of each replica's slice.
      name: model name.

    Inputs: ``{"images": [B, H, W, 3], "domain": [B] int}`` with one domain per batch
    (domain-specific or domain-balanced sampling; ``naive`` batches cannot be distilled since a
    specialist only knows its own domain). With a cache the inputs also carry ``"example"`` and
    ``"view"`` (a stream with ``view=TeacherCacheViews(K)``), and ``"student_images"`` for K = 0.
    ``call`` returns the student's embeddings.

    Logs: ``loss`` (mean over all batches) and ``loss_<domain>`` (mean over that domain's
    batches in the epoch).
    """

    def __init__(self, teachers: Union[Sequence[Union[str, keras.Model, None]], TeacherCache],
                 student, distill_loss="snd", domain_losses: Optional[Mapping] = None,
                 domain_names: Optional[Sequence[str]] = None, global_batch: bool = True,
                 name="universal_distiller", **kwargs):
        keras.Model.__init__(self, name=name, **kwargs)
        check_teacher_first(teachers, student, one_teacher=False)
        if isinstance(teachers, TeacherCache):
            domain_names = domain_names or teachers.domain_names
        else:
            teachers = list(teachers)
            if not teachers:
                raise ValueError("UniversalDistiller needs at least one teacher (one per domain)")
        self.num_domains = (teachers.num_domains if isinstance(teachers, TeacherCache)
                            else len(teachers))
        self.domain_names = [str(n) for n in domain_names] if domain_names else [
            f"domain{i}" for i in range(self.num_domains)]
        if len(self.domain_names) != self.num_domains:
            raise ValueError(f"{len(self.domain_names)} domain_names for {self.num_domains} "
                             "teachers")
        self.student = load_embedder(student)
        self.global_batch = bool(global_batch)
        teacher = as_teacher(teachers, self.domain_names)
        self._distill_loss_arg = distill_loss
        self._domain_loss_args = {self._domain_index(key): loss
                                  for key, loss in dict(domain_losses or {}).items()}
        for d in range(self.num_domains):
            if not teacher.has_domain(d) and d not in self._domain_loss_args:
                raise ValueError(f"domain {self.domain_names[d]!r} has neither a teacher nor a "
                                 "domain_losses entry")
        self.heads, self.head_weights, self.teacher_classifier = [], [], None
        self._set_up(teacher, [DomainTerm(distill_loss, self._domain_loss_args,
                                          self.domain_names)])
        # Tracked: a teacher given as a model object is restored from the distiller's saves.
        self.teachers = getattr(teacher, "models", [None] * self.num_domains)
        self.teacher_dim = teacher.dim

    def _domain_index(self, key):
        if isinstance(key, str) and not key.isdigit():
            if key not in self.domain_names:
                raise ValueError(f"domain_losses names domain {key!r}; domains are "
                                 f"{self.domain_names}")
            return self.domain_names.index(key)
        index = int(key)
        if not 0 <= index < self.num_domains:
            raise ValueError(f"domain_losses key {key!r} is not a domain id in "
                             f"[0, {self.num_domains})")
        return index

    def _make_trackers(self, terms):
        # The loss per domain, not per term (there is one term).
        self.domain_trackers = [keras.metrics.Mean(name=f"loss_{n}") for n in self.domain_names]
        # The last batch's loss, exactly: differencing a running Mean's float32 total rounds it,
        # and dynamic domain sampling must read the same value before and after a resume.
        self.batch_loss = _LastValue(name="batch_loss")
        return {"loss": keras.metrics.Mean(name="loss")}

    @property
    def metrics(self):
        return [self._trackers["loss"], *self.domain_trackers]

    def batch_domain(self, inputs):
        domain = inputs.get("domain") if isinstance(inputs, Mapping) else None
        if domain is None:
            if self.num_domains != 1:
                raise ValueError("UniversalDistiller with several teachers needs multi-domain "
                                 "batches ({'images', 'domain'}, labels)")
            return tf.constant(0, tf.int32)
        domain = tf.cast(tf.reshape(domain, [-1]), tf.int32)
        first = domain[0]
        # One specialist per batch (DESIGN §4): a mixed batch would silently distill the wrong
        # teacher's geometry into the other domains' images.
        check = tf.debugging.assert_equal(
            domain, tf.fill(tf.shape(domain), first),
            message="UniversalDistiller: every image of a batch must come from one domain "
                    "(domain-specific or domain-balanced sampling, not 'naive')")
        with tf.control_dependencies([check]):
            return tf.identity(first)

    def teacher_embeddings(self, inputs, domain):
        """Embeddings of a batch by the teacher of ``domain`` only (the others do not run)."""
        return self.teacher_targets(inputs, domain)[1]

    def _update_trackers(self, loss, terms, domain):
        self._trackers["loss"].update_state(loss)
        self.batch_loss.update_state(loss)
        for d, tracker in enumerate(self.domain_trackers):
            # Weight 0 leaves a Mean unchanged: no Python branching on the (symbolic) domain.
            tracker.update_state(loss, sample_weight=tf.cast(tf.equal(domain, d), tf.float32))
        return {m.name: m.result() for m in self.metrics}

    # ------------------------------------------------------------------------ serialization

    def get_config(self):
        return {
            **self._models_config("teachers"),
            "distill_loss": serialize_loss(self._distill_loss_arg),
            "domain_losses": {str(d): serialize_loss(l) for d, l in
                              self._domain_loss_args.items()},
            "domain_names": list(self.domain_names),
        }

    @classmethod
    def from_config(cls, config):
        config, student, teachers = cls._pop_models(config, "teachers")
        distill = deserialize_loss(config.pop("distill_loss"))
        if distill is None:
            raise ValueError("this UniversalDistiller was built with a plain callable loss, "
                             "which cannot be deserialized; pass a loss name or Loss object")
        domain_losses = {k: deserialize_loss(v) for k, v in
                         (config.pop("domain_losses") or {}).items()}
        return cls(teachers, student, distill_loss=distill, domain_losses=domain_losses,
                   **config)


class _LastValue(keras.metrics.Metric):
    """The value of the last batch (the mean over replicas); kept out of ``metrics`` (and so of
    the progress bar and Keras' per-epoch reset)."""

    def __init__(self, name="last", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(shape=(), initializer="zeros", aggregation="mean",
                                       name="value")

    def update_state(self, value, sample_weight=None):
        self.value.assign(tf.cast(value, self.dtype))

    def result(self):
        return tf.identity(self.value)
