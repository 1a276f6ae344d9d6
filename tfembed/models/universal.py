"""UniversalDistiller: one student embedding distilled from m frozen domain specialists (paper 000).

Paper 000 (Feng et al., "Unifying Specialist Image Embedding into Universal Image Embedding")
trains one specialist per domain, then trains a universal student on domain-specific batches
(every image of a batch from one domain, the domain drawn in proportion to its size, c classes ×
k=4 images inside it) with a distillation loss between the batch's specialist and the student:
SND (KL between the teachers' and the student's neighbour distributions, §3.2) or RKD (§3.1).
For a coarse domain such as ImageNet a label-based loss can replace distillation (§5.3:
triplet on ImageNet images, SND on the fine-grained domain).

Training step (DESIGN §5):

1. the batch's domain ``d`` is read from ``x["domain"]`` (one value per batch; checked);
2. only teacher ``d`` runs (``tf.switch_case``), in inference mode, outside the gradient tape;
3. the student runs in training mode inside the tape;
4. with ``global_batch=True`` teacher and student embeddings (and labels) are all-gathered over
   the replicas, so SND/RKD see the whole c×k batch as in the paper, not one replica's slice;
5. the loss of domain ``d`` (distillation, or its ``domain_losses`` entry) is scaled for the
   replica count, as Keras scales a ``keras.losses.Loss``.

Example:

>>> student = tfembed.models.build_embedder("resnet50", 128, weights="imagenet")
>>> distiller = UniversalDistiller(student, ["runs/cub/model.keras", "runs/cars/model.keras"],
...                                distill_loss=SNDLoss(sigma=0.25), domain_names=["cub", "cars"])
>>> distiller.compile(optimizer=keras.optimizers.Adam(1e-5))
>>> distiller.fit(training_batches([cub.train, cars.train], 32, 4), steps_per_epoch=500)
>>> distiller.student.save("universal.keras")   # only the student is kept
"""

from typing import Mapping, Optional, Sequence, Union

import keras
import tensorflow as tf

from tfembed.models.embedder import load_embedder
from tfembed.models.teacher_cache import TeacherCache, cache_keys
from tfembed.models.train_utils import (
    as_loss_fn,
    compile_from_config,
    deserialize_loss,
    freeze,
    gather_replicas,
    output_dim,
    scale_for_replicas,
    serialize_loss,
)


def _split_inputs(x):
    """``(teacher images, student images, domain)``: the student sees ``student_images`` when
    the batch has them (a cached teacher's evaluation view), else the same images."""
    if isinstance(x, Mapping):
        if "images" not in x:
            raise ValueError(f"multi-domain inputs need an 'images' key, got {sorted(x)}")
        return x["images"], x.get("student_images", x["images"]), x.get("domain")
    return x, x, None


