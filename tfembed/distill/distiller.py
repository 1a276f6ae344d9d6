"""Distiller: a compact student embedding taught by one frozen teacher (papers 001 and 004).

Paper 001 (Yu et al., "Learning Metrics from Teachers: Compact Networks for Image Embedding")
trains a small student with its own metric loss plus a teacher term:

    L = L_ML + λ·L_KD                       (Eq. 7; L_KD = absolute or relative teacher)
    L = L_ML + λ·L_KD + μ·L_hint            (Eq. 9; hint on intermediate feature maps)
    L = L_ML + λ·L_KD + κ·L_AT              (Eq. 12; attention transfer)

Paper 004 (Chen et al., DarkRank) uses the same shape with a listwise L_KD (``darkrank_hard`` /
``darkrank_soft``), supervised heads next to the triplet loss (large-margin softmax and
verification, as layers owning weights) and, optionally, Hinton KD on class logits.

Each term is an object of :mod:`tfembed.distill.terms` (``distiller.terms``) and the teacher one
of :mod:`tfembed.distill.teachers` (live, cached, one per domain): the step below has no branch on
either. Every term is optional (weight 0 or not configured → not built at all). Training step:

1. the teacher gives its targets before the gradient tape opens (inference mode, on the
   teacher's view of the batch: its embedding, and its feature maps when hint/attention pairs
   are set; or the cached embedding of the batch's ``(example, view)``);
2. the student runs in training mode inside the tape, on the student's view (the same images,
   or ``x["student_images"]`` for cross-quality distillation, 001 §5.4);
3. with ``global_batch=True`` the embedding-level terms (metric loss, teacher loss, heads) see
   the all-gathered batch across replicas; feature-level terms (hint, attention, Hinton KD) are
   per-sample means over each replica's slice; the total is scaled for the replica count;
4. rows labelled ``-1`` are unlabelled (001 §5.2): they get the teacher terms only, never the
   metric loss or a head loss;
5. a head whose ``features`` is ``"fc"`` (``LargeMarginSoftmaxHead``'s default) receives the
   student's pre-normalisation FC output (layer ``embedding_dense`` of ``build_embedder``), the
   others the L2-normalised embedding (004 §4: "The large margin softmax loss is directly
   connected to the fully connected layer. All other losses ... are built upon the L2
   normalization layer"); Hinton KD's student logits come from that head, on the same input.

The argument order is ``keras.distillation.Distiller``'s (teacher first). Unlike Keras', the
teacher and student may differ in embedding size and input view, and the teacher may be a table of
precomputed embeddings; see :mod:`tfembed.distill.teachers`.

``teacher=None`` trains a model with its own losses only (metric loss and heads, no teacher
term): the distill pipeline trains DarkRank's teacher this way, with the students' heads.

Example:

>>> teacher = tfembed.models.load_embedder("runs/teacher/model.keras")       # ResNet-101
>>> student = tfembed.models.build_embedder("resnet18", 512, weights="imagenet")
>>> distiller = Distiller(teacher, student, distill_loss="relative_teacher",
...                       metric_loss=TripletSemiHardLoss(margin=0.2), distill_weight=1.0,
...                       attention_layers=[("conv4_block23_2_relu", "stage3_out")],
...                       attention_weight=1.0)
>>> distiller.compile(optimizer=keras.optimizers.Adam(1e-5))
>>> distiller.fit(training_batches([cub.train], 8, 4), steps_per_epoch=500, epochs=20)
>>> distiller.student.save("student.keras")   # only the student is kept
"""


from typing import Optional, Sequence, Tuple

import keras
import tensorflow as tf
from absl import logging

from tfembed.data.types import ImageSpec
from tfembed.distill.cache import TeacherCache
from tfembed.distill.teachers import CachedTeacher, Teacher, as_teacher, student_images
from tfembed.distill.teachers import teacher_from_config
from tfembed.distill.terms import AttentionTerm, HeadTerm, HintTerm, LabelTerm, LogitsTerm
from tfembed.distill.terms import StepOutputs, TeacherTerm, layer_pairs
from tfembed.losses.base import deserialize_loss, serialize_loss
from tfembed.models.embedder import feature_model, load_embedder
from tfembed.training.step import (
    Untracked,
    compile_from_config,
    freeze,
    gather_replicas,
    output_dim,
    scale_for_replicas,
    update_trackers,
)

