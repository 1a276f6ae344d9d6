"""Diversified mutual metric learning, DM² (paper 003, Park et al.): a cohort trained together.

L embedders (the cohort) see the same mini-batch every step. Member l minimises (003 Eq. 3)

    L^l = L_DML^l + λ · L_DM²^l,      L_DM²^l = mean over peers k ≠ l of relation_loss(e^l, e^k)

where the relation loss matches member l's Euclidean distance matrix of the batch to each peer's
(Eq. 1-2); the peers' matrices are targets (no gradient flows into a peer from l's loss). λ
warms up linearly from 0 to its final value (20 in 003) over ``warmup_steps``. Three diversities:

* model diversity (MD): the members start from different initialisations (with a pretrained
  backbone, only their projection layers differ, 003 §4.3) — the caller builds them;
* temporal diversity (TD): member l updates with probability p_l (003: 2^-(l-1)). The Bernoulli
  draws come from a stateless RNG seeded with ``(seed, step)``, so they are reproducible and
  never retrace the step; a member that skips a step runs its forward pass (its peers need its
  distances) but neither its backward pass nor its optimizer: both sit in the taken branch of a
  ``tf.cond``. Each member has its own optimizer (own slots, own iteration count);
* view diversity (VD): inputs ``{"images": ..., "views": [B, L, H, W, 3]}`` give member l its own
  augmentation of the batch (``training_batches(..., view=CohortViews(L))`` draws one random crop and flip
  per member); plain images feed every member the same pixels.

Placement (003 §3.3, the paper's parallel setting): ``devices=[...]`` puts member l's variables
and computation on device ``devices[l]`` (e.g. one GPU each); only the B×B distance information
crosses devices. Data parallelism (MirroredStrategy) works for cohorts without temporal
diversity: every member's embeddings and the labels are all-gathered, so each loss is the
one-device loss of the global batch. With TD it is refused (``compile``): a skipped member's
optimizer sits in a ``tf.cond`` branch, and tf.distribute cannot synchronise replicas (the
gradient all-reduce) inside a conditional branch. Place such a cohort's members instead.

``call`` returns the ensemble embedding: the concatenation of the L unit-norm member embeddings.
:meth:`ensemble_model` returns the same as a functional model (export, distillation teacher);
``cohort.members[l]`` is an ordinary embedder (export one member alone).

Example:

>>> members = [build_embedder("resnet50", 512, weights="imagenet") for _ in range(4)]
>>> cohort = MutualLearningCohort(members, metric_loss="triplet_distance_weighted",
...                               relation_weight=20.0, warmup_steps=3 * steps_per_epoch,
...                               update_probabilities=[1, 0.5, 0.25, 0.125])
>>> cohort.compile(optimizer=keras.optimizers.Adam(3e-5, weight_decay=5e-4))
>>> cohort.fit(training_batches([cub.train], 24, 5, view=CohortViews(4)), steps_per_epoch=...)
>>> export_model(cohort.ensemble_model(), "saved_models", "dm2_ensemble")
"""

import contextlib

import keras
import tensorflow as tf

from tfembed.losses.relation import relation_loss
from tfembed.models.embedder import load_embedder
from tfembed.training.step import (
    as_loss_fn,
    compile_from_config,
    deserialize_loss,
    gather_replicas,
    scale_for_replicas,
    serialize_loss,
    update_trackers,
)


def temporal_probabilities(num_members):
    """003's update probabilities ``p_l = 2^-(l-1)``: 1, 0.5, 0.25, ..."""
    return [2.0 ** -l for l in range(num_members)]


