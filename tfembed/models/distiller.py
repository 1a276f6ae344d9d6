"""Distiller: a compact student embedding taught by one frozen teacher (papers 001 and 004).

Paper 001 (Yu et al., "Learning Metrics from Teachers: Compact Networks for Image Embedding")
trains a small student with its own metric loss plus a teacher term:

    L = L_ML + λ·L_KD                       (Eq. 7; L_KD = absolute or relative teacher)
    L = L_ML + λ·L_KD + μ·L_hint            (Eq. 9; hint on intermediate feature maps)
    L = L_ML + λ·L_KD + κ·L_AT              (Eq. 12; attention transfer)

Paper 004 (Chen et al., DarkRank) uses the same shape with a listwise L_KD (``darkrank_hard`` /
``darkrank_soft``), supervised heads next to the triplet loss (large-margin softmax and
verification, as layers owning weights) and, optionally, Hinton KD on class logits.

Every term is optional (weight 0 or not configured → not computed at all). Training step:

1. the teacher runs in inference mode, before the gradient tape opens, on the teacher's view
   of the batch (its embedding, and its feature maps when hint/attention pairs are set);
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

``teacher=None`` trains a model with its own losses only (metric loss and heads, no teacher
term): the distill pipeline trains DarkRank's teacher this way, with the students' heads.

Example:

>>> teacher = tfembed.models.load_embedder("runs/teacher/model.keras")       # ResNet-101
>>> student = tfembed.models.build_embedder("resnet18", 512, weights="imagenet")
>>> distiller = Distiller(student, teacher, distill_loss="relative_teacher",
...                       metric_loss=TripletSemiHardLoss(margin=0.2), distill_weight=1.0,
...                       attention_layers=[("conv4_block23_2_relu", "stage3_out")],
...                       attention_weight=1.0)
>>> distiller.compile(optimizer=keras.optimizers.Adam(1e-5))
>>> distiller.fit(training_batches([cub.train], 8, 4), steps_per_epoch=500, epochs=20)
>>> distiller.student.save("student.keras")   # only the student is kept
"""

from typing import Mapping, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfembed.losses.features import attention_transfer_loss, hint_loss
from tfembed.losses.teacher import hinton_kd_loss
from tfembed.models.embedder import feature_model, load_embedder
from tfembed.models.teacher_cache import TeacherCache, cache_keys
from tfembed.models.train_utils import (
    Untracked,
    as_loss_fn,
    compile_from_config,
    deserialize_loss,
    freeze,
    gather_replicas,
    output_dim,
    scale_for_replicas,
    serialize_loss,
    update_trackers,
)

#: The embedder layer whose output (before L2 normalisation) heads with ``features="fc"`` see.
FC_LAYER = "embedding_dense"


def _pairs(layers, what):
    pairs = []
    for pair in layers or ():
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"{what} must be a list of (teacher layer, student layer) pairs, "
                             f"got {pair!r}")
        pairs.append((str(pair[0]), str(pair[1])))
    return pairs


def _channels_last_shape(tensor, what):
    shape = tuple(tensor.shape)
    if len(shape) != 4 or None in shape[1:]:
        raise ValueError(f"{what} must be a 4-D feature map with static H, W, C, got {shape}")
    return shape


def _uses_fc(head):
    """Whether ``head`` takes the pre-normalisation FC output (its ``features`` is ``"fc"``)."""
    features = getattr(head, "features", "embedding")
    if features not in ("embedding", "fc"):
        raise ValueError(f"head {getattr(head, 'name', head)!r}: features must be 'embedding' or "
                         f"'fc', got {features!r}")
    return features == "fc"


def split_views(inputs):
    """``(teacher_images, student_images)`` of a batch's inputs.

    Inputs are ``images``, ``{"images": ...}`` (multi-domain format; the domain is ignored) or
    ``{"images": clean, "student_images": degraded}`` (cross-quality: the teacher sees the clean
    view, the student the degraded one).
    """
    if isinstance(inputs, Mapping):
        if "images" not in inputs:
            raise ValueError(f"Distiller inputs need an 'images' key, got {sorted(inputs)}")
        return inputs["images"], inputs.get("student_images", inputs["images"])
    return inputs, inputs


