"""Attention-based ensemble, ABE-M (paper 002, Kim et al. 2018), and its M-heads baseline.

An embedder's network is split at a branching point into a spatial feature extractor S (pixels →
feature map) and a global embedding function G (feature map → pooled, projected, L2-normalised
embedding). ABE-M keeps one S and one G and gives each of M learners its own attention mask over
S's output (002 Eq. 7):

    B_m(x) = G(S(x) ∘ A_m(S(x))),      A_m = A'_m(C(·))

C is an attention trunk shared by the learners: a copy of the backbone blocks that follow the
branching point, with strides and pooling removed so the mask has S's spatial size (002 §4 uses
inception(4a)–(4e); its weights start from the backbone's, as the paper's start from ImageNet).
A'_m is a 1×1 convolution with as many filters as S has channels and a sigmoid, so masks are in
[0, 1]; the M heads are one convolution with M·C filters (the same thing, one kernel launch).
G runs once over the M·B attended maps, learners folded into the batch dimension.

Each learner embeds into D/M dimensions (G's projection); the ensemble embedding is the
concatenation of the M unit-norm learner embeddings (D in total, norm √M: Euclidean rankings are
those of the sum of the learners' squared distances, 002 Eq. 3).

Loss (Eq. 8): Σ_m L_metric(labels, B_m) + λ_div · L_div, L_metric the contrastive loss with margin
1 (Eq. 10) by default and L_div the divergence loss (Eq. 9) that pushes the learners' embeddings
of the same image apart — without it the learners collapse onto one (002 Table 2).

``MultiHeadEnsemble`` is the paper's M-heads baseline (Fig. 1(a)): one S, M separate G_m, no
attention; divergence loss optional (Table 3 shows it does nothing there).

Example:

>>> model = build_attention_ensemble("inception_v3", num_learners=8, embedding_dim=512,
...                                  weights="imagenet", metric_loss="contrastive_pairs")
>>> model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
>>> model.fit(batches([cars.train], Pairs(32, 16), spec=model), steps_per_epoch=1000)
>>> model.predict(images)            # [N, 512] ensemble embeddings
>>> model.learner_outputs(images)    # {"learners": [8, N, 64], "masks": [N, h, w, 8, C], ...}
"""

import re

import keras
import tensorflow as tf

from tfembed.losses.divergence import divergence_loss
from tfembed.models.embedder import backbone_spec_of, build_embedder, load_embedder
from tfembed.training.step import (
    Untracked,
    as_loss_fn,
    compile_from_config,
    deserialize_loss,
    gather_replicas,
    scale_for_replicas,
    serialize_loss,
    update_trackers,
)

_STRIDED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_POOLS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


def ensemble_of(learners):
    """``[M, B, d]`` learner embeddings → ``[B, M·d]``: the concatenation of the M learners."""
    m, d = learners.shape[0], learners.shape[-1]
    return tf.reshape(tf.transpose(learners, [1, 0, 2]), [-1, m * d])


def _images(inputs):
    if isinstance(inputs, dict):
        return inputs["images"]
    return inputs


# ------------------------------------------------------------------------------ splitting a model

def _spec_or_none(model):
    try:
        return backbone_spec_of(model)
    except ValueError:
        return None


def _layer(model, name, what):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(f"{what} {name!r} is not a layer of model {model.name!r}; layers: "
                         f"{', '.join(l.name for l in model.layers)}") from None


def split_embedder(base, branch=None):
    """``(S, G, branch)``: the embedder ``base`` split at layer ``branch`` (default: its
    backbone's ``default_branch``). S and G share ``base``'s layers and weights."""
    spec = _spec_or_none(base)
    if branch is None:
        if spec is None:
            raise ValueError(f"model {base.name!r} is not built on a registered backbone: pass "
                             "branch=<layer name>")
        branch = spec.default_branch
    branch = spec.layer_name(branch) if spec is not None else branch
    tensor = _layer(base, branch, "branch").output
    inputs = base.inputs[0] if len(base.inputs) == 1 else base.inputs
    spatial = keras.Model(inputs, tensor, name=f"{base.name}_spatial")
    global_embedding = keras.Model(tensor, base.outputs[0], name=f"{base.name}_global")
    return spatial, global_embedding, branch


