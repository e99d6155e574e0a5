"""The NumPy reference adapter: optimizer formulas, objective, dtypes, dropout modes, threads, real data."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_info

from nnparity.backends.base import BackendUnavailable, RunOptions, UnsupportedSpec
from nnparity.backends.numpy.adapter import NumpyAdapter
from nnparity.specs import (
    L2, SGD, Adam, Constant, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input, MaxPool2D, ModelSpec,
    Momentum, Schedule, SimpleRNN, SoftmaxCrossEntropy, SquaredError, TruncatedNormal, Uniform,
)
from nnparity.specs import objective
from nnparity.testing import make_adapter


def tiny_spec(optimizer, regularization=None, dtype="float64", loss=None, layers=None):
    return ModelSpec(
        name="tiny", dataset="none",
        layers=layers or [
            Input(shape=(3,)),
            Dense(units=4, activation="tanh", weight_init=Uniform(low=-1.0, high=1.0),
                  bias_init=Uniform(low=-0.5, high=0.5)),
            Dense(units=2, weight_init=Uniform(low=-1.0, high=1.0)),
        ],
        loss=loss or SoftmaxCrossEntropy(reduction="mean"), optimizer=optimizer,
        schedule=Schedule(steps=3), regularization=regularization, dtype=dtype, seed=3,
    ).validate()


def build(spec, **options):
    adapter = NumpyAdapter(spec, RunOptions(dtype=spec.dtype, **options))
    adapter.build(spec.initial_params())
    return adapter


def tiny_batch(rows=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 3)), rng.integers(0, 2, rows)


# Optimizers: three steps against the docstring formulas written out here -------------------


def run_against_formula(optimizer, update):
    """Train 3 steps; ``update(p, g, state, t)`` returns the expected new parameter."""
    spec = tiny_spec(optimizer, L2(factor=0.1, half=False, params="weights"))
    adapter = build(spec)
    x, y = tiny_batch()
    expected = adapter.get_params()
    state = {key: {} for key in expected}

    for t in range(1, 4):
        _, grads = adapter.loss_and_grads(x, y, None)
        adapter.train_step(x, y, None)
        for key in expected:
            expected[key] = update(expected[key], grads[key], state[key], t)
        actual = adapter.get_params()
        for key in expected:
            np.testing.assert_allclose(actual[key], expected[key], rtol=1e-14, atol=1e-16, err_msg=f"step {t} {key}")


def test_sgd_formula():
    run_against_formula(SGD(learning_rate=0.3), lambda p, g, s, t: p - 0.3 * g)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_torch_form(nesterov):
    lr, m = 0.2, 0.9

    def update(p, g, s, t):
        s["b"] = m * s.get("b", 0.0) + g
        return p - lr * (g + m * s["b"]) if nesterov else p - lr * s["b"]

    run_against_formula(Momentum(learning_rate=lr, momentum=m, nesterov=nesterov, form="torch"), update)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_keras_form(nesterov):
    lr, m = 0.2, 0.9

    def update(p, g, s, t):
        s["v"] = m * s.get("v", 0.0) - lr * g
        return p + m * s["v"] - lr * g if nesterov else p + s["v"]

    run_against_formula(Momentum(learning_rate=lr, momentum=m, nesterov=nesterov, form="keras"), update)


@pytest.mark.parametrize("form", ["corrected", "uncorrected"])
def test_adam_forms(form):
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-3

    def update(p, g, s, t):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
        if form == "corrected":
            return p - lr * (s["m"] / (1 - b1 ** t)) / (np.sqrt(s["v"] / (1 - b2 ** t)) + eps)
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        return p - lr_t * s["m"] / (np.sqrt(s["v"]) + eps)

    run_against_formula(Adam(learning_rate=lr, beta1=b1, beta2=b2, epsilon=eps, epsilon_form=form), update)


def test_adam_forms_differ():
    x, y = tiny_batch()
    finals = []
    for form in ("corrected", "uncorrected"):
        adapter = build(tiny_spec(Adam(learning_rate=0.05, epsilon=0.1, epsilon_form=form)))
        for _ in range(3):
            adapter.train_step(x, y, None)
        finals.append(adapter.get_params()["dense1/W"])
    assert not np.allclose(finals[0], finals[1], rtol=1e-6)


# Objective, dtype and inspection -------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-13), ("float32", 1e-5)])
def test_train_step_loss_is_objective_before_update(dtype, rtol):
    spec = tiny_spec(SGD(learning_rate=0.5), L2(factor=0.05, half=True, params="all"), dtype=dtype)
    adapter = build(spec)
    x, y = tiny_batch()
    x = x.astype(dtype)

    for _ in range(3):
        expected = objective.objective(spec, adapter.predict(x), y, adapter.get_params())
        loss = adapter.to_float(adapter.train_step(x, y, None))
        assert isinstance(loss, float)
        assert loss == pytest.approx(expected, rel=rtol)


def test_float32_stays_float32():
    spec = tiny_spec(Adam(learning_rate=0.01), dtype="float32")
    adapter = build(spec)
    x, y = tiny_batch()
    adapter.train_step(x.astype(np.float32), y, None)

    assert adapter.predict(x.astype(np.float32)).dtype == np.float32
    assert all(p.dtype == np.float32 for p in adapter.get_params().values())
    _, grads = adapter.loss_and_grads(x.astype(np.float32), y, None)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(m.dtype == np.float32 for m in adapter.optimizer.first + adapter.optimizer.second)


def test_float32_cnn_activations_stay_float32():
    adapter = make_adapter("numpy", digits_cnn_spec(), dtype="float32", dropout_mode="native")
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    adapter.train_step(x, y, None)

    activations = x.transpose(1, 0, 2, 3)
    for layer in adapter.layers:
        activations = layer.forward(activations, None, True)
        assert activations.dtype == np.float32, layer.name
    _, grads = adapter.loss_and_grads(x, y, None)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_get_params_returns_canonical_copies():
    spec = tiny_spec(SGD(learning_rate=0.1))
    initial = spec.initial_params()
    adapter = build(spec)
    params = adapter.get_params()
    assert list(params) == ["dense1/W", "dense1/b", "dense2/W", "dense2/b"]
    for key, value in initial.items():
        np.testing.assert_array_equal(params[key], value)

    params["dense1/W"][...] = 0.0
    assert np.any(adapter.get_params()["dense1/W"])


def test_predict_any_batch_size():
    adapter = build(tiny_spec(SGD(learning_rate=0.1)))
    x, _ = tiny_batch(rows=23)
    whole = adapter.predict(x)
    pieces = np.concatenate([adapter.predict(x[start:start + 7]) for start in range(0, 23, 7)])
    np.testing.assert_allclose(pieces, whole, rtol=1e-14)
    assert adapter.predict(x[:1]).shape == (1, 2)


def test_softmax_cross_entropy_extreme_logits():
    adapter = build(tiny_spec(SGD(learning_rate=0.1)))
    adapter.params[2][...] *= 1e4
    x, y = tiny_batch()
    expected = objective.objective(adapter.spec, adapter.predict(x), y, adapter.get_params())
    loss, grads = adapter.loss_and_grads(x, y, None)
    assert np.isfinite(loss)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_mismatched_initial_params_rejected():
    spec = tiny_spec(SGD(learning_rate=0.1))
    adapter = NumpyAdapter(spec, RunOptions(dtype="float64"))
    params = spec.initial_params()
    params["dense1/W"] = params["dense1/W"].T
    with pytest.raises(ValueError, match="dense1/W"):
        adapter.build(params)


def test_non_cpu_device_unavailable():
    with pytest.raises(BackendUnavailable, match="'cuda' is not available to the numpy backend: NumPy computes on the "
                                                 "CPU; request --devices cpu"):
        NumpyAdapter(tiny_spec(SGD(learning_rate=0.1)), RunOptions(device="cuda"))


def test_options_are_checked_by_the_base_adapter():
    spec = tiny_spec(SGD(learning_rate=0.1))
    with pytest.raises(UnsupportedSpec, match="numpy: dtype 'float16' is not supported; use one of float32, float64"):
        NumpyAdapter(spec, RunOptions(dtype="float16"))
    with pytest.raises(ValueError, match="numpy: dropout mode must be one of exact, native, got 'random'"):
        NumpyAdapter(spec, RunOptions(dropout_mode="random"))


# Dropout modes -----------------------------------------------------------------------------


def dropout_spec():
    return tiny_spec(SGD(learning_rate=0.1), layers=[
        Input(shape=(3,)),
        Dense(units=8, activation="relu", weight_init=GlorotUniform()),
        Dropout(rate=0.5),
        Dense(units=2, weight_init=GlorotUniform()),
    ])


def test_exact_mode_needs_masks():
    adapter = build(dropout_spec())
    x, y = tiny_batch()
    with pytest.raises(ValueError, match="native"):
        adapter.train_step(x, y, None)
    with pytest.raises(ValueError, match="expected"):
        adapter.train_step(x, y, [np.ones((5, 7))])
    with pytest.raises(ValueError, match="one mask per Dropout layer"):
        adapter.train_step(x, y, [])


def test_mask_multiplies_layer_input():
    adapter = build(dropout_spec())
    x, y = tiny_batch()
    ones = [np.ones((5, 8))]
    assert adapter.loss_and_grads(x, y, ones)[0] == adapter.loss_and_grads(x, y, None)[0]

    mask = [np.zeros((5, 8))]
    _, grads = adapter.loss_and_grads(x, y, mask)
    assert not np.any(grads["dense2/W"])
    assert not np.any(grads["dense1/W"])


def test_native_mode_draws_inverted_masks():
    adapter = build(dropout_spec(), dropout_mode="native")
    layer = adapter.dropouts[0]
    mask = layer.draw_mask(4000)
    assert set(np.unique(mask)) == {0.0, 2.0}
    assert abs(np.mean(mask == 0.0) - 0.5) < 0.03

    x, y = tiny_batch()
    loss = adapter.train_step(x, y, None)
    assert np.isfinite(loss)


# Threads ------------------------------------------------------------------------------------


def test_thread_limit_held_and_recorded():
    adapter = build(tiny_spec(SGD(learning_rate=0.1)), threads=1)
    blas = [info for info in threadpool_info() if info["user_api"] == "blas"]
    assert blas, "no BLAS thread pool found to limit"
    assert all(info["num_threads"] == 1 for info in blas)
    description = adapter.describe()
    assert description["threads"] == 1
    assert description["dtype"] == "float64"
    adapter.close()


# Real data ----------------------------------------------------------------------------------


def digits_cnn_spec():
    weight, bias = TruncatedNormal(std=0.1, bound=2.0), Constant(value=0.1)
    return ModelSpec(
        name="digits-cnn", dataset="digits",
        layers=[
            Input(shape=(1, 8, 8)),
            Conv2D(filters=8, kernel_size=(3, 3), padding="same", activation="relu",
                   weight_init=weight, bias_init=bias),
            MaxPool2D(pool_size=(2, 2), padding="same"),
            Flatten(),
            Dense(units=32, activation="relu", weight_init=weight, bias_init=bias),
            Dropout(rate=0.25),
            Dense(units=10, weight_init=weight, bias_init=bias),
        ],
        loss=SoftmaxCrossEntropy(reduction="sum"),
        optimizer=Adam(learning_rate=3e-3, epsilon_form="uncorrected"),
        schedule=Schedule(batch_size=50, steps=150, shuffle_seed=0),
        seed=0,
    )


def test_digits_cnn_learns():
    digits = load_digits()
    x = (digits.images / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    y = digits.target
    train, test = slice(0, 1400), slice(1400, None)
    adapter = make_adapter("numpy", digits_cnn_spec(), dtype="float32", threads=1)

    from nnparity.testing import train_steps
    losses = train_steps(adapter, x[train], y[train], 150)

    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    accuracy = objective.accuracy(adapter.spec, adapter.predict(x[test]), y[test])
    assert accuracy > 0.85


def adder_batch(rng, count):
    """Bits of ``a``, ``b`` (inputs) and ``a + b`` (targets), least significant first, for a, b < 128."""
    a, b = rng.integers(0, 128, count), rng.integers(0, 128, count)
    bits = (np.stack([a, b, a + b], axis=1)[:, :, None] >> np.arange(8)) & 1
    return bits[:, :2].transpose(0, 2, 1).astype(np.float64), bits[:, 2, :, None].astype(np.float64)


def test_binary_adder_rnn_learns_addition():
    spec = ModelSpec(
        name="adder", dataset="binary-addition",
        layers=[
            Input(shape=(8, 2)),
            SimpleRNN(units=16, activation="sigmoid", use_bias=False,
                      input_init=Uniform(low=-1.0, high=1.0), recurrent_init=Uniform(low=-1.0, high=1.0)),
            Dense(units=1, activation="sigmoid", use_bias=False, weight_init=Uniform(low=-1.0, high=1.0)),
        ],
        loss=SquaredError(reduction="sum", half=True), optimizer=SGD(learning_rate=0.1),
        schedule=Schedule(batch_size=1, steps=10000), metric="all_bits",
    )
    rng = np.random.default_rng(0)
    x, y = adder_batch(rng, 10000)
    adapter = make_adapter("numpy", spec, dtype="float64")

    # One sample per step, as the classic Elman-network program trains; it learns after about 5000 steps.
    losses = [adapter.train_step(x[i:i + 1], y[i:i + 1], None) for i in range(10000)]
    assert np.mean(losses[-1000:]) < 0.05 * np.mean(losses[:1000])
    x_new, y_new = adder_batch(rng, 500)
    assert objective.accuracy(spec, adapter.predict(x_new), y_new) == 1.0


def test_invalid_targets_rejected():
    adapter = build(tiny_spec(SGD(learning_rate=0.1)))
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=">= 0"):
        adapter.loss_and_grads(x, np.array([0, 1, -1, 0, 1]), None)
    with pytest.raises(IndexError):
        adapter.loss_and_grads(x, np.array([0, 1, 2, 0, 1]), None)
    with pytest.raises(ValueError, match="expected"):
        adapter.loss_and_grads(x, y[:4], None)

    regression = build(tiny_spec(SGD(learning_rate=0.1), loss=SquaredError(reduction="mean")))
    with pytest.raises(ValueError, match="output's shape"):
        regression.loss_and_grads(x, np.zeros(5), None)


def test_predict_splits_large_conv_batches(monkeypatch):
    import nnparity.backends.numpy.adapter as numpy_adapter

    # The digits CNN's columns take 9 * 64 float64 values per sample; allow 3 samples per chunk.
    monkeypatch.setattr(numpy_adapter, "PREDICT_COLUMN_BYTES", 3 * 9 * 64 * 8)
    adapter = make_adapter("numpy", digits_cnn_spec(), dtype="float64")
    assert adapter.predict_chunk == 3
    x = np.random.default_rng(0).random((10, 1, 8, 8))

    whole = adapter.predict(x)
    one_by_one = np.concatenate([adapter._forward(x[i:i + 1], None, training=False) for i in range(10)])
    assert whole.shape == (10, 10)
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-12, atol=1e-14)
