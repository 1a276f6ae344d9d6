"""The thin ``keras.losses.Loss`` every tfembed loss function is wrapped in.

A tfembed loss is a pure function ``fn(y_true, y_pred, **hyper_parameters) -> scalar`` (labels and
embeddings for metric losses, teacher and student embeddings for distillation losses). The class
around it only stores the hyper-parameters so that ``model.compile(loss=TripletSemiHardLoss())``
works and the loss survives ``model.save`` / ``keras.models.load_model``.

Unlike ``keras.losses.LossFunctionWrapper`` it does not reshape ``y_true`` to the rank of
``y_pred``: labels stay ``[batch]`` and the function already returns the batch's scalar.
"""

import keras


def _scale_scalar_for_replicas(loss):
    """Keras divides a loss by the replica count in its reduction, but leaves a loss that is
    already a scalar unreduced *and unscaled*: every tfembed loss returns the batch's scalar, so
    under N replicas ``compile``/``fit`` would sum N unscaled per-replica losses into N× the
    gradient. Scale it here, as Keras scales its own losses (DESIGN §5)."""
    from tfembed.ops import scale_for_replicas  # noqa: PLC0415 (ops is TensorFlow-only)

    if len(loss.shape) == 0:
        return scale_for_replicas(loss)
    return loss


def as_loss_fn(loss, default_kwargs=None):
    """A pure ``fn(a, b) -> scalar`` from a registry name, a tfembed Loss object or a callable.

    A ``keras.losses.Loss`` is used through its ``call`` (unscaled): the trainer scales for the
    replica count itself, once, after any all-gather.
    """
    if isinstance(loss, str):
        from tfembed.losses import get_loss  # noqa: PLC0415 (the registry imports this module)
        loss = get_loss(loss, **(default_kwargs or {}))
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    if callable(loss):
        return loss
    raise TypeError(f"expected a loss name, a keras.losses.Loss or a callable, got {loss!r}")


def serialize_loss(loss):
    """JSON-able form of a loss given as a name or a Loss object.

    A plain callable has no serializable form: it is recorded as ``{"callable": name}`` so that
    saving still works (checkpoints keep the weights) and :func:`deserialize_loss` refuses it
    with a message, instead of the reloaded model silently losing the term.
    """
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return keras.saving.serialize_keras_object(loss)
    return {"callable": getattr(loss, "__name__", repr(loss))}


def deserialize_loss(config):
    if config is None or isinstance(config, str):
        return config
    if "callable" in config:
        raise ValueError(f"this model's loss was the plain callable {config['callable']!r}, which "
                         "cannot be deserialized; pass a loss name or a Loss object")
    import tfembed.losses  # noqa: F401,PLC0415  (registers the loss classes)
    return keras.saving.deserialize_keras_object(config)


class EmbeddingLoss(keras.losses.Loss):
    """Base class: ``call(y_true, y_pred)`` is ``fn(y_true, y_pred, **kwargs)``.

    Args:
      fn: the pure loss function.
      name: loss name (used for logging and serialization).
      reduction: kept for Keras compatibility; the functions already return a scalar, which
        every Keras reduction leaves unchanged.
      dtype: computation dtype of the inputs (float32 by default, also under mixed precision,
        so distance-based losses stay numerically stable).
      **kwargs: the function's hyper-parameters, serialized by ``get_config``.
    """

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None, **kwargs):
        super().__init__(name=name or fn.__name__, reduction=reduction, dtype=dtype or "float32")
        self.fn = fn
        self._fn_kwargs = kwargs

    def __call__(self, y_true, y_pred, sample_weight=None):
        return _scale_scalar_for_replicas(super().__call__(y_true, y_pred, sample_weight))

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(self._fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfembed")
class GlobalBatchLoss(keras.losses.Loss):
    """``loss`` computed on the global batch under ``tf.distribute`` (DESIGN §5).

    Under ``MirroredStrategy`` Keras runs ``compile``'s loss once per replica on the replica's
    slice of the batch, so a pairwise loss (triplet, contrastive, multi-similarity...) would only
    compare images that landed on the same device: with 8 replicas a 32×4 batch becomes eight
    independent 4×4 batches. This wrapper all-gathers labels and embeddings over the replicas
    first, so every replica computes the one-device loss of the whole batch. The gradients stay
    right: Keras divides each replica's loss by the replica count, the all-gather's gradient sums
    the replicas' upstream gradients for this replica's rows, and the optimizer sums the weight
    gradients over replicas, which together give the one-device gradient. With one replica it is
    ``loss`` itself.

    Args:
      loss: the wrapped loss (a ``keras.losses.Loss``, e.g. a tfembed ``EmbeddingLoss``).
      name: loss name (default: the wrapped loss's).

    Example:

    ```python
    with tf.distribute.MirroredStrategy().scope():
        model = build_embedder("resnet50", 128)
        model.compile("adam", loss=GlobalBatchLoss(TripletSemiHardLoss(margin=0.2)))
    ```
    """

    def __init__(self, loss, name=None, reduction="sum_over_batch_size", dtype=None):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not isinstance(loss, keras.losses.Loss):
            raise TypeError(f"GlobalBatchLoss wraps a keras.losses.Loss, got {loss!r}")
        super().__init__(name=name or loss.name, reduction=reduction,
                         dtype=dtype or loss.dtype)
        self.loss = loss

    def __call__(self, y_true, y_pred, sample_weight=None):
        return _scale_scalar_for_replicas(super().__call__(y_true, y_pred, sample_weight))

    def call(self, y_true, y_pred):
        from tfembed.ops import gather_replicas  # noqa: PLC0415 (ops is TensorFlow-only)

        y_true, y_pred = gather_replicas(y_true, y_pred)
        return self.loss.call(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config["loss"] = keras.saving.serialize_keras_object(self.loss)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