def trunk_end(base, branch, attention_blocks=None):
    """The layer ending an attention trunk of ``attention_blocks`` backbone blocks after
    ``branch``; default: the next stage output (002: inception(4a)–(4e), the stride-16 stage)."""
    spec = _spec_or_none(base)
    if spec is None:
        raise ValueError(f"model {base.name!r} is not built on a registered backbone: pass "
                         "attention_end=<layer name>")
    names = [layer.name for layer in base.layers]
    start = names.index(branch)
    if attention_blocks is None:
        for stage in spec.stages.values():
            if stage in names and names.index(stage) > start:
                return stage
        raise ValueError(f"no stage of {spec.name} follows the branch {branch!r}: pass "
                         "attention_blocks or attention_end")
    pattern = re.compile(spec.blocks)
    blocks = [n for n in names[start + 1:] if pattern.fullmatch(n)]
    if not 1 <= int(attention_blocks) <= len(blocks):
        raise ValueError(f"attention_blocks must be in 1..{len(blocks)} (the {spec.name} blocks "
                         f"after {branch!r}: {', '.join(blocks)}), got {attention_blocks}")
    return blocks[int(attention_blocks) - 1]


def _strided(layer):
    strides = layer.get_config().get("strides", 1)
    strides = tuple(strides) if isinstance(strides, (list, tuple)) else (strides,)
    return any(s != 1 for s in strides)


def stride_free_copy(submodel, prefix):
    """A copy of ``submodel`` (same weights, layer names prefixed) that keeps the spatial size.

    Strided convolutions become stride 1 with "same" padding, strided pooling becomes identity,
    and zero-padding layers that only fed strided layers go too (002 §6.3.1: "we remove all the
    pooling layers in our attention module"). Weight shapes do not depend on strides, so every
    weight (ImageNet ones included) carries over.
    """
    drop_padding = set()
    for layer in submodel.layers:
        if isinstance(layer, keras.layers.ZeroPadding2D):
            consumers = [node.operation for node in layer._outbound_nodes]
            if consumers and all(isinstance(c, _STRIDED + _POOLS) and _strided(c)
                                 for c in consumers):
                drop_padding.add(layer.name)

    def clone(layer):
        config = layer.get_config()
        name = prefix + layer.name
        if (isinstance(layer, _POOLS) and _strided(layer)) or layer.name in drop_padding:
            return keras.layers.Identity(name=name)
        config["name"] = name
        if isinstance(layer, _STRIDED) and _strided(layer):
            config["strides"] = (1, 1)
            config["padding"] = "same"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(submodel, clone_function=clone)
    for layer in submodel.layers:
        weights = layer.get_weights()
        if weights:
            copy.get_layer(prefix + layer.name).set_weights(weights)
    return copy


# ----------------------------------------------------------------------------------- the trainer

