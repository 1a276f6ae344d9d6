"""Loss terms of a distillation step, one object per kind of knowledge moved.

A :class:`~tfembed.distill.Distiller` step collects, once per batch, the teacher's targets and the
student's outputs into a :class:`StepOutputs` and sums ``weight · term(outputs)`` over its terms:

==================  ============================================  =================================
term                compares                                      paper
==================  ============================================  =================================
:class:`LabelTerm`  labels and the student embedding (L_ML)       all (the student's own loss)
:class:`TeacherTerm`  teacher and student embeddings (abs/rel      001, 004, 000 (SND/RKD)
                    teacher, DarkRank, SND, RKD, direct match)
:class:`HeadTerm`   labels through a head owning weights          004 (L-Softmax, verification)
:class:`HintTerm`   feature maps through a learned 1×1 adapter    001 (hint, FitNets)
:class:`AttentionTerm`  spatial attention maps of feature maps     001 (attention transfer)
:class:`LogitsTerm` teacher and student class logits (Hinton KD)  004 (KD next to DarkRank)
:class:`DomainTerm` per domain: a teacher loss or a label loss    000 (ImageNet's triplet)
==================  ============================================  =================================

These follow ``keras.distillation.DistillationLoss`` where it fits (a term validates the models it
is given before training, and computes a scalar from teacher and student outputs) and depart from
it where embeddings need it: a term may see labels (metric loss, heads), the all-gathered global
batch (relational losses compare all pairs of the batch), only the labelled rows (unlabelled rows
get teacher terms only, 001's semi-supervised setting), or own weights trained with the student
(hint adapters, heads).

Embedding-level terms (label, teacher, head, domain) see the global batch when the trainer gathers
it; feature-level terms (hint, attention) and logits are per-sample means over each replica's
slice. Either way the trainer divides the total by the replica count (DESIGN §5).
"""

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfembed.losses.base import as_loss_fn, serialize_loss
from tfembed.losses.features import attention_transfer_loss, hint_loss
from tfembed.losses.teacher import hinton_kd_loss


class StepOutputs(NamedTuple):
    """What the terms of one step see (global-batch tensors when the trainer gathers)."""

    teacher: Optional[tf.Tensor]            # [B, D_t] teacher embedding, or None
    student: tf.Tensor                      # [B, D_s] student embedding
    labels: Optional[tf.Tensor]             # [B] int32 (-1: unlabelled), or None
    student_fc: Optional[tf.Tensor] = None  # [B, F] pre-normalisation FC output, if a head needs it
    teacher_maps: Dict[str, tf.Tensor] = {}  # teacher layer name -> [B, H, W, C]
    student_maps: Dict[str, tf.Tensor] = {}  # student layer name -> [B, H, W, C]
    domain: Optional[tf.Tensor] = None      # the batch's domain id (scalar int32)
    # (teacher, student, student_fc) of this replica's slice, before any all-gather: what the
    # per-sample terms (Hinton KD) average over.
    local: Optional[Tuple] = None


def labelled(fn, labels, features):
    """``fn(labels, features)`` on the labelled rows (label >= 0); 0 when fewer than two."""
    mask = labels >= 0
    count = tf.reduce_sum(tf.cast(mask, tf.int32))

    def compute():
        return tf.cast(fn(tf.boolean_mask(labels, mask), tf.boolean_mask(features, mask)),
                       tf.float32)

    return tf.cond(count >= 2, compute, lambda: tf.constant(0.0))


class Term:
    """One weighted loss term.

    Attributes:
      name: its log key. weight: its weight in the total.
      needs_teacher: whether it reads the teacher's embedding.
      teacher_layers / student_layers: feature maps it reads (the trainer builds models that
        return them).
      uses_fc: whether it reads the student's pre-normalisation FC output.
    """

    name = "term"
    needs_teacher = False
    teacher_layers: Tuple[str, ...] = ()
    student_layers: Tuple[str, ...] = ()
    uses_fc = False

    def __init__(self, weight=1.0):
        self.weight = float(weight)

    def build(self, teacher_dim, student_dim, teacher_shapes, student_shapes):
        """Validates the models and creates any weights, before the first step."""

    @property
    def trainable_weights(self):
        return []

    def __call__(self, out: StepOutputs):
        raise NotImplementedError