@keras.saving.register_keras_serializable(package="tfembed")
class UniversalDistiller(keras.Model):
    """A student embedder trained from m frozen specialists, one per domain.

    Args:
      student: the universal embedder (a ``keras.Model`` mapping images to ``[B, D]``).
      teachers: list indexed by domain id; each a ``.keras`` path, a SavedModel directory, a
        ``keras.Model``, or ``None`` for a domain whose ``domain_losses`` entry replaces
        distillation. All teachers must output the same dimension (checked here). Or a
        :class:`TeacherCache` of their embeddings: the step then reads the batch's teacher
        embeddings by ``(example, view)`` instead of running a teacher.
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
    ``"view"`` (``training_batches(teacher_views=K)``), and ``"student_images"`` for K = 0.
    ``call`` returns the student's embeddings.

    Logs: ``loss`` (mean over all batches) and ``loss_<domain>`` (mean over that domain's
    batches in the epoch).
    """

    def __init__(self, student, teachers: Sequence[Union[str, keras.Model, None]],
                 distill_loss="snd", domain_losses: Optional[Mapping] = None,
                 domain_names: Optional[Sequence[str]] = None, global_batch: bool = True,
                 name="universal_distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        self.teacher_cache = teachers if isinstance(teachers, TeacherCache) else None
        if self.teacher_cache is not None:
            teachers = [None] * self.teacher_cache.num_domains
            domain_names = domain_names or self.teacher_cache.domain_names
        teachers = list(teachers)
        if not teachers:
            raise ValueError("UniversalDistiller needs at least one teacher (one per domain)")
        self.num_domains = len(teachers)
        self.domain_names = [str(n) for n in domain_names] if domain_names else [
            f"domain{i}" for i in range(self.num_domains)]
        if len(self.domain_names) != self.num_domains:
            raise ValueError(f"{len(self.domain_names)} domain_names for {self.num_domains} "
                             "teachers")
        self.student = load_embedder(student)
        self._teacher_sources = [t if isinstance(t, str) or t is None else None for t in teachers]
        self.teachers = [None if t is None else freeze(load_embedder(t)) for t in teachers]
        self._distill_loss_arg = distill_loss
        self._distill_fn = as_loss_fn(distill_loss)
        self._domain_loss_args = {}
        for key, loss in dict(domain_losses or {}).items():
            self._domain_loss_args[self._domain_index(key)] = loss
        self._domain_fns = {d: as_loss_fn(l) for d, l in self._domain_loss_args.items()}
        for d, teacher in enumerate(self.teachers):
            if self.teacher_cache is not None:
                teacher = self.teacher_cache.table(d)
            if teacher is None and d not in self._domain_fns:
                raise ValueError(f"domain {self.domain_names[d]!r} has neither a teacher nor a "
                                 "domain_losses entry")
        self.teacher_dim = (self.teacher_cache.dim if self.teacher_cache is not None
                            else self._check_teacher_dims())
        self.global_batch = bool(global_batch)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.domain_trackers = [keras.metrics.Mean(name=f"loss_{n}") for n in self.domain_names]
        # Student and teachers are built models, so the distiller is too (checkpoint restore
        # and saving require a built model before fit).
        self.built = True

    # ------------------------------------------------------------------------------- set-up

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

    def _check_teacher_dims(self):
        # tf.switch_case needs every branch to return the same shape, and a mismatch is almost
        # always a wrong checkpoint: say which teacher differs from the others.
        dims = {}
        for d, teacher in enumerate(self.teachers):
            if teacher is not None:
                dims[d] = output_dim(teacher)
        known = {d: v for d, v in dims.items() if v is not None}
        if not known:
            return None
        values = list(known.values())
        majority = max(set(values), key=values.count)
        for d, dim in known.items():
            if dim != majority:
                others = ", ".join(f"{self.domain_names[o]}={v}" for o, v in known.items())
                raise ValueError(
                    f"teacher {d} ({self.domain_names[d]!r}, {self._teacher_sources[d] or 'model'})"
                    f" outputs {dim}-d embeddings but the other teachers output {majority}-d "
                    f"({others}); all teachers must have the same output dimension")
        return majority

    @property
    def metrics(self):
        return [self.loss_tracker, *self.domain_trackers]

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        # Slots created inside the first trace would make tf.function trace the step twice.
        self.optimizer.build(self.student.trainable_weights)

    def compile_from_config(self, config):
        compile_from_config(self, config)

    # ------------------------------------------------------------------------------ forward

    def call(self, inputs, training=False):
        _, images, _ = _split_inputs(inputs)
        return self.student(images, training=training)

    def _batch_domain(self, domain):
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

    def teacher_embeddings(self, images, domain):
        """Embeddings of ``images`` by the teacher of ``domain`` only (others do not run)."""
        dim = self.teacher_dim or 1
        batch = tf.shape(images)[0]

        def branch(teacher):
            if teacher is None:  # label-loss domain: nothing to distill
                return lambda: tf.zeros([batch, dim], tf.float32)
            return lambda: tf.cast(teacher(images, training=False), tf.float32)

        out = tf.switch_case(domain, [branch(t) for t in self.teachers])
        return tf.stop_gradient(out)

    def _domain_loss(self, domain, teacher_emb, student_emb, labels):
        def branch(d):
            if d in self._domain_fns:
                if labels is None:
                    raise ValueError(f"domain {self.domain_names[d]!r} uses a label loss; the "
                                     "batches need labels")
                return lambda: tf.cast(self._domain_fns[d](labels, student_emb), tf.float32)
            return lambda: tf.cast(self._distill_fn(teacher_emb, student_emb), tf.float32)

        if self.num_domains == 1 or not self._domain_fns:
            # Every domain distills with the same loss: no conditional. (A switch over m
            # identical branches also costs XLA minutes per branch to compile with its
            # gradient: > 10 min for 3 domains with RKD, against 10 s without.)
            return branch(0)()
        return tf.switch_case(domain, [branch(d) for d in range(self.num_domains)])

    def _teacher_pass(self, x):
        """``(student images, teacher embeddings, domain)`` of a batch; before any tape opens."""
        images, student_images, domain = _split_inputs(x)
        domain = self._batch_domain(domain)
        if self.teacher_cache is not None:
            teacher = self.teacher_cache.lookup(domain, *cache_keys(x, "UniversalDistiller"))
        else:
            teacher = self.teacher_embeddings(images, domain)
        return student_images, teacher, domain

    # -------------------------------------------------------------------------- train / test

    def _loss_on_batch(self, teacher, student, labels, domain):
        if self.global_batch:
            gathered = gather_replicas(teacher, student, *([] if labels is None else [labels]))
            teacher, student = gathered[0], gathered[1]
            labels = gathered[2] if labels is not None else None
        return self._domain_loss(domain, teacher, student, labels)

    def _update_trackers(self, loss, domain):
        self.loss_tracker.update_state(loss)
        for d, tracker in enumerate(self.domain_trackers):
            # Weight 0 leaves a Mean unchanged: no Python branching on the (symbolic) domain.
            tracker.update_state(loss, sample_weight=tf.cast(tf.equal(domain, d), tf.float32))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        images, teacher, domain = self._teacher_pass(x)
        with tf.GradientTape() as tape:
            student = tf.cast(self.student(images, training=True), tf.float32)
            loss = self._loss_on_batch(teacher, student, y, domain)
            # Every replica computes the same global loss when gathering, or its own slice's
            # loss otherwise; either way dividing by the replica count gives the true gradient
            # after the optimizer's SUM all-reduce (see train_utils.gather_replicas).
            scaled = scale_for_replicas(loss)
            scaled = self.optimizer.scale_loss(scaled)
        weights = self.student.trainable_weights
        grads = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(grads, weights))
        return self._update_trackers(loss, domain)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        images, teacher, domain = self._teacher_pass(x)
        student = tf.cast(self.student(images, training=False), tf.float32)
        loss = self._loss_on_batch(teacher, student, y, domain)
        return self._update_trackers(loss, domain)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    # ------------------------------------------------------------------------ serialization

    def get_config(self):
        if self.teacher_cache is not None:
            if self.teacher_cache.directory is None:
                raise ValueError("an in-memory TeacherCache cannot be serialized: save() it, or "
                                 "save the student alone")
            teachers = {"teacher_cache": self.teacher_cache.directory}
        else:
            teachers = self._get_teacher_configs()
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teachers": teachers,
            "distill_loss": serialize_loss(self._distill_loss_arg),
            "domain_losses": {str(d): serialize_loss(l) for d, l in
                              self._domain_loss_args.items()},
            "domain_names": list(self.domain_names),
            "global_batch": self.global_batch,
        }

    def _get_teacher_configs(self):
        teachers = []
        for source, teacher in zip(self._teacher_sources, self.teachers):
            if source is not None or teacher is None:
                teachers.append(source)
            else:
                teachers.append(keras.saving.serialize_keras_object(teacher))
        return teachers

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teachers = config.pop("teachers")
        if isinstance(teachers, Mapping):
            teachers = TeacherCache.load(teachers["teacher_cache"])
        else:
            teachers = [t if t is None or isinstance(t, str) else
                        keras.saving.deserialize_keras_object(t) for t in teachers]
        distill = deserialize_loss(config.pop("distill_loss"))
        if distill is None:
            raise ValueError("this UniversalDistiller was built with a plain callable loss, "
                             "which cannot be deserialized; pass a loss name or Loss object")
        domain_losses = {k: deserialize_loss(v) for k, v in
                         (config.pop("domain_losses") or {}).items()}
        return cls(student, teachers, distill_loss=distill, domain_losses=domain_losses,
                   **config)