class _EnsembleModel(keras.Model):
    """``train_step`` of an ensemble of learners: Σ_m metric loss + λ_div · divergence (Eq. 8).

    Subclasses define ``learners(images, training) -> [M, B, d]``. ``call`` returns the ensemble
    embedding ``[B, M·d]``. Under ``tf.distribute`` with ``global_batch`` the losses see the
    all-gathered batch (the contrastive loss compares every pair of the batch, as on one GPU).
    """

    @property
    def image_spec(self):
        """The :class:`~tfembed.data.ImageSpec` of the images it takes (its base embedder's)."""
        from tfembed.data.types import ImageSpec  # noqa: PLC0415

        return ImageSpec.of(self.base)

    def __init__(self, num_learners, metric_loss, divergence_weight, divergence_margin,
                 global_batch, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_learners = int(num_learners)
        if self.num_learners < 1:
            raise ValueError(f"num_learners must be >= 1, got {num_learners}")
        self._metric_loss_arg = metric_loss
        self._metric_fn = as_loss_fn(metric_loss) if metric_loss is not None else None
        self.divergence_weight = float(divergence_weight)
        self.divergence_margin = float(divergence_margin)
        self.global_batch = bool(global_batch)
        # One learner has no pair to diverge from (002: ABE-1 has no divergence loss).
        self._divergence_on = self.divergence_weight > 0 and self.num_learners > 1
        self._trackers = {"loss": keras.metrics.Mean(name="loss")}
        if self._metric_fn is not None:
            self._trackers["metric_loss"] = keras.metrics.Mean(name="metric_loss")
        if self._divergence_on:
            self._trackers["divergence_loss"] = keras.metrics.Mean(name="divergence_loss")
        if len(self._trackers) == 1:
            raise ValueError("the ensemble has no loss term: set a metric_loss or a "
                             "divergence_weight with several learners")

    def learners(self, images, training=False):
        raise NotImplementedError

    def call(self, inputs, training=False):
        return ensemble_of(self.learners(_images(inputs), training=training))

    def learner_embeddings(self, inputs, training=False):
        """``[M, B, D/M]``: every learner's unit-norm embedding of every image."""
        return self.learners(_images(inputs), training=training)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        # Slots built now: created inside the first trace they make tf.function trace twice.
        self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        compile_from_config(self, config)

    def terms(self, learners, labels):
        """``{"metric_loss": Σ_m L_metric(labels, B_m), "divergence_loss": L_div}`` (unweighted)."""
        if self.global_batch:
            per_image, labels = gather_replicas(tf.transpose(learners, [1, 0, 2]), labels)
            learners = tf.transpose(per_image, [1, 0, 2])
        terms = {}
        if self._metric_fn is not None:
            labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
            terms["metric_loss"] = tf.add_n([
                tf.cast(self._metric_fn(labels, learners[m]), tf.float32)
                for m in range(self.num_learners)])
        if self._divergence_on:
            terms["divergence_loss"] = divergence_loss(learners, self.divergence_margin)
        return terms

    def total_loss(self, terms):
        weights = {"metric_loss": 1.0, "divergence_loss": self.divergence_weight}
        return tf.add_n([weights[k] * v for k, v in terms.items()])

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            learners = self.learners(_images(x), training=True)
            terms = self.terms(tf.cast(learners, tf.float32), y)
            loss = self.total_loss(terms)
            # The terms are the same global loss on every replica (after the gather) or a
            # per-replica mean: 1/N either way gives the true gradient after the SUM all-reduce.
            scaled = self.optimizer.scale_loss(scale_for_replicas(loss))
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return update_trackers(self._trackers, loss, terms)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        terms = self.terms(tf.cast(self.learners(_images(x), training=False), tf.float32), y)
        return update_trackers(self._trackers, self.total_loss(terms), terms)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def _loss_config(self):
        return {
            "metric_loss": serialize_loss(self._metric_loss_arg),
            "divergence_weight": self.divergence_weight,
            "divergence_margin": self.divergence_margin,
            "global_batch": self.global_batch,
        }

    @classmethod
    def _loss_from_config(cls, config):
        config["metric_loss"] = deserialize_loss(config.get("metric_loss"))
        return config


# ---------------------------------------------------------------------------------------- ABE-M

@keras.saving.register_keras_serializable(package="tfembed")
class AttentionEnsemble(_EnsembleModel):
    """ABE-M: M attention masks over one spatial extractor S, one shared embedding function G.

    Args:
      base: the embedder whose network is split (a functional ``keras.Model`` images →
        ``[B, D/M]``, e.g. ``build_embedder("inception_v3", 512 // M)``, or a ``.keras`` path).
        Its output size is each learner's; S, G and the trunk's initial weights come from it.
      num_learners: M.
      branch: layer (or stage alias) where S ends and G starts; default: the backbone's
        ``default_branch`` (the end of the stride-8 part, as 002's pool3).
      attention_blocks: number of backbone blocks after the branch copied into the trunk C;
        default: up to the next stage output (002's five inception(4x) modules).
      attention_end: explicit last layer of the trunk (overrides ``attention_blocks``).
      metric_loss: L_metric applied to every learner and summed (Eq. 8): a loss name, Loss
        object or ``fn(labels, embeddings)``; default the contrastive loss, margin 1 (Eq. 10).
      divergence_weight: λ_div (1 in 002). divergence_margin: m_div (1 in 002).
      global_batch: compute the losses on the all-gathered batch under ``tf.distribute``.

    ``call`` returns the ensemble embedding ``[B, D]``; :meth:`learner_outputs` returns the
    learner embeddings ``[M, B, D/M]`` and the masks ``[B, h, w, M, C]``.
    Logs: ``loss``, ``metric_loss`` (the sum over learners), ``divergence_loss``.
    """

    def __init__(self, base, num_learners=8, branch=None, attention_blocks=None,
                 attention_end=None, metric_loss="contrastive", divergence_weight=1.0,
                 divergence_margin=1.0, global_batch=True, name="attention_ensemble", **kwargs):
        super().__init__(num_learners, metric_loss, divergence_weight, divergence_margin,
                         global_batch, name, **kwargs)
        self.base = load_embedder(base)
        spatial, global_embedding, self.branch = split_embedder(self.base, branch)
        self.attention_blocks = attention_blocks
        self.attention_end = attention_end or trunk_end(self.base, self.branch,
                                                        attention_blocks)
        _layer(self.base, self.attention_end, "attention_end")
        trunk = keras.Model(spatial.output, self.base.get_layer(self.attention_end).output)
        self.trunk = stride_free_copy(trunk, "attention_")
        s_shape, c_shape = tuple(spatial.output.shape), tuple(self.trunk.output.shape)
        if s_shape[1:3] != c_shape[1:3] or None in s_shape[1:]:
            raise ValueError(f"the attention trunk {self.branch!r} → {self.attention_end!r} "
                             f"maps {s_shape} to {c_shape}; its mask must keep S's spatial size")
        self.feature_shape = s_shape[1:]
        # A'_1..A'_M as one 1×1 convolution with M·C filters (Glorot init, as in 002 §4).
        self.attention_heads = keras.layers.Conv2D(
            self.num_learners * s_shape[-1], 1, activation="sigmoid", name="attention_heads")
        self.attention_heads.build(c_shape)
        # S and G share the base's layers: held untracked so no weight is tracked twice.
        self._parts = Untracked(spatial=spatial, global_embedding=global_embedding)
        self.built = True

    def masks(self, features, training=False):
        """``[B, h, w, M, C]`` attention masks A_m(S(x)) of the spatial features ``features``."""
        a = self.attention_heads(self.trunk(features, training=training))
        h, w, c = self.feature_shape
        return tf.reshape(tf.cast(a, features.dtype), [-1, h, w, self.num_learners, c])

    def _learners_and_masks(self, images, training):
        features = self._parts.spatial(images, training=training)
        masks = self.masks(features, training=training)
        h, w, c = self.feature_shape
        attended = features[:, :, :, None, :] * masks                    # S(x) ∘ A_m(S(x))
        # Learners folded into the batch: one pass of G over M·B rows.
        folded = tf.reshape(tf.transpose(attended, [3, 0, 1, 2, 4]), [-1, h, w, c])
        embeddings = self._parts.global_embedding(folded, training=training)
        d = embeddings.shape[-1]
        return tf.reshape(embeddings, [self.num_learners, -1, d]), masks

    def learners(self, images, training=False):
        return self._learners_and_masks(images, training)[0]

    def learner_outputs(self, inputs, training=False):
        """``{"learners": [M, B, d], "masks": [B, h, w, M, C], "ensemble": [B, M·d]}``."""
        learners, masks = self._learners_and_masks(_images(inputs), training)
        return {"learners": learners, "masks": masks, "ensemble": ensemble_of(learners)}

    def get_config(self):
        return {"name": self.name, "base": keras.saving.serialize_keras_object(self.base),
                "num_learners": self.num_learners, "branch": self.branch,
                "attention_blocks": self.attention_blocks, "attention_end": self.attention_end,
                **self._loss_config()}

    @classmethod
    def from_config(cls, config):
        config = cls._loss_from_config(dict(config))
        base = keras.saving.deserialize_keras_object(config.pop("base"))
        return cls(base, **config)


# -------------------------------------------------------------------------------------- M-heads

@keras.saving.register_keras_serializable(package="tfembed")
class MultiHeadEnsemble(_EnsembleModel):
    """The M-heads baseline of 002 (Fig. 1(a), after Lee et al.): one S, M separate G_m.

    Args:
      base: the embedder to split (its G is head 0; heads 1..M-1 are copies).
      num_heads: M.
      branch: as for :class:`AttentionEnsemble`.
      head_init: ``"copy"``: every head starts from the base's backbone weights (the pretrained
        network, as in 002) with its own random projection; ``"fresh"``: every head is
        initialised anew (random-init backbones: the heads then differ from the start).
      metric_loss, divergence_weight (0: no divergence loss, the paper's M-heads; > 0 is its
        Table 3 variant), divergence_margin, global_batch: as for :class:`AttentionEnsemble`.
    """

    def __init__(self, base, num_heads=8, branch=None, head_init="copy",
                 metric_loss="contrastive", divergence_weight=0.0, divergence_margin=1.0,
                 global_batch=True, name="multi_head_ensemble", **kwargs):
        super().__init__(num_heads, metric_loss, divergence_weight, divergence_margin,
                         global_batch, name, **kwargs)
        if head_init not in ("copy", "fresh"):
            raise ValueError(f"head_init must be 'copy' or 'fresh', got {head_init!r}")
        self.head_init = head_init
        self.base = load_embedder(base)
        spatial, global_embedding, self.branch = split_embedder(self.base, branch)
        self.heads = [self._copy_head(global_embedding, m) for m in range(1, self.num_learners)]
        self._parts = Untracked(spatial=spatial, global_embedding=global_embedding)
        self.built = True

    def _copy_head(self, global_embedding, m):
        prefix = f"head{m}_"
        head = keras.models.clone_model(global_embedding, clone_function=lambda layer: (
            layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})))
        if self.head_init == "copy":
            for layer in global_embedding.layers:
                if layer.get_weights() and layer.name != "embedding_dense":
                    head.get_layer(prefix + layer.name).set_weights(layer.get_weights())
        return head

    def learners(self, images, training=False):
        features = self._parts.spatial(images, training=training)
        heads = [self._parts.global_embedding, *self.heads]
        return tf.stack([h(features, training=training) for h in heads])

    def get_config(self):
        return {"name": self.name, "base": keras.saving.serialize_keras_object(self.base),
                "num_heads": self.num_learners, "branch": self.branch,
                "head_init": self.head_init, **self._loss_config()}

    @classmethod
    def from_config(cls, config):
        config = cls._loss_from_config(dict(config))
        base = keras.saving.deserialize_keras_object(config.pop("base"))
        return cls(base, **config)