class LabelTerm(Term):
    """The student's own label loss ``fn(labels, student)`` on labelled rows (L_ML)."""

    name = "metric_loss"

    def __init__(self, loss, weight=1.0):
        super().__init__(weight)
        self.loss, self.fn = loss, as_loss_fn(loss)

    def __call__(self, out):
        if out.labels is None:
            return tf.constant(0.0)
        return labelled(self.fn, out.labels, out.student)


class TeacherTerm(Term):
    """An embedding-level teacher loss ``fn(teacher, student)`` (every row, labelled or not).

    Losses comparing coordinates (absolute teacher, direct match) need equal dimensions; relational
    ones (relative teacher, DarkRank, SND, RKD) accept different ones, which :meth:`build` checks
    by running the loss once on zero embeddings of the two models' sizes.
    """

    name = "distill_loss"
    needs_teacher = True

    def __init__(self, loss, weight=1.0):
        super().__init__(weight)
        self.loss, self.fn = loss, as_loss_fn(loss)

    def build(self, teacher_dim, student_dim, teacher_shapes, student_shapes):
        if None in (teacher_dim, student_dim):
            return
        try:
            self.fn(tf.zeros([2, teacher_dim]), tf.zeros([2, student_dim]))
        except ValueError as e:
            raise ValueError(f"distill_loss {serialize_loss(self.loss) or self.loss!r} cannot "
                             f"compare the teacher's {teacher_dim}-d with the student's "
                             f"{student_dim}-d embeddings: {e}") from e

    def __call__(self, out):
        return tf.cast(self.fn(out.teacher, out.student), tf.float32)


def uses_fc(head):
    """Whether ``head`` takes the pre-normalisation FC output (its ``features`` is ``"fc"``)."""
    features = getattr(head, "features", "embedding")
    if features not in ("embedding", "fc"):
        raise ValueError(f"head {getattr(head, 'name', head)!r}: features must be 'embedding' or "
                         f"'fc', got {features!r}")
    return features == "fc"


class HeadTerm(Term):
    """A supervised head owning weights, ``head(features, labels) -> loss`` on labelled rows
    (DarkRank's large-margin softmax and verification); trained with the student, not exported.
    ``features`` is the FC output for a head whose ``features`` is ``"fc"``, else the embedding."""

    def __init__(self, head, weight=1.0):
        super().__init__(weight)
        self.head, self.name, self.uses_fc = head, head.name, uses_fc(head)

    def build(self, teacher_dim, student_dim, teacher_shapes, student_shapes):
        if not self.head.built:
            self.head.build((None, student_shapes["fc"][-1] if self.uses_fc else student_dim))

    @property
    def trainable_weights(self):
        return self.head.trainable_weights

    def __call__(self, out):
        if out.labels is None:
            return tf.constant(0.0)
        return labelled(lambda l, e: self.head(e, l), out.labels,
                        out.student_fc if self.uses_fc else out.student)


def layer_pairs(layers, what):
    """``[(teacher layer, student layer), ...]`` of a config value, or a clear error."""
    pairs = []
    for pair in layers or ():
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"{what} must be a list of (teacher layer, student layer) pairs, "
                             f"got {pair!r}")
        pairs.append((str(pair[0]), str(pair[1])))
    return pairs


def _map_shape(shape, what):
    if len(shape) != 4 or None in shape[1:]:
        raise ValueError(f"{what} must be a 4-D feature map with static H, W, C, got {shape}")
    return tuple(shape)


class _FeatureTerm(Term):
    def __init__(self, pairs: Sequence[Tuple[str, str]], weight=1.0, what="layers"):
        super().__init__(weight)
        self.pairs = layer_pairs(pairs, what)
        self.teacher_layers = tuple(t for t, _ in self.pairs)
        self.student_layers = tuple(s for _, s in self.pairs)

    def build(self, teacher_dim, student_dim, teacher_shapes, student_shapes):
        self.teacher_shapes = [_map_shape(teacher_shapes[t], f"teacher layer {t!r}")
                               for t, _ in self.pairs]
        self.student_shapes = [_map_shape(student_shapes[s], f"student layer {s!r}")
                               for _, s in self.pairs]