@keras.saving.register_keras_serializable(package="tfembed")
class MutualLearningCohort(keras.Model):
    """L embedders trained together with relation transfer (DM², 003 Algorithm 1).

    Args:
      members: the L embedders (functional models or ``.keras`` paths; same input size, any
        backbones and embedding sizes: heterogeneous cohorts, 003 §4.7). Members sharing a
        name are renamed ``<name>_member<l>``.
      metric_loss: L_DML, applied to every member: a loss name, Loss object or
        ``fn(labels, embeddings)`` (003: triplet with distance-weighted sampling).
      relation_weight: the final λ (003: 20 for triplet/contrastive/binomial, 100 for
        proxy-NCA, 2000 for ArcFace). 0 trains the members independently.
      warmup_steps: steps over which λ grows linearly from 0 (003: three epochs); 0 = constant.
      update_probabilities: p_l per member (None: every member updates every step).
      devices: one device name per member, or None: member l's step (forward, loss, backward,
        optimizer and its slots) runs there; build member l under ``tf.device(devices[l])``
        too, so its weights live there (``tfembed.cohort.runner.build_members`` does).
      seed: seed of the update draws.
      heads: instead of ``metric_loss``, one loss layer owning weights per member, called as
        ``head(embeddings, labels)`` (proxy-NCA's proxies, ArcFace's centres, 003 §4.8); head l
        is trained with member l.

    Logs: ``loss`` (sum over members), per member ``loss_<l>``, ``metric_loss_<l>``,
    ``relation_loss_<l>``, ``update_rate_<l>`` (fraction of steps member l updated so far),
    and ``relation_weight`` (the current λ).
    """

    def __init__(self, members, metric_loss="triplet_semihard", relation_weight=20.0,
                 warmup_steps=0, update_probabilities=None, devices=None, seed=0, heads=None,
                 name="cohort", **kwargs):
        super().__init__(name=name, **kwargs)
        self.members = [load_embedder(m) for m in members]
        if len(self.members) < 1:
            raise ValueError("a cohort needs at least one member")
        n = len(self.members)
        names = [m.name for m in self.members]
        if len(set(names)) != n:
            # Members built by the same call share a name; the ensemble model needs them unique.
            for l, member in enumerate(self.members):
                member.name = f"{names[l]}_member{l}"
        shapes = {tuple(m.input_shape[1:]) for m in self.members}
        if len(shapes) != 1:
            raise ValueError(f"cohort members must take the same input shape, got {sorted(shapes)}")
        self._metric_loss_arg = metric_loss
        self._metric_fn = as_loss_fn(metric_loss) if metric_loss is not None else None
        self.relation_weight = float(relation_weight)
        self.warmup_steps = int(warmup_steps)
        probs = [1.0] * n if update_probabilities is None else [float(p) for p in
                                                                  update_probabilities]
        if len(probs) != n or not all(0.0 < p <= 1.0 for p in probs):
            raise ValueError(f"update_probabilities needs {n} values in (0, 1], got "
                             f"{update_probabilities}")
        self.update_probabilities = probs
        if devices is not None and len(devices) != n:
            raise ValueError(f"devices needs one entry per member ({n}), got {devices}")
        self.devices = list(devices) if devices is not None else None
        self.seed = int(seed)
        self.heads = list(heads) if heads else []
        if self.heads:
            if len(self.heads) != n:
                raise ValueError(f"heads needs one layer per member ({n}), got {len(self.heads)}")
            self._metric_loss_arg, self._metric_fn = None, None
            for head, member in zip(self.heads, self.members):
                if not head.built:
                    head.build((None, member.output_shape[-1]))
        if self._metric_fn is None and not self.heads and (self.relation_weight == 0 or n == 1):
            raise ValueError("the cohort has no loss term: set a metric_loss, or a "
                             "relation_weight with several members")
        self.step_counter = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                            trainable=False, name="step_counter")
        self.update_counts = self.add_weight(shape=(n,), dtype="int64", initializer="zeros",
                                             trainable=False, name="update_counts")
        self.member_optimizers = []
        self._trackers = {"loss": keras.metrics.Mean(name="loss")}
        for l in range(n):
            for key in ("loss", "metric_loss", "relation_loss"):
                self._trackers[f"{key}_{l}"] = keras.metrics.Mean(name=f"{key}_{l}")
        self.built = True

    # ------------------------------------------------------------------------------ set-up

    @property
    def image_spec(self):
        """The :class:`~tfembed.data.ImageSpec` of the images it takes (its first member's)."""
        from tfembed.data.types import ImageSpec  # noqa: PLC0415

        return ImageSpec.of(self.members[0])

    @property
    def num_members(self):
        return len(self.members)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def compile(self, optimizer="adam", **kwargs):
        """``optimizer`` is the template: every member gets its own copy (own slots)."""
        strategy = tf.distribute.get_strategy()
        if strategy.num_replicas_in_sync > 1 and any(p < 1.0 for p in self.update_probabilities):
            raise ValueError("a MutualLearningCohort with temporal diversity (update "
                             "probabilities < 1) is not replicated under a distribution "
                             "strategy (the gradient all-reduce cannot sit in the tf.cond that "
                             "skips an update): place its members on devices with "
                             "devices=[...] and build it outside strategy.scope()")
        super().compile(optimizer=optimizer, **kwargs)
        config = keras.optimizers.serialize(self.optimizer)
        self.member_optimizers = []
        for l in range(self.num_members):
            with self._on(l):
                opt = keras.optimizers.deserialize(config)
                # Slots created now: inside the traced step they would retrace it, and inside a
                # tf.cond branch they could not be created at all.
                opt.build(self.member_variables(l))
            self.member_optimizers.append(opt)

    def compile_from_config(self, config):
        compile_from_config(self, config)

    def checkpoint_objects(self):
        """The member optimizers, for a training-state checkpoint (``fault_tolerance``): Keras
        tracks ``self.optimizer`` only, and each member's slots and iterations live in its own."""
        return {f"member_optimizer_{l}": opt
                for l, opt in enumerate(getattr(self, "member_optimizers", []))}

    def member_variables(self, l):
        """What member l's optimizer updates: its weights (and its head's)."""
        head = self.heads[l].trainable_weights if self.heads else []
        return list(self.members[l].trainable_variables) + list(head)

    def _on(self, l):
        return tf.device(self.devices[l]) if self.devices is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------------------ forward

    def member_inputs(self, inputs):
        """One image batch per member: its own view, or the same images for all."""
        if isinstance(inputs, dict):
            if "views" in inputs:
                views = inputs["views"]
                if views.shape[1] is not None and views.shape[1] != self.num_members:
                    raise ValueError(f"inputs['views'] holds {views.shape[1]} views for "
                                     f"{self.num_members} members")
                return [views[:, l] for l in range(self.num_members)]
            inputs = inputs["images"]
        return [inputs] * self.num_members

    def member_embeddings(self, inputs, training=False):
        """The L members' embeddings ``[B, d_l]`` (a list) of the batch."""
        out = []
        for l, (member, x) in enumerate(zip(self.members, self.member_inputs(inputs))):
            with self._on(l):
                out.append(tf.cast(member(x, training=training), tf.float32))
        return out

    def call(self, inputs, training=False):
        return tf.concat(self.member_embeddings(inputs, training=training), axis=-1)

    def ensemble_model(self, name="dm2_ensemble"):
        """A functional model images → concatenation of the members' embeddings."""
        inputs = keras.Input(self.members[0].input_shape[1:], name="images")
        outputs = keras.layers.Concatenate(name="ensemble")([m(inputs) for m in self.members])
        return keras.Model(inputs, outputs, name=name)

    # ---------------------------------------------------------------------------- training

    def relation_weight_at(self, step):
        """λ at ``step``: linear warm-up from 0 over ``warmup_steps``, then constant."""
        if self.warmup_steps <= 0:
            return tf.constant(self.relation_weight, tf.float32)
        ramp = tf.cast(step, tf.float32) / float(self.warmup_steps)
        return self.relation_weight * tf.minimum(ramp, 1.0)

    def update_gates(self, step):
        """``[L]`` booleans: which members update at ``step`` (stateless Bernoulli draws)."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        draws = tf.random.stateless_uniform([self.num_members], seed=seed)
        return draws < tf.constant(self.update_probabilities, tf.float32)

    def member_loss(self, l, embeddings, labels, weight):
        """``(total, metric, relation)`` of member l (its peers are targets: no gradient)."""
        e = embeddings[l]
        if self.heads:
            metric = tf.cast(self.heads[l](e, labels), tf.float32)
        elif self._metric_fn is not None:
            metric = tf.cast(self._metric_fn(labels, e), tf.float32)
        else:
            metric = tf.constant(0.0)
        peers = [tf.stop_gradient(p) for k, p in enumerate(embeddings) if k != l]
        relation = relation_loss(e, peers) if peers else tf.constant(0.0)
        return metric + weight * relation, metric, relation

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
        step = self.step_counter.value
        weight = self.relation_weight_at(step)
        gates = self.update_gates(step)
        tapes, embeddings = [], []
        # Algorithm 1 lines 3-8: every member's forward pass (its peers need its distances).
        for l, (member, images) in enumerate(zip(self.members, self.member_inputs(x))):
            tape = tf.GradientTape()
            with self._on(l), tape:
                # Under MirroredStrategy the losses see the global batch (a no-op on one device).
                embeddings.append(gather_replicas(
                    tf.cast(member(images, training=True), tf.float32)))
            tapes.append(tape)
        labels = gather_replicas(labels)
        losses, scaled = [], []
        for l, opt in enumerate(self.member_optimizers):
            with self._on(l), tapes[l]:  # the tape records member l's loss (and its scaling) too
                losses.append(self.member_loss(l, embeddings, labels, weight))
                # Every replica holds the same global loss: ÷ replicas (see training/step.py); then
                # the float16 loss scale, if any.
                scaled.append(opt.scale_loss(scale_for_replicas(losses[l][0])))
        # Lines 13-17: member l's backward pass and update only if its Bernoulli draw says so.
        done = []
        for l, opt in enumerate(self.member_optimizers):
            def update(l=l, opt=opt):
                with self._on(l):
                    variables = self.member_variables(l)
                    grads = tapes[l].gradient(scaled[l], variables)
                    opt.apply_gradients(zip(grads, variables))
                return tf.constant(1, tf.int64)

            if self.update_probabilities[l] >= 1.0:   # always updates: no branch needed
                done.append(update())
            else:
                done.append(tf.cond(gates[l], update, lambda: tf.constant(0, tf.int64)))
        self.update_counts.assign_add(tf.stack(done))
        self.step_counter.assign_add(1)
        # Keras' own counter (TensorBoard steps, schedules reading it) follows the steps.
        self.optimizer.iterations.assign_add(1)
        return self._logs(losses, weight)

    def _logs(self, losses, weight):
        terms = {}
        for l, (total, metric, relation) in enumerate(losses):
            terms.update({f"loss_{l}": total, f"metric_loss_{l}": metric,
                          f"relation_loss_{l}": relation})
        logs = update_trackers(self._trackers, tf.add_n([t for t, _, _ in losses]), terms)
        steps = tf.cast(tf.maximum(self.step_counter.value, 1), tf.float32)
        for l in range(self.num_members):
            logs[f"update_rate_{l}"] = tf.cast(self.update_counts[l], tf.float32) / steps
        logs["relation_weight"] = weight
        return logs

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
        weight = self.relation_weight_at(self.step_counter.value)
        embeddings = self.member_embeddings(x)
        losses = [self.member_loss(l, embeddings, labels, weight)
                  for l in range(self.num_members)]
        return self._logs(losses, weight)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    # ------------------------------------------------------------------------ serialization

    def get_config(self):
        return {
            "name": self.name,
            "members": [keras.saving.serialize_keras_object(m) for m in self.members],
            "metric_loss": serialize_loss(self._metric_loss_arg),
            "relation_weight": self.relation_weight,
            "warmup_steps": self.warmup_steps,
            "update_probabilities": self.update_probabilities,
            "devices": self.devices,
            "seed": self.seed,
            "heads": [keras.saving.serialize_keras_object(h) for h in self.heads] or None,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        import tfembed.losses  # noqa: F401,PLC0415  (registers the loss classes and heads)
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        if config.get("heads"):
            config["heads"] = [keras.saving.deserialize_keras_object(h) for h in config["heads"]]
        config["metric_loss"] = deserialize_loss(config.get("metric_loss"))
        return cls(members, **config)