@keras.saving.register_keras_serializable(package="tfembed")
class Distiller(keras.Model):
    """A student embedder trained with a metric loss and the terms of one frozen teacher.

    Args:
      student: the student embedder (a functional ``keras.Model`` images → ``[B, D_s]``).
      teacher: the frozen teacher: a model, a ``.keras`` file or a SavedModel directory
        (hint/attention need named layers, so a functional model or ``.keras`` file). Or a
        one-domain :class:`TeacherCache` of its embeddings, read by the batch's
        ``(example, view)`` instead of running the teacher (embedding-level terms and Hinton KD
        only: a cache holds no feature maps for hint/attention). Or None: no teacher term at
        all (a model trained with its metric loss and heads, e.g. DarkRank's teacher).
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

    Data: ``(inputs, labels)`` where inputs follow :func:`split_views`; labels ``-1`` mark
    unlabelled rows. ``call`` returns the student embedding of the student's view.

    Logs: ``loss`` (weighted total) and each active term unweighted: ``metric_loss``,
    ``distill_loss``, ``hint_loss``, ``attention_loss``, ``kd_loss``, ``<head name>``.
    """

    def __init__(self, student, teacher, distill_loss="relative_teacher", metric_loss=None,
                 distill_weight=1.0, metric_weight=1.0,
                 hint_layers: Sequence[Tuple[str, str]] = (), hint_weight=0.0,
                 attention_layers: Sequence[Tuple[str, str]] = (), attention_weight=0.0,
                 heads: Optional[Sequence] = None, teacher_classifier=None,
                 kd_weight=0.0, kd_temperature=4.0, global_batch=True, name="distiller",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.student = load_embedder(student)
        self._teacher_source = teacher if isinstance(teacher, str) else None
        self.teacher_cache = teacher if isinstance(teacher, TeacherCache) else None
        if teacher is None:
            self.teacher = None
        elif self.teacher_cache is not None:
            if self.teacher_cache.num_domains != 1 or self.teacher_cache.table(0) is None:
                raise ValueError(f"a Distiller has one teacher; this TeacherCache holds "
                                 f"{self.teacher_cache.num_domains} domains")
            self.teacher = None
        else:
            self.teacher = freeze(load_embedder(teacher))
        self.global_batch = bool(global_batch)

        self._distill_loss_arg = distill_loss
        self.distill_weight = float(distill_weight)
        self._distill_fn = (as_loss_fn(distill_loss)
                            if distill_loss is not None and self.distill_weight else None)
        self._metric_loss_arg = metric_loss
        self.metric_weight = float(metric_weight)
        self._metric_fn = (as_loss_fn(metric_loss)
                           if metric_loss is not None and self.metric_weight else None)
        if teacher is None:
            wanted = [name for name, on in (
                ("distill_loss", self._distill_fn is not None),
                ("hint_layers", bool(hint_layers) and float(hint_weight)),
                ("attention_layers", bool(attention_layers) and float(attention_weight)),
                ("kd_weight", float(kd_weight))) if on]
            if wanted:
                raise ValueError(f"teacher=None trains without a teacher, but {', '.join(wanted)} "
                                 "needs one")
        if self._distill_fn is not None:
            self._check_embedding_dims(distill_loss)

        self.hint_layers = _pairs(hint_layers, "hint_layers")
        self.hint_weight = float(hint_weight)
        self.attention_layers = _pairs(attention_layers, "attention_layers")
        self.attention_weight = float(attention_weight)
        active_hint = self.hint_layers if self.hint_weight else []
        active_att = self.attention_layers if self.attention_weight else []
        self._feature_pairs = active_hint + active_att
        if self._feature_pairs and self.teacher_cache is not None:
            raise ValueError("hint and attention transfer need the teacher's feature maps, which "
                             "a TeacherCache does not hold; use the live teacher")
        self._num_hint = len(active_hint)
        self.heads = [head for head, _ in heads or []]
        self.head_weights = [float(w) for _, w in heads or []]
        self._fc_heads = [_uses_fc(head) for head in self.heads]
        self._build_feature_models()
        self.hint_adapters = self._build_adapters(active_hint)

        dim = output_dim(self.student)
        for head, fc in zip(self.heads, self._fc_heads):
            if not head.built:
                head.build((None, self._fc_dim if fc else dim))
        self.teacher_classifier = (None if teacher_classifier is None
                                   else freeze(teacher_classifier))
        self.kd_weight = float(kd_weight)
        self.kd_temperature = float(kd_temperature)
        self._logits_head = None
        if self.kd_weight:
            if self.teacher_classifier is None:
                raise ValueError("kd_weight > 0 needs a teacher_classifier (teacher embedding → "
                                 "class logits)")
            with_logits = [h for h in self.heads if hasattr(h, "logits")]
            if not with_logits:
                raise ValueError("kd_weight > 0 needs a student head with a `logits` method "
                                 "(e.g. LargeMarginSoftmaxHead) among `heads`")
            self._logits_head = with_logits[0]

        # A student trained with its own losses only (the papers' "student alone" baseline)
        # never runs the teacher.
        self._needs_teacher = bool(self._distill_fn is not None or self._feature_pairs
                                   or self._logits_head is not None)
        self._trackers = {"loss": keras.metrics.Mean(name="loss")}
        for key, on in (("metric_loss", self._metric_fn), ("distill_loss", self._distill_fn),
                        ("hint_loss", self._num_hint),
                        ("attention_loss", len(self._feature_pairs) - self._num_hint),
                        ("kd_loss", self._logits_head)):
            if on:
                self._trackers[key] = keras.metrics.Mean(name=key)
        for head in self.heads:
            self._trackers[head.name] = keras.metrics.Mean(name=head.name)
        if len(self._trackers) == 1:
            raise ValueError("Distiller has no loss term: set a metric_loss, a distill_loss, "
                             "hint/attention layers with a weight, heads or kd_weight")
        self.built = True

    # ------------------------------------------------------------------------------- set-up

    def _check_embedding_dims(self, loss):
        # Fail at construction, not at the first traced step: run the loss once on zero
        # embeddings of the two models' sizes. Losses comparing coordinates (absolute teacher)
        # reject different sizes; relational ones accept them.
        t = (self.teacher_cache.dim if self.teacher_cache is not None
             else output_dim(self.teacher))
        s = output_dim(self.student)
        if None in (t, s):
            return
        try:
            self._distill_fn(tf.zeros([2, t]), tf.zeros([2, s]))
        except ValueError as e:
            raise ValueError(f"distill_loss {serialize_loss(loss) or loss!r} cannot compare the "
                             f"teacher's {t}-d with the student's {s}-d embeddings: {e}") from e

    def _build_feature_models(self):
        # The student model returns [feature maps..., FC output (if a head needs it), embedding];
        # the teacher model [feature maps..., embedding]. Without extra outputs each is the
        # plain embedder.
        self._fc_dim = None
        student_layers = [s for _, s in self._feature_pairs]
        if any(self._fc_heads):
            if FC_LAYER not in {layer.name for layer in self.student.layers}:
                raise ValueError(
                    f"heads {[h.name for h, fc in zip(self.heads, self._fc_heads) if fc]} take "
                    f"the student's pre-normalisation FC output (features='fc'), layer "
                    f"{FC_LAYER!r} of build_embedder, which model {self.student.name!r} does "
                    "not have; build the student with build_embedder or give the heads "
                    "features='embedding'")
            student_layers.append(FC_LAYER)
            self._fc_dim = self.student.get_layer(FC_LAYER).output.shape[-1]
        # feature_model names the available layers when one is missing (a SavedModel teacher
        # has none: hint/attention need a functional model or a .keras file).
        teacher_fm = (freeze(feature_model(self.teacher, [t for t, _ in self._feature_pairs]))
                      if self._feature_pairs else self.teacher)
        student_fm = (feature_model(self.student, student_layers) if student_layers
                      else self.student)
        self._models = Untracked(teacher=teacher_fm, student=student_fm)
        if not self._feature_pairs:
            return
        self._teacher_shapes = [_channels_last_shape(o, f"teacher layer {t!r}") for o, (t, _) in
                                zip(teacher_fm.outputs[:-1], self._feature_pairs)]
        self._student_shapes = [_channels_last_shape(o, f"student layer {s!r}") for o, (_, s) in
                                zip(student_fm.outputs, self._feature_pairs)]

    def _build_adapters(self, hint_pairs):
        adapters = []
        for i, (t, s) in enumerate(hint_pairs):
            t_ch, s_ch = self._teacher_shapes[i][-1], self._student_shapes[i][-1]
            if t_ch == s_ch:
                adapters.append(None)
                continue
            # FitNets' regressor: a learned 1×1 convolution from the student's channels to the
            # teacher's, trained with the student and dropped at export.
            adapter = keras.layers.Conv2D(t_ch, 1, use_bias=False, dtype="float32",
                                          name=f"hint_adapter_{i}")
            adapter.build(self._student_shapes[i])
            adapters.append(adapter)
        return adapters

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
        seen, out = set(), []
        parts = [self.student, *[a for a in self.hint_adapters if a is not None], *self.heads]
        for part in parts:
            for v in part.trainable_weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    # ------------------------------------------------------------------------------ forward

    def call(self, inputs, training=False):
        _, student_images = split_views(inputs)
        return self.student(student_images, training=training)

    def _run(self, model, images, training):
        outputs = model(images, training=training)
        if not isinstance(outputs, (list, tuple)):
            return [], tf.cast(outputs, tf.float32)
        return list(outputs[:-1]), tf.cast(outputs[-1], tf.float32)

    def student_outputs(self, images, training=False):
        """``(feature maps, FC output or None, embedding)`` of the student on ``images``; the FC
        output (layer ``embedding_dense``, before L2 normalisation) only when a head takes it."""
        maps, emb = self._run(self._models.student, images, training=training)
        fc = tf.cast(maps.pop(), tf.float32) if any(self._fc_heads) else None
        return maps, fc, emb

    def teacher_outputs(self, inputs):
        """``(teacher feature maps, teacher embedding)``; inference mode, no gradient."""
        teacher_images, _ = split_views(inputs)
        if not self._needs_teacher:
            return [], None
        if self.teacher_cache is not None:
            emb = self.teacher_cache.lookup(0, *cache_keys(inputs, "Distiller"))
            return [], tf.stop_gradient(emb)
        maps, emb = self._run(self._models.teacher, teacher_images, training=False)
        return [tf.stop_gradient(m) for m in maps], tf.stop_gradient(emb)

    # --------------------------------------------------------------------------------- loss

    def _labelled_term(self, fn, labels, student):
        """``fn(labels, student)`` on the labelled rows (label >= 0); 0 when fewer than 2."""
        mask = labels >= 0
        count = tf.reduce_sum(tf.cast(mask, tf.int32))

        def compute():
            return tf.cast(fn(tf.boolean_mask(labels, mask), tf.boolean_mask(student, mask)),
                           tf.float32)

        return tf.cond(count >= 2, compute, lambda: tf.constant(0.0))

    def _terms(self, teacher_maps, teacher, student_maps, student, labels, student_fc=None):
        terms = {}
        if any(self._fc_heads) and student_fc is None:
            raise ValueError("heads with features='fc' need the student's FC output "
                             "(student_fc; see student_outputs)")
        if self.global_batch:
            present = [t for t in (teacher, student, labels, student_fc) if t is not None]
            gathered = iter(gather_replicas(*present) if len(present) > 1
                            else [gather_replicas(*present)])
            g_teacher, g_student, g_labels, g_fc = (
                None if t is None else next(gathered)
                for t in (teacher, student, labels, student_fc))
        else:
            g_teacher, g_student, g_labels, g_fc = teacher, student, labels, student_fc
        if g_labels is not None:
            g_labels = tf.cast(tf.reshape(g_labels, [-1]), tf.int32)
        if self._metric_fn is not None:
            terms["metric_loss"] = (self._labelled_term(self._metric_fn, g_labels, g_student)
                                    if g_labels is not None else tf.constant(0.0))
        if self._distill_fn is not None:
            terms["distill_loss"] = tf.cast(self._distill_fn(g_teacher, g_student), tf.float32)
        for head, fc in zip(self.heads, self._fc_heads):
            terms[head.name] = (self._labelled_term(lambda l, e, h=head: h(e, l), g_labels,
                                                    g_fc if fc else g_student)
                                if g_labels is not None else tf.constant(0.0))
        if self._num_hint:
            total = 0.0
            for i in range(self._num_hint):
                s = student_maps[i]
                if self.hint_adapters[i] is not None:
                    s = self.hint_adapters[i](tf.cast(s, tf.float32))
                if tuple(s.shape[1:3]) != tuple(self._teacher_shapes[i][1:3]):
                    s = tf.image.resize(s, self._teacher_shapes[i][1:3])
                total += hint_loss(teacher_maps[i], s)
            terms["hint_loss"] = total
        if len(self._feature_pairs) > self._num_hint:
            total = 0.0
            for i in range(self._num_hint, len(self._feature_pairs)):
                total += attention_transfer_loss(teacher_maps[i], student_maps[i], resize=True)
            terms["attention_loss"] = total
        if self._logits_head is not None:
            t_logits = tf.stop_gradient(tf.cast(self.teacher_classifier(teacher, training=False),
                                                tf.float32))
            fc = self._fc_heads[self.heads.index(self._logits_head)]
            terms["kd_loss"] = hinton_kd_loss(
                t_logits, self._logits_head.logits(student_fc if fc else student),
                temperature=self.kd_temperature)
        return terms

    def _weighted_total(self, terms):
        weights = {"metric_loss": self.metric_weight, "distill_loss": self.distill_weight,
                   "hint_loss": self.hint_weight, "attention_loss": self.attention_weight,
                   "kd_loss": self.kd_weight}
        weights.update({h.name: w for h, w in zip(self.heads, self.head_weights)})
        return tf.add_n([weights[k] * v for k, v in terms.items()])

    # -------------------------------------------------------------------------- train / test

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_maps, teacher = self.teacher_outputs(x)      # before the tape: no gradient
        _, student_images = split_views(x)
        weights = self._student_variables()
        with tf.GradientTape() as tape:
            student_maps, fc, student = self.student_outputs(student_images, training=True)
            terms = self._terms(teacher_maps, teacher, student_maps, student, y, fc)
            loss = self._weighted_total(terms)
            # Embedding-level terms are the same global loss on every replica (after the
            # gather) and feature-level terms are per-replica means: dividing by the replica
            # count gives the true gradient after the optimizer's SUM all-reduce either way.
            scaled = self.optimizer.scale_loss(scale_for_replicas(loss))
        grads = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(grads, weights))
        return update_trackers(self._trackers, loss, terms)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_maps, teacher = self.teacher_outputs(x)
        _, student_images = split_views(x)
        student_maps, fc, student = self.student_outputs(student_images, training=False)
        terms = self._terms(teacher_maps, teacher, student_maps, student, y, fc)
        return update_trackers(self._trackers, self._weighted_total(terms), terms)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    # ------------------------------------------------------------------------ serialization

    def get_config(self):
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": self._teacher_config(),
            "distill_loss": serialize_loss(self._distill_loss_arg),
            "metric_loss": serialize_loss(self._metric_loss_arg),
            "distill_weight": self.distill_weight,
            "metric_weight": self.metric_weight,
            "hint_layers": [list(p) for p in self.hint_layers],
            "hint_weight": self.hint_weight,
            "attention_layers": [list(p) for p in self.attention_layers],
            "attention_weight": self.attention_weight,
            "heads": [[keras.saving.serialize_keras_object(h), w]
                      for h, w in zip(self.heads, self.head_weights)],
            "teacher_classifier": (None if self.teacher_classifier is None else
                                   keras.saving.serialize_keras_object(self.teacher_classifier)),
            "kd_weight": self.kd_weight,
            "kd_temperature": self.kd_temperature,
            "global_batch": self.global_batch,
        }

    def _teacher_config(self):
        if self.teacher_cache is not None:
            if self.teacher_cache.directory is None:
                raise ValueError("an in-memory TeacherCache cannot be serialized: save() it, or "
                                 "save the student alone")
            return {"teacher_cache": self.teacher_cache.directory}
        if self.teacher is None:
            return None
        return self._teacher_source or keras.saving.serialize_keras_object(self.teacher)

    @classmethod
    def from_config(cls, config):
        import tfembed.losses  # noqa: F401,PLC0415  (registers heads and loss classes)
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teacher = config.pop("teacher")
        if isinstance(teacher, Mapping) and "teacher_cache" in teacher:
            teacher = TeacherCache.load(teacher["teacher_cache"])
        elif teacher is not None and not isinstance(teacher, str):
            teacher = keras.saving.deserialize_keras_object(teacher)
        for key in ("distill_loss", "metric_loss"):
            config[key] = deserialize_loss(config[key])
        config["heads"] = [(keras.saving.deserialize_keras_object(h), w)
                           for h, w in config.pop("heads") or []]
        if config.get("teacher_classifier") is not None:
            config["teacher_classifier"] = keras.saving.deserialize_keras_object(
                config["teacher_classifier"])
        return cls(student, teacher, **config)
