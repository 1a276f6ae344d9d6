"""Coupled (L2) weight decay: CoupledSGD / CoupledAdam against numpy implementations of the PyTorch
formulas, ``train.weight_decay_mode`` in ``make_optimizer``, exclusions, serialization, replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfembed import losses as L
from tfembed.configs._base import base_config
from tfembed.optimizers import CoupledAdam, CoupledSGD
from tfembed.training.builders import make_optimizer

SHAPES = {"kernel": (3, 4), "bias": (4,), "gamma": (4,), "beta": (4,)}


def _variables(rng):
    return {name: keras.Variable(rng.normal(size=shape).astype("float32"), name=name)
            for name, shape in SHAPES.items()}


def _gradients(rng, steps):
    return [{name: rng.normal(scale=0.5, size=shape).astype("float32")
             for name, shape in SHAPES.items()} for _ in range(steps)]


def _run(optimizer, variables, gradients):
    names = list(variables)
    optimizer.build([variables[n] for n in names])
    for grads in gradients:
        optimizer.apply_gradients([(tf.constant(grads[n]), variables[n]) for n in names])
    return {n: variables[n].numpy() for n in names}


def torch_sgd(params, gradients, lr, momentum, wd, decayed):
    """torch.optim.SGD(lr, momentum, dampening=0, nesterov=False, weight_decay=wd), per step:
    d_p = g + wd·p; buf = d_p on the first step, else momentum·buf + d_p; p -= lr·buf."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    buf = {}
    for grads in gradients:
        for k, p in params.items():
            d_p = grads[k] + (wd * p if decayed(k) else 0.0)
            buf[k] = d_p if k not in buf else momentum * buf[k] + d_p
            params[k] = p - lr * buf[k]
    return params


