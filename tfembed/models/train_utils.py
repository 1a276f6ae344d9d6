"""Small pieces every tfembed trainer (``train_step`` override) shares.

DESIGN §5 in code: losses computed by hand are scaled for the replica count the way Keras scales a
``keras.losses.Loss``; pairwise losses can see the global batch through a differentiable
all-gather; teachers are frozen and always run in inference mode.
"""

import keras

# The replica helpers live in tfembed.ops (losses use them too); re-exported for the trainers.
from tfembed.ops import gather_replicas, num_replicas, scale_for_replicas  # noqa: F401


class Untracked:
    """Holds models Keras must not track as the trainer's own (they share layers with a tracked
    model; tracking them twice would duplicate weights in saves and in the variable lists)."""

    def __init__(self, **models):
        self.__dict__.update(models)


def compile_from_config(model, config):
    """Keras' ``Model.compile_from_config`` for trainers that override ``compile`` (Keras skips
    those with a warning): a loaded trainer comes back compiled as it was saved, its optimizer
    state restorable, ready to continue ``fit``."""
    # The paper recipes compile with tfembed>CoupledAdam / CoupledSGD; Keras imports only its
    # own packages while deserialising, so the classes must be registered before.
    import tfembed.optimizers  # noqa: F401, PLC0415

    model.compile(**keras.saving.deserialize_keras_object(config))


def freeze(model):
    """Marks a teacher non-trainable (its weights never reach an optimizer) and returns it."""
    model.trainable = False
    return model


def output_dim(model):
    """The last dimension of a single-output model's output (None if unknown)."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        shape = None
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None:
        return None
    return shape[-1]


def as_loss_fn(loss, default_kwargs=None):
    """A pure ``fn(a, b) -> scalar`` from a registry name, a tfembed Loss object or a callable.

    A ``keras.losses.Loss`` is used through its ``call`` (unscaled): the trainer scales for the
    replica count itself, once, after any all-gather.
    """
    if isinstance(loss, str):
        from tfembed.losses import get_loss  # noqa: PLC0415 (losses import models lazily)
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


def update_trackers(trackers, loss, terms):
    """Updates a trainer's ``{"loss": Mean, <term>: Mean}`` with a step's total and terms and
    returns the logs (every tracker's result)."""
    trackers["loss"].update_state(loss)
    for key, value in terms.items():
        trackers[key].update_state(value)
    return {name: m.result() for name, m in trackers.items()}