class HintTerm(_FeatureTerm):
    """Hint loss (FitNets) summed over layer pairs. Where the channel counts differ, a learned 1×1
    convolution (trained with the student, dropped at export) maps the student's map to the
    teacher's channels; the adapted map is resized to the teacher's spatial size."""

    name = "hint_loss"

    def __init__(self, pairs, weight=1.0):
        super().__init__(pairs, weight, "hint_layers")
        self.adapters = []

    def build(self, teacher_dim, student_dim, teacher_shapes, student_shapes):
        super().build(teacher_dim, student_dim, teacher_shapes, student_shapes)
        self.adapters = []
        for i, (t_shape, s_shape) in enumerate(zip(self.teacher_shapes, self.student_shapes)):
            if t_shape[-1] == s_shape[-1]:
                self.adapters.append(None)
                continue
            adapter = keras.layers.Conv2D(t_shape[-1], 1, use_bias=False, dtype="float32",
                                          name=f"hint_adapter_{i}")
            adapter.build(s_shape)
            self.adapters.append(adapter)

    @property
    def trainable_weights(self):
        return [w for a in self.adapters if a is not None for w in a.trainable_weights]

    def __call__(self, out):
        total = 0.0
        for (t, s), adapter, t_shape in zip(self.pairs, self.adapters, self.teacher_shapes):
            student = out.student_maps[s]
            if adapter is not None:
                student = adapter(tf.cast(student, tf.float32))
            if tuple(student.shape[1:3]) != tuple(t_shape[1:3]):
                student = tf.image.resize(student, t_shape[1:3])
            total += hint_loss(out.teacher_maps[t], student)
        return total


class AttentionTerm(_FeatureTerm):
    """Attention transfer summed over layer pairs; the student's attention map is resized to the
    teacher's spatial size where they differ."""

    name = "attention_loss"

    def __init__(self, pairs, weight=1.0):
        super().__init__(pairs, weight, "attention_layers")

    def __call__(self, out):
        total = 0.0
        for t, s in self.pairs:
            total += attention_transfer_loss(out.teacher_maps[t], out.student_maps[s],
                                             resize=True)
        return total


class LogitsTerm(Term):
    """Hinton KD between ``teacher_classifier(teacher embedding)`` and the logits of a student
    head with a ``logits`` method (on that head's input: the FC output or the embedding)."""

    name = "kd_loss"
    needs_teacher = True

    def __init__(self, teacher_classifier, head, weight=1.0, temperature=4.0):
        super().__init__(weight)
        self.teacher_classifier, self.head = teacher_classifier, head
        self.temperature = float(temperature)
        self.uses_fc = uses_fc(head)

    def __call__(self, out):
        # A per-sample mean: each replica's own slice, as the feature-level terms.
        teacher, student, student_fc = out.local or (out.teacher, out.student, out.student_fc)
        t_logits = tf.stop_gradient(tf.cast(self.teacher_classifier(teacher, training=False),
                                            tf.float32))
        return hinton_kd_loss(t_logits, self.head.logits(student_fc if self.uses_fc else student),
                              temperature=self.temperature)


class DomainTerm(Term):
    """Paper 000's loss: per batch domain, the distillation loss ``fn(teacher, student)`` or, for a
    domain listed in ``label_losses``, a label loss ``fn(labels, student)`` instead (ImageNet's
    triplet next to SND on a fine-grained domain).

    Args:
      distill_loss: the distillation loss of every other domain.
      label_losses: ``{domain id: label loss}``.
      domain_names: for error messages.
    """

    name = "domain_loss"
    needs_teacher = True

    def __init__(self, distill_loss, label_losses=None, domain_names=(), weight=1.0):
        super().__init__(weight)
        self.distill_fn = as_loss_fn(distill_loss)
        self.label_fns = {int(d): as_loss_fn(l) for d, l in dict(label_losses or {}).items()}
        self.domain_names = list(domain_names)

    def __call__(self, out):
        def branch(d):
            if d in self.label_fns:
                if out.labels is None:
                    raise ValueError(f"domain {self.domain_names[d]!r} uses a label loss; the "
                                     "batches need labels")
                return lambda: tf.cast(self.label_fns[d](out.labels, out.student), tf.float32)
            return lambda: tf.cast(self.distill_fn(out.teacher, out.student), tf.float32)

        if len(self.domain_names) == 1 or not self.label_fns:
            # Every domain distills with the same loss: no conditional. (A switch over m
            # identical branches also costs XLA minutes per branch to compile with its
            # gradient: > 10 min for 3 domains with RKD, against 10 s without.)
            return branch(0)()
        return tf.switch_case(out.domain, [branch(d) for d in range(len(self.domain_names))])