def torch_adam(params, gradients, lr, beta1, beta2, eps, wd, decayed):
    """torch.optim.Adam(lr, betas, eps, weight_decay=wd), per step t: g' = g + wd·p;
    m = β1 m + (1−β1) g'; v = β2 v + (1−β2) g'²; m̂ = m/(1−β1ᵗ); v̂ = v/(1−β2ᵗ);
    p -= lr · m̂ / (sqrt(v̂) + eps)."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, grads in enumerate(gradients, start=1):
        for k, p in params.items():
            g = grads[k] + (wd * p if decayed(k) else 0.0)
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            m_hat = m[k] / (1 - beta1 ** t)
            v_hat = v[k] / (1 - beta2 ** t)
            params[k] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def _initial(variables):
    return {k: v.numpy().copy() for k, v in variables.items()}


def test_coupled_sgd_momentum_matches_the_pytorch_formula(rng):
    variables = _variables(rng)
    start = _initial(variables)
    grads = _gradients(rng, 4)
    # A large decay so that the L2 term dominates some updates (a wrong sign or a decoupled
    # decay would be far outside the tolerance).
    got = _run(CoupledSGD(0.1, momentum=0.9, l2_weight_decay=0.5), variables, grads)
    want = torch_sgd(start, grads, lr=0.1, momentum=0.9, wd=0.5, decayed=lambda k: True)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # Keras' own (decoupled) decay takes different steps: the test can fail.
    decoupled = _run(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.5),
                     _variables_like(start), grads)
    assert not np.allclose(decoupled["kernel"], want["kernel"], rtol=1e-3)


def _variables_like(values):
    return {k: keras.Variable(v.copy(), name=k) for k, v in values.items()}


def test_coupled_adam_matches_the_pytorch_formula(rng):
    variables = _variables(rng)
    start = _initial(variables)
    grads = _gradients(rng, 3)
    got = _run(CoupledAdam(0.01, l2_weight_decay=0.5), variables, grads)
    # Keras adds its epsilon (1e-7) to sqrt(v) before the bias correction, PyTorch to sqrt(v̂):
    # Keras' ε equals PyTorch's ε·sqrt(1 − β₂ᵗ). The numpy reference uses PyTorch's placement
    # with the same 1e-7; the denominators then differ by < 1e-7 against sqrt(v̂) ≈ |g'| ≳ 1e-2
    # (gradients of scale 0.5 plus the decay), a relative step difference < 1e-5, which is the
    # float32 tolerance used here.
    want = torch_adam(start, grads, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7, wd=0.5,
                      decayed=lambda k: True)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    no_decay = torch_adam(start, grads, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7, wd=0.0,
                          decayed=lambda k: True)
    assert not np.allclose(got["kernel"], no_decay["kernel"], rtol=1e-4)


def test_excluded_variables_do_not_decay(rng):
    variables = _variables(rng)
    start = _initial(variables)
    grads = _gradients(rng, 3)
    opt = CoupledSGD(0.1, momentum=0.9, l2_weight_decay=0.5, l2_exclude=["bias", "beta"])
    got = _run(opt, variables, grads)

    def decayed(k):
        return k not in ("bias", "beta")

    assert [opt.decays(variables[k]) for k in SHAPES] == [decayed(k) for k in SHAPES]
    want = torch_sgd(start, grads, lr=0.1, momentum=0.9, wd=0.5, decayed=decayed)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # The name is matched on the variable's own name, not on its layer's.
    layer = keras.layers.Dense(2, name="bias_adapter")
    layer.build((None, 3))
    assert opt.decays(layer.kernel) and not opt.decays(layer.bias)


def test_decoupled_mode_is_unchanged():
    t = base_config().train
    assert t.weight_decay_mode == "decoupled"
    t.weight_decay = 1e-3
    for name, cls in (("adam", keras.optimizers.Adam), ("sgd", keras.optimizers.SGD)):
        t.optimizer = name
        opt = make_optimizer(t)
        assert type(opt) is cls and opt.weight_decay == pytest.approx(1e-3)
    t.optimizer = "adamw"
    assert type(make_optimizer(t)) is keras.optimizers.AdamW
    # Same steps as Keras' own optimizer with the same arguments.
    t.optimizer = "sgd"
    rng = np.random.default_rng(1)
    start = _initial(_variables(rng))
    grads = _gradients(rng, 2)
    a = _run(make_optimizer(t), _variables_like(start), grads)
    b = _run(keras.optimizers.SGD(t.learning_rate, momentum=0.9, weight_decay=1e-3),
             _variables_like(start), grads)
    for k in SHAPES:
        np.testing.assert_array_equal(a[k], b[k])


def test_make_optimizer_coupled_mode():
    t = base_config().train
    t.weight_decay = 1e-4
    t.weight_decay_mode = "coupled"
    t.weight_decay_exclude = ["bias", "beta"]
    t.optimizer = "sgd"
    t.momentum = 0.9
    opt = make_optimizer(t)
    assert type(opt) is CoupledSGD and opt.weight_decay is None
    assert opt.l2_weight_decay == pytest.approx(1e-4) and opt.l2_exclude == ("bias", "beta")
    assert opt.momentum == pytest.approx(0.9)
    t.optimizer = "adam"
    opt = make_optimizer(t)
    assert type(opt) is CoupledAdam and opt.weight_decay is None
    t.optimizer = "adamw"
    with pytest.raises(ValueError, match="decoupled"):
        make_optimizer(t)
    t.weight_decay_mode = "l2"
    with pytest.raises(ValueError, match="weight_decay_mode"):
        make_optimizer(t)


def test_paper_recipes_use_coupled_decay():
    from tfembed.configs._cohort import paper_003
    from tfembed.configs._distill import paper_004

    c3 = paper_003("cub", ["md"])
    opt = make_optimizer(c3.train)
    assert type(opt) is CoupledAdam and opt.l2_weight_decay == pytest.approx(5e-4)
    assert opt.l2_exclude == ()   # PyTorch decays every parameter
    c4 = paper_004(["ml"])
    opt = make_optimizer(c4.train)
    assert type(opt) is CoupledSGD and opt.l2_weight_decay == pytest.approx(1e-4)
    assert opt.l2_exclude == ("bias", "beta")   # MXNet: only *_weight / *_gamma decay


@pytest.mark.parametrize("cls", [CoupledSGD, CoupledAdam])
def test_serialization_round_trip(cls, tmp_path):
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([10, 20], [0.1, 0.01, 0.001])
    kwargs = dict(momentum=0.9) if cls is CoupledSGD else dict(epsilon=1e-8)
    opt = cls(lr, l2_weight_decay=1e-4, l2_exclude=["bias"], **kwargs)
    config = keras.saving.serialize_keras_object(opt)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is cls and clone.get_config() == opt.get_config()
    assert clone.l2_weight_decay == 1e-4 and clone.l2_exclude == ("bias",)
    # In a saved model's compile configuration too.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=opt, loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is cls
    assert loaded.optimizer.l2_weight_decay == 1e-4 and loaded.optimizer.l2_exclude == ("bias",)
    assert int(loaded.optimizer.iterations) == 1


def test_loss_scale_optimizer_wrapping(rng):
    """mixed_float16's LossScaleOptimizer unscales, then runs the inner optimizer's step."""
    start = _initial(_variables(rng))
    grads = _gradients(rng, 2)
    plain = _run(CoupledSGD(0.1, momentum=0.9, l2_weight_decay=0.5),
                 _variables_like(start), grads)
    wrapped = keras.optimizers.LossScaleOptimizer(
        CoupledSGD(0.1, momentum=0.9, l2_weight_decay=0.5), initial_scale=1024.0)
    scaled = [{k: g * 1024.0 for k, g in step.items()} for step in grads]
    got = _run(wrapped, _variables_like(start), scaled)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], plain[k], rtol=1e-6, atol=1e-7, err_msg=k)
    # compile under mixed_float16 wraps the coupled optimizer; the step runs and decays.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(
            keras.layers.Dense(4)(inputs)))
        model.compile(CoupledSGD(0.1, l2_weight_decay=0.5), loss="mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.optimizer.inner_optimizer, CoupledSGD)
        before = [w.numpy() for w in model.trainable_weights]
        # Zero targets and inputs: the loss gradient of the kernels is 0, only decay moves them.
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)
        after = [w.numpy() for w in model.trainable_weights]
        np.testing.assert_allclose(after[0], before[0] * (1 - 0.1 * 0.5), rtol=1e-6)
    finally:
        keras.config.set_dtype_policy(previous)


def _model(optimizer_name):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(6, kernel_initializer=keras.initializers.GlorotUniform(1),
                           bias_initializer=keras.initializers.RandomNormal(seed=2))(x)
    # LayerNormalization (per sample, unlike BatchNorm's per-replica statistics): a gamma and
    # a beta, the latter excluded from the decay.
    x = keras.layers.LayerNormalization(beta_initializer=keras.initializers.RandomNormal(seed=3))(x)
    model = keras.Model(inputs, keras.layers.UnitNormalization()(x))
    t = base_config().train
    t.optimizer = optimizer_name
    t.learning_rate = 0.05
    t.weight_decay = 0.1
    t.weight_decay_mode = "coupled"
    t.weight_decay_exclude = ["beta"]
    model.compile(make_optimizer(t), loss=L.GlobalBatchLoss(L.TripletSemiHardLoss(0.2)))
    return model


def _fit(strategy, optimizer_name, batch):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = _model(optimizer_name)
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), epochs=1, verbose=0)
    return [w.numpy() for w in model.trainable_weights]


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_two_replicas_equal_one_device(optimizer_name, two_replica_strategy):
    images = np.random.default_rng(3).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    batch = (images, np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int64))
    one = _fit(tf.distribute.get_strategy(), optimizer_name, batch)
    two = _fit(two_replica_strategy, optimizer_name, batch)
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