#: The embedder layer whose output (before L2 normalisation) heads with ``features="fc"`` see.
FC_LAYER = "embedding_dense"


def check_teacher_first(teacher, student, one_teacher):
    """Catches the student-first calls of the old argument order (``Distiller(student,
    teacher)``), which relational losses would otherwise train the wrong way round."""
    if isinstance(student, (TeacherCache, Teacher, list, tuple)):
        raise TypeError(f"the student is a {type(student).__name__}: the trainers take the "
                        "teacher first, keras.distillation's order (Distiller(teacher, student), "
                        "UniversalDistiller(teachers, student))")
    if one_teacher and isinstance(teacher, (list, tuple)):
        raise TypeError("a Distiller has one teacher; pass the model (a list of per-domain "
                        "teachers is UniversalDistiller's)")
    teacher_model = teacher if isinstance(teacher, keras.Model) else None
    if (teacher_model is not None and isinstance(student, keras.Model)
            and teacher_model.count_params() < student.count_params()):
        logging.warning("the teacher (%s, %d weights) is smaller than the student (%s, %d): "
                        "the trainers take the teacher first (Distiller(teacher, student))",
                        teacher_model.name, teacher_model.count_params(), student.name,
                        student.count_params())


@keras.saving.register_keras_serializable(package="tfembed")
class Distiller(keras.Model):
    """A student embedder trained with a metric loss and the terms of one frozen teacher.

    Args:
      teacher: the frozen teacher: a model, a ``.keras`` file or a SavedModel directory
        (hint/attention need named layers, so a functional model or ``.keras`` file). Or a
        one-domain :class:`TeacherCache` of its embeddings, read by the batch's
        ``(example, view)`` instead of running the teacher (embedding-level terms and Hinton KD
        only: a cache holds no feature maps for hint/attention). Or a
        :class:`tfembed.distill.teachers.Teacher`. Or None: no teacher term at all (a model
        trained with its metric loss and heads, e.g. DarkRank's teacher).
      student: the student embedder (a functional ``keras.Model`` images → ``[B, D_s]``).
      distill_loss: the embedding-level teacher loss ``fn(teacher_emb, student_emb)``: a
        registered name (``"relative_teacher"``, ``"absolute_teacher"``, ``"direct_match"``,
        ``"darkrank_hard"``, ``"darkrank_soft"``, ``"rkd"``...), a Loss object, a callable, or
        ``None`` for no embedding-level term.
      metric_loss: the student's own label loss ``fn(labels, student_emb)`` (L_ML), or None.
      distill_weight: λ (Eq. 7). metric_weight: weight of L_ML (1 in the papers).
      hint_layers: ``[(teacher layer, student layer), ...]`` (names or stage aliases) for the
        hint loss; a learned 1×1 convolution maps the student's channels to the teacher's where
        they differ, and the adapted map is resized to the teacher's spatial size.
      hint_weight: μ (Eq. 9), applied to the sum over the pairs.
      attention_layers: pairs for attention transfer; the student's attention map is resized
        to the teacher's spatial size where they differ. attention_weight: κ (Eq. 12).
      heads: ``[(head layer, weight), ...]`` supervised heads owning weights, called as
        ``head(features, labels) -> loss`` on labelled rows (DarkRank: large-margin softmax
        ×1, verification ×5), ``features`` being the student's pre-normalisation FC output
        (layer ``embedding_dense``) for a head whose ``features`` attribute is ``"fc"``, else
        the student embedding. They are trained with the student (not exported).
      teacher_classifier: frozen layer/model teacher_emb → class logits, for Hinton KD.
      kd_weight, kd_temperature: weight and temperature of Hinton KD between
        ``teacher_classifier(teacher_emb)`` and the logits of the first head with a ``logits``
        method (e.g. ``LargeMarginSoftmaxHead``, on its input: the FC output); weight 0
        switches it off.
      global_batch: compute the embedding-level terms on the all-gathered batch under
        ``tf.distribute`` (the papers' batch), instead of each replica's slice.
      name: model name.

    Data: ``(inputs, labels)`` where inputs are images, ``{"images": ...}`` (the multi-domain
    format; the domain is ignored) or ``{"images": clean, "student_images": degraded}`` (the
    teacher sees ``images``, the student ``student_images``); labels ``-1`` mark unlabelled
    rows. ``call`` returns the student embedding of the student's view.

    Logs: ``loss`` (weighted total) and each term unweighted under its name: ``metric_loss``,
    ``distill_loss``, ``hint_loss``, ``attention_loss``, ``kd_loss``, ``<head name>``.
    """

    num_domains = 1

    def __init__(self, teacher, student, distill_loss="relative_teacher", metric_loss=None,
                 distill_weight=1.0, metric_weight=1.0,
                 hint_layers: Sequence[Tuple[str, str]] = (), hint_weight=0.0,
                 attention_layers: Sequence[Tuple[str, str]] = (), attention_weight=0.0,
                 heads: Optional[Sequence] = None, teacher_classifier=None,
                 kd_weight=0.0, kd_temperature=4.0, global_batch=True, name="distiller",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        check_teacher_first(teacher, student, one_teacher=True)
        self.student = load_embedder(student)
        self.global_batch = bool(global_batch)
        self._config_args = dict(
            distill_loss=distill_loss, metric_loss=metric_loss, distill_weight=float(distill_weight),
            metric_weight=float(metric_weight), hint_layers=layer_pairs(hint_layers, "hint_layers"),
            hint_weight=float(hint_weight),
            attention_layers=layer_pairs(attention_layers, "attention_layers"),
            attention_weight=float(attention_weight), kd_weight=float(kd_weight),
            kd_temperature=float(kd_temperature))
        # The weights and layer pairs, readable as attributes (e.g. distiller.hint_weight).
        for key in ("distill_weight", "metric_weight", "hint_layers", "hint_weight",
                    "attention_layers", "attention_weight", "kd_weight", "kd_temperature"):
            setattr(self, key, self._config_args[key])
        self.heads = [head for head, _ in heads or []]
        self.head_weights = [float(w) for _, w in heads or []]
        self.teacher_classifier = (None if teacher_classifier is None
                                   else freeze(teacher_classifier))
        terms = self._make_terms(**self._config_args)
        self._set_up(as_teacher(teacher), terms)

    def _make_terms(self, distill_loss, metric_loss, distill_weight, metric_weight, hint_layers,
                    hint_weight, attention_layers, attention_weight, kd_weight, kd_temperature):
        """The term objects of the constructor's arguments (a weight of 0 builds no term)."""
        terms = []
        if metric_loss is not None and metric_weight:
            terms.append(LabelTerm(metric_loss, metric_weight))
        if distill_loss is not None and distill_weight:
            terms.append(TeacherTerm(distill_loss, distill_weight))
        terms += [HeadTerm(head, w) for head, w in zip(self.heads, self.head_weights)]
        if hint_layers and hint_weight:
            terms.append(HintTerm(hint_layers, hint_weight))
        if attention_layers and attention_weight:
            terms.append(AttentionTerm(attention_layers, attention_weight))
        if kd_weight:
            if self.teacher_classifier is None:
                raise ValueError("kd_weight > 0 needs a teacher_classifier (teacher embedding → "
                                 "class logits)")
            with_logits = [h for h in self.heads if hasattr(h, "logits")]
            if not with_logits:
                raise ValueError("kd_weight > 0 needs a student head with a `logits` method "
                                 "(e.g. LargeMarginSoftmaxHead) among `heads`")
            terms.append(LogitsTerm(self.teacher_classifier, with_logits[0], kd_weight,
                                    kd_temperature))
        return terms

    def _set_up(self, teacher, terms):
        """Builds the teacher and student models the terms read, and the terms themselves."""
        if not terms:
            raise ValueError("Distiller has no loss term: set a metric_loss, a distill_loss, "
                             "hint/attention layers with a weight, heads or kd_weight")
        if teacher is None:
            wanted = [t.name for t in terms if t.needs_teacher or t.teacher_layers]
            if wanted:
                raise ValueError(f"teacher=None trains without a teacher, but {', '.join(wanted)} "
                                 "needs one")
        elif teacher.num_domains != self.num_domains:
            what = "TeacherCache" if isinstance(teacher, CachedTeacher) else "teacher"
            has = ("one teacher" if self.num_domains == 1
                   else f"one teacher per domain for {self.num_domains} domains")
            raise ValueError(f"a {type(self).__name__} has {has}; this {what} holds "
                             f"{teacher.num_domains} domains")
        self._term_list = Untracked(terms=tuple(terms))
        # Tracked models: their weights are part of the distiller's saves and checkpoints (a
        # teacher given as a model object is restored from them).
        self.teacher = getattr(teacher, "model", None)
        # A student trained with its own losses only (the papers' "student alone" baseline)
        # never runs the teacher.
        self._needs_teacher = any(t.needs_teacher or t.teacher_layers for t in terms)
        teacher_layers = [n for t in terms for n in t.teacher_layers]
        self.teacher_source = teacher
        self._teacher = (teacher.with_feature_maps(teacher_layers) if self._needs_teacher
                         else None)
        # The student model returns [feature maps..., FC output (if a term needs it), embedding].
        self._student_layers = list(dict.fromkeys(n for t in terms for n in t.student_layers))
        self._uses_fc = any(t.uses_fc for t in terms)
        self._models = Untracked(student=self._student_model())
        shapes = {n: tuple(o.shape) for n, o in zip(self._student_layers + ["fc"] * self._uses_fc,
                                                    self._models.student.outputs[:-1])}
        teacher_shapes = getattr(self._teacher, "feature_shapes", {})
        for term in terms:
            term.build(teacher.dim if teacher is not None else None, output_dim(self.student),
                       teacher_shapes, shapes)
        # Layers owned by terms, tracked here so that saves and checkpoints hold them.
        self.hint_adapters = [a for t in terms for a in getattr(t, "adapters", [])]
        self._trackers = self._make_trackers(terms)
        self.built = True

    def _make_trackers(self, terms):
        """``{"loss": Mean, <term name>: Mean}``: the total and each term, unweighted."""
        trackers = {"loss": keras.metrics.Mean(name="loss")}
        for term in terms:
            trackers[term.name] = keras.metrics.Mean(name=term.name)
        return trackers

    @property
    def image_spec(self):
        """The :class:`~tfembed.data.ImageSpec` of the student (what ``call`` takes)."""
        return ImageSpec.of(self.student)

    @property
    def terms(self):
        """The loss-term objects of each step, in log order (:mod:`tfembed.distill.terms`)."""
        return self._term_list.terms

    @property
    def teacher_cache(self):
        """The :class:`TeacherCache` a cached teacher reads (else None)."""
        return getattr(self.teacher_source, "cache", None)

    def _student_model(self):
        layers = list(self._student_layers)
        if self._uses_fc:
            if FC_LAYER not in {layer.name for layer in self.student.layers}:
                fc_heads = [t.name for t in self.terms if t.uses_fc]
                raise ValueError(
                    f"heads {fc_heads} take the student's pre-normalisation FC output "
                    f"(features='fc'), layer {FC_LAYER!r} of build_embedder, which model "
                    f"{self.student.name!r} does not have; build the student with build_embedder "
                    "or give the heads features='embedding'")
            layers.append(FC_LAYER)
        return feature_model(self.student, layers) if layers else self.student

    @property
    def metrics(self):
        return list(self._trackers.values())

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        # Create the optimizer slots of exactly the weights train_step updates now: slots
        # created inside the first trace make tf.function trace the step a second time.
        self.optimizer.build(self._student_variables())

    def compile_from_config(self, config):
        compile_from_config(self, config)

    def _student_variables(self):
        # The student's, then the terms' own weights, hint adapters before heads (the order of
        # the optimizer's slots in checkpoints written before terms were objects).
        terms = sorted(self.terms, key=lambda t: isinstance(t, HeadTerm))
        seen, out = set(), []
        for v in [*self.student.trainable_weights,
                  *[w for t in terms for w in t.trainable_weights]]:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    # ------------------------------------------------------------------------------ forward

    def call(self, inputs, training=False):
        return self.student(student_images(inputs), training=training)

    def student_outputs(self, images, training=False):
        """``(feature maps by layer name, FC output or None, embedding)`` of the student; the FC
        output (layer ``embedding_dense``, before L2 normalisation) only when a term needs it."""
        outputs = self._models.student(images, training=training)
        if not isinstance(outputs, (list, tuple)):
            return {}, None, tf.cast(outputs, tf.float32)
        outputs = list(outputs)
        fc = tf.cast(outputs.pop(-2), tf.float32) if self._uses_fc else None
        return dict(zip(self._student_layers, outputs[:-1])), fc, tf.cast(outputs[-1], tf.float32)

    def batch_domain(self, inputs):
        """The batch's domain id, for a teacher with one model per domain (None here: one
        teacher)."""
        return None

    def teacher_targets(self, inputs, domain=None):
        """``(teacher feature maps by layer name, teacher embedding or None)``; inference mode,
        no gradient. Call it before the gradient tape opens."""
        if not self._needs_teacher:
            return {}, None
        return self._teacher(inputs, domain)

    # --------------------------------------------------------------------------------- loss

    def compute_terms(self, teacher_maps, teacher, student_maps, student, labels,
                      student_fc=None, domain=None):
        """``{term name: unweighted value}`` of a batch (all-gathered when ``global_batch``)."""
        if self._uses_fc and student_fc is None:
            raise ValueError("heads with features='fc' need the student's FC output "
                             "(student_fc; see student_outputs)")
        local = (teacher, student, student_fc)   # each replica's slice (feature/logit terms)
        if self.global_batch:
            present = [t for t in (teacher, student, labels, student_fc) if t is not None]
            gathered = iter(gather_replicas(*present) if len(present) > 1
                            else [gather_replicas(*present)])
            teacher, student, labels, student_fc = (
                None if t is None else next(gathered)
                for t in (teacher, student, labels, student_fc))
        if labels is not None:
            labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        out = StepOutputs(teacher, student, labels, student_fc, teacher_maps, student_maps, domain,
                          local=local)
        return {term.name: term(out) for term in self.terms}

    def weighted_total(self, terms):
        weights = {t.name: t.weight for t in self.terms}
        return tf.add_n([weights[k] * v for k, v in terms.items()])

    def _update_trackers(self, loss, terms, domain):
        return update_trackers(self._trackers, loss, terms)

    # -------------------------------------------------------------------------- train / test

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        domain = self.batch_domain(x)
        teacher_maps, teacher = self.teacher_targets(x, domain)   # before the tape: no gradient
        weights = self._student_variables()
        with tf.GradientTape() as tape:
            student_maps, fc, student = self.student_outputs(student_images(x), training=True)
            terms = self.compute_terms(teacher_maps, teacher, student_maps, student, y, fc,
                                       domain)
            loss = self.weighted_total(terms)
            # Embedding-level terms are the same global loss on every replica (after the
            # gather) and feature-level terms are per-replica means: dividing by the replica
            # count gives the true gradient after the optimizer's SUM all-reduce either way.
            scaled = self.optimizer.scale_loss(scale_for_replicas(loss))
        grads = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(grads, weights))
        return self._update_trackers(loss, terms, domain)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        domain = self.batch_domain(x)
        teacher_maps, teacher = self.teacher_targets(x, domain)
        student_maps, fc, student = self.student_outputs(student_images(x), training=False)
        terms = self.compute_terms(teacher_maps, teacher, student_maps, student, y, fc, domain)
        return self._update_trackers(self.weighted_total(terms), terms, domain)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    # ------------------------------------------------------------------------ serialization

    def _models_config(self, teacher_key):
        """The config entries every distiller has: name, student, teacher(s), global_batch."""
        return {"name": self.name,
                "student": keras.saving.serialize_keras_object(self.student),
                teacher_key: (None if self.teacher_source is None
                              else self.teacher_source.get_config()),
                "global_batch": self.global_batch}

    @staticmethod
    def _pop_models(config, teacher_key):
        """``(rest of config, student, teacher)`` of what :meth:`_models_config` wrote."""
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        return config, student, teacher_from_config(config.pop(teacher_key))

    def get_config(self):
        args = dict(self._config_args)
        return {
            **self._models_config("teacher"),
            **args,
            "distill_loss": serialize_loss(args["distill_loss"]),
            "metric_loss": serialize_loss(args["metric_loss"]),
            "hint_layers": [list(p) for p in args["hint_layers"]],
            "attention_layers": [list(p) for p in args["attention_layers"]],
            "heads": [[keras.saving.serialize_keras_object(h), w]
                      for h, w in zip(self.heads, self.head_weights)],
            "teacher_classifier": (None if self.teacher_classifier is None else
                                   keras.saving.serialize_keras_object(self.teacher_classifier)),
        }

    @classmethod
    def from_config(cls, config):
        import tfembed.losses  # noqa: F401,PLC0415  (registers heads and loss classes)
        config, student, teacher = cls._pop_models(config, "teacher")
        for key in ("distill_loss", "metric_loss"):
            config[key] = deserialize_loss(config[key])
        config["heads"] = [(keras.saving.deserialize_keras_object(h), w)
                           for h, w in config.pop("heads") or []]
        if config.get("teacher_classifier") is not None:
            config["teacher_classifier"] = keras.saving.deserialize_keras_object(
                config["teacher_classifier"])
        return cls(teacher, student, **config)
