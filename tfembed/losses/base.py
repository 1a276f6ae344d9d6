"""The thin ``keras.losses.Loss`` every tfembed loss function is wrapped in.

A tfembed loss is a pure function ``fn(y_true, y_pred, **hyper_parameters) -> scalar`` (labels and
embeddings for metric losses, teacher and student embeddings for distillation losses). The class
around it only stores the hyper-parameters so that ``model.compile(loss=TripletSemiHardLoss())``
works and the loss survives ``model.save`` / ``keras.models.load_model``.

Unlike ``keras.losses.LossFunctionWrapper`` it does not reshape ``y_true`` to the rank of
``y_pred``: labels stay ``[batch]`` and the function already returns the batch's scalar.
"""

import keras


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

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(self._fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
