"""Optimizers with coupled (L2) weight decay, as PyTorch, Caffe and MXNet define ``weight_decay``.

Keras' ``weight_decay`` argument is *decoupled* (Loshchilov & Hutter): after the update, every
variable is shrunk by ``lr · wd · w``. The frameworks the papers used add the decay to the
gradient instead, before the optimizer's own update:

    g ← g + wd · w          (torch.optim.SGD / Adam ``weight_decay``, MXNet ``wd``, Caffe)

With SGD the two differ only in how momentum carries the decay; with Adam they differ a lot: the
coupled term is divided by ``sqrt(v̂)`` like the gradient, while the decoupled one is not (at
003's Adam lr 3e-5 and wd 5e-4 Keras' decoupled decay shrinks a weight by 1.5e-8 per step).

:class:`CoupledSGD` and :class:`CoupledAdam` are ``keras.optimizers.SGD`` / ``Adam`` whose update
step sees ``g + l2_weight_decay · w``; everything else (schedules, clipping, EMA, gradient
accumulation, ``LossScaleOptimizer`` wrapping, ``tf.distribute``) is Keras' own. The decay term
is added inside ``update_step``, which Keras runs once per variable on the already all-reduced
gradient (under MirroredStrategy: on each replica's copy of the variable, all equal), so N
replicas take exactly the one-device step. ``None`` gradients are filtered out by Keras before
``update_step``: a variable without a gradient is neither updated nor decayed (as in PyTorch).

Which variables decay (``l2_exclude``): PyTorch decays every parameter handed to the optimizer
(003's recipes: nothing excluded). MXNet's optimizer, given the parameter names (``Module`` passes
them), sets the decay multiplier to 0 for every parameter whose name does not end in ``_weight``
or ``_gamma`` (MXNet ``Optimizer.set_wd_mult`` documentation), i.e. biases and BatchNorm betas are
not decayed; ``l2_exclude=("bias", "beta")`` reproduces that for Keras' variable names
(``kernel``, ``bias``, ``gamma``, ``beta``, ``embeddings``…; BatchNorm's moving statistics are
not trainable and never decay). Substrings are matched against the variable's own name (the last
component of its path, ``variable.name``), so a layer called ``bias_adapter`` does not exclude its
kernel — like MXNet, which looks at the name's suffix.

Momentum: Keras' SGD keeps ``m ← μ m − lr g; w ← w + m`` (the learning rate inside the buffer),
as MXNet and Caffe do; PyTorch keeps ``b ← μ b + g; w ← w − lr b``. They are the same steps while
the learning rate is constant and differ only right after a step-decay boundary.

Adam's epsilon: Keras adds ε to ``sqrt(v)`` before the bias correction ("epsilon hat"), PyTorch to
``sqrt(v̂)`` after it; Keras' ε is PyTorch's ε · sqrt(1 − β₂ᵗ). With ε ≪ |g| the steps agree to
float32 precision (tests/test_optimizers.py).
"""

import keras
import tensorflow as tf

__all__ = ["CoupledAdam", "CoupledSGD", "WEIGHT_DECAY_MODES"]

#: ``train.weight_decay_mode`` values.
WEIGHT_DECAY_MODES = ("decoupled", "coupled")


class _CoupledDecay:
    """Mixin: ``update_step`` sees ``gradient + l2_weight_decay · variable``."""

    def _init_decay(self, l2_weight_decay, l2_exclude):
        l2_weight_decay = float(l2_weight_decay or 0.0)
        if l2_weight_decay < 0:
            raise ValueError(f"l2_weight_decay must be >= 0, got {l2_weight_decay}")
        if isinstance(l2_exclude, str):
            l2_exclude = [l2_exclude]
        self.l2_weight_decay = l2_weight_decay
        # Tuples: Keras' attribute tracking would wrap lists (checkpointed state must not be).
        self.l2_exclude = tuple(str(s) for s in (l2_exclude or ()))
        self._l2_mask = ()

    def decays(self, variable):
        """Whether ``variable`` gets the coupled decay (its name matches no ``l2_exclude``)."""
        name = str(getattr(variable, "name", "")).split("/")[-1].split(":")[0]
        return not any(s in name for s in self.l2_exclude)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._l2_mask = tuple(self.decays(v) for v in variables)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2_weight_decay and self._l2_mask[self._get_variable_index(variable)]:
            if isinstance(gradient, tf.IndexedSlices):  # a sparse gradient decays every row
                gradient = tf.convert_to_tensor(gradient)
            gradient = tf.cast(gradient, variable.dtype)
            gradient = gradient + tf.cast(self.l2_weight_decay, variable.dtype) * variable
        return super().update_step(gradient, variable, learning_rate)

    def _decay_config(self, config):
        config.update(l2_weight_decay=self.l2_weight_decay, l2_exclude=list(self.l2_exclude))
        return config


@keras.saving.register_keras_serializable(package="tfembed")
class CoupledSGD(_CoupledDecay, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with coupled L2 weight decay (``g + wd · w``, as MXNet's and
    PyTorch's ``SGD(weight_decay=wd)``).

    Args:
      learning_rate, momentum, nesterov: as ``keras.optimizers.SGD``.
      l2_weight_decay: the coefficient ``wd`` added to the gradient (0: plain SGD).
      l2_exclude: substrings of variable names that do not decay (MXNet's default behaviour is
        ``("bias", "beta")``; PyTorch's is nothing).
      **kwargs: other ``keras.optimizers.SGD`` arguments (``weight_decay`` there is Keras'
        decoupled decay, applied in addition if set).

    Example:

    >>> opt = CoupledSGD(0.01, momentum=0.9, l2_weight_decay=1e-4, l2_exclude=["bias", "beta"])
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2_weight_decay=0.0,
                 l2_exclude=(), **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         **kwargs)
        self._init_decay(l2_weight_decay, l2_exclude)

    def get_config(self):
        return self._decay_config(super().get_config())


@keras.saving.register_keras_serializable(package="tfembed")
class CoupledAdam(_CoupledDecay, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with coupled L2 weight decay (``g + wd · w`` enters ``m`` and
    ``v``, as ``torch.optim.Adam(weight_decay=wd)``; not AdamW).

    Args:
      learning_rate, beta_1, beta_2, epsilon, amsgrad: as ``keras.optimizers.Adam`` (``epsilon``
        is Keras' "epsilon hat", see the module docstring).
      l2_weight_decay, l2_exclude: as :class:`CoupledSGD`.
      **kwargs: other ``keras.optimizers.Adam`` arguments.

    Example:

    >>> opt = CoupledAdam(3e-5, l2_weight_decay=5e-4)   # 003: PyTorch Adam, weight_decay 5e-4
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, l2_weight_decay=0.0, l2_exclude=(), **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, **kwargs)
        self._init_decay(l2_weight_decay, l2_exclude)

    def get_config(self):
        return self._decay_config(super().get_config())
