"""Small pieces every tfembed trainer (a ``train_step`` override) shares.

DESIGN §5 in code: losses computed by hand are scaled for the replica count the way Keras scales a
``keras.losses.Loss``; pairwise losses can see the global batch through a differentiable
all-gather; teachers are frozen and always run in inference mode.
"""

import keras

# The replica helpers live in tfembed.ops (losses use them too); re-exported for the trainers.
from tfembed.ops import gather_replicas, num_replicas, scale_for_replicas  # noqa: F401
# Loss arguments (a name, a Loss object or a callable) are resolved by tfembed.losses.base.
from tfembed.losses.base import as_loss_fn, deserialize_loss, serialize_loss  # noqa: F401


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


def update_trackers(trackers, loss, terms):
    """Updates a trainer's ``{"loss": Mean, <term>: Mean}`` with a step's total and terms and
    returns the logs (every tracker's result)."""
    trackers["loss"].update_state(loss)
    for key, value in terms.items():
        trackers[key].update_state(value)
    return {name: m.result() for name, m in trackers.items()}