# ------------------------------------------------------------------------------------- builders

def _base(backbone, num_learners, embedding_dim, input_shape, weights, pooling, backbone_kwargs,
          resize_size=None, freeze_batchnorm=False):
    if embedding_dim % num_learners:
        raise ValueError(f"embedding_dim {embedding_dim} is not a multiple of the {num_learners} "
                         "learners (each learner embeds into embedding_dim / M dimensions)")
    return build_embedder(backbone, embedding_dim // num_learners, input_shape=input_shape,
                          weights=weights, pooling=pooling, resize_size=resize_size,
                          freeze_batchnorm=freeze_batchnorm, **(backbone_kwargs or {}))


def build_attention_ensemble(backbone, num_learners=8, embedding_dim=512,
                             input_shape=(224, 224, 3), weights=None, pooling="avg",
                             backbone_kwargs=None, resize_size=None, freeze_batchnorm=False,
                             **kwargs):
    """ABE-M on a registered backbone: ``embedding_dim`` is the ensemble's (D); each learner
    gets D/M; ``freeze_batchnorm`` as ``build_embedder``'s (the attention trunk's copies too).
    ``kwargs`` go to :class:`AttentionEnsemble` (branch, attention_blocks, losses)."""
    base = _base(backbone, num_learners, embedding_dim, input_shape, weights, pooling,
                 backbone_kwargs, resize_size, freeze_batchnorm)
    return AttentionEnsemble(base, num_learners=num_learners, **kwargs)


def build_multihead_ensemble(backbone, num_heads=8, embedding_dim=512, input_shape=(224, 224, 3),
                             weights=None, pooling="avg", backbone_kwargs=None, resize_size=None,
                             freeze_batchnorm=False, **kwargs):
    """M-heads on a registered backbone (D/M per head); ``head_init`` defaults to "copy" with
    pretrained ``weights`` and "fresh" without; ``freeze_batchnorm`` as ``build_embedder``'s."""
    base = _base(backbone, num_heads, embedding_dim, input_shape, weights, pooling,
                 backbone_kwargs, resize_size, freeze_batchnorm)
    kwargs.setdefault("head_init", "copy" if weights else "fresh")
    return MultiHeadEnsemble(base, num_heads=num_heads, **kwargs)
