"""Finite-difference checks of the NumPy adapter's gradients, layer by layer and loss by loss, in float64.

Each case builds a small spec, draws random inputs away from kinks (ReLU
at 0, max-pool ties, clipping bounds), and compares ``loss_and_grads``
against central differences of the same objective for every parameter.
"""

import numpy as np
import pytest

from nnparity.backends.base import RunOptions
from nnparity.backends.numpy.adapter import NumpyAdapter
from nnparity.specs import (
    L2, SGD, BinaryCrossEntropy, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input, MaxPool2D,
    ModelSpec, Schedule, SimpleRNN, SoftmaxCrossEntropy, SquaredError, Uniform,
)

STEP = 1e-5
TOLERANCE = 1e-6
# Central differences carry about 1e-10 of absolute noise here, so elements
# smaller than FLOOR are judged by absolute error against FLOOR instead.
FLOOR = 1e-3


def build(layers, loss=None, regularization=None, seed=0):
    spec = ModelSpec(
        name="gradcheck", dataset="none", layers=layers,
        loss=loss or SoftmaxCrossEntropy(reduction="sum"), optimizer=SGD(learning_rate=0.1),
        schedule=Schedule(steps=1), regularization=regularization, dtype="float64", seed=seed,
    ).validate()
    adapter = NumpyAdapter(spec, RunOptions(dtype="float64"))
    adapter.build(spec.initial_params())
    return adapter


def relative_error(analytic, numeric):
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), FLOOR)
    return float(np.max(np.abs(analytic - numeric) / scale))


def check_gradients(adapter, x, y, masks=None):
    """Compare every parameter gradient against central differences; return the worst relative error."""
    loss, grads = adapter.loss_and_grads(x, y, masks)
    worst = 0.0
    for array, p in zip(adapter.params, adapter.layout):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + STEP
            plus, _ = adapter.loss_and_grads(x, y, masks)
            array[index] = saved - STEP
            minus, _ = adapter.loss_and_grads(x, y, masks)
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * STEP)
        error = relative_error(grads[p.key], numeric)
        assert error < TOLERANCE, f"{p.key}: relative error {error:.2e}"
        worst = max(worst, error)
    return loss, worst


def wide_uniform():
    return Uniform(low=-1.0, high=1.0)


@pytest.mark.parametrize("activation, slope", [
    ("linear", None), ("tanh", None), ("sigmoid", None), ("relu", None), ("leaky_relu", 0.1),
])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_activations(activation, slope, use_bias):
    rng = np.random.default_rng(1)
    adapter = build([
        Input(shape=(4,)),
        Dense(units=5, activation=activation, negative_slope=slope, use_bias=use_bias,
              weight_init=wide_uniform(), bias_init=wide_uniform()),
        Dense(units=3, weight_init=wide_uniform(), bias_init=wide_uniform()),
    ])
    x = rng.normal(size=(6, 4))
    check_gradients(adapter, x, rng.integers(0, 3, 6))


def test_dense_on_sequence():
    rng = np.random.default_rng(2)
    adapter = build(
        [Input(shape=(3, 4)), Dense(units=2, activation="tanh", weight_init=wide_uniform(),
                                    bias_init=wide_uniform())],
        loss=SquaredError(reduction="mean", half=False),
    )
    check_gradients(adapter, rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 3, 2)))


@pytest.mark.parametrize("padding, stride", [
    ("valid", (1, 1)), ("same", (1, 1)), ("same", (2, 2)), ("valid", (2, 1)), (((1, 0), (2, 1)), (2, 2)),
])
def test_conv2d(padding, stride):
    rng = np.random.default_rng(3)
    adapter = build([
        Input(shape=(2, 7, 6)),
        Conv2D(filters=3, kernel_size=(3, 2), stride=stride, padding=padding, activation="tanh",
               weight_init=GlorotUniform(), bias_init=wide_uniform()),
        Conv2D(filters=2, kernel_size=(2, 2), padding="same", weight_init=GlorotUniform(),
               bias_init=wide_uniform()),
        Flatten(),
        Dense(units=3, weight_init=GlorotUniform()),
    ])
    check_gradients(adapter, rng.normal(size=(3, 2, 7, 6)), rng.integers(0, 3, 3))


def test_conv2d_leaky_relu():
    rng = np.random.default_rng(4)
    adapter = build([
        Input(shape=(1, 5, 5)),
        Conv2D(filters=2, kernel_size=(3, 3), activation="leaky_relu", negative_slope=0.01,
               weight_init=GlorotUniform(), bias_init=wide_uniform()),
        Flatten(),
        Dense(units=2, weight_init=GlorotUniform()),
    ])
    check_gradients(adapter, rng.normal(size=(4, 1, 5, 5)), rng.integers(0, 2, 4))


@pytest.mark.parametrize("pool, stride, padding, size", [
    ((2, 2), None, "valid", (6, 6)),
    ((2, 2), None, "valid", (7, 5)),
    ((2, 2), None, "same", (7, 5)),
    ((3, 3), (2, 2), "valid", (7, 7)),
    ((3, 3), (2, 2), "same", (8, 6)),
    ((3, 2), (1, 2), "valid", (6, 6)),
])
def test_maxpool(pool, stride, padding, size):
    rng = np.random.default_rng(5)
    adapter = build([
        Input(shape=(2, *size)),
        Conv2D(filters=2, kernel_size=(2, 2), padding="same", activation="tanh",
               weight_init=GlorotUniform(), bias_init=wide_uniform()),
        MaxPool2D(pool_size=pool, stride=stride, padding=padding),
        Flatten(),
        Dense(units=3, weight_init=GlorotUniform()),
    ])
    # Continuous random inputs make ties within a window vanishingly unlikely.
    check_gradients(adapter, rng.normal(size=(3, 2, *size)), rng.integers(0, 3, 3))


def test_maxpool_first_maximum_gets_tied_gradient():
    adapter = build([
        Input(shape=(1, 4, 4)),
        MaxPool2D(pool_size=(2, 2), stride=(2, 2)),
        Flatten(),
        Dense(units=4, weight_init=GlorotUniform()),
    ], loss=SquaredError(reduction="sum", half=True))
    x = np.array([[[[1.0, 3.0, 2.0, 2.0],
                    [3.0, 3.0, 2.0, 2.0],
                    [0.0, -1.0, 5.0, 4.0],
                    [-1.0, 0.0, 4.0, 5.0]]]])
    pool = adapter.layers[0]

    adapter.loss_and_grads(x, np.zeros((1, 4)), None)
    dx = pool.backward(np.ones((1, 1, 2, 2)))
    expected = np.array([[[[0.0, 1.0, 1.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0],
                           [1.0, 0.0, 1.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0]]]])
    # dx is in the adapter's (C, N, H, W) layout; with one channel and one sample it reads the same.
    np.testing.assert_array_equal(np.asarray(dx).transpose(1, 0, 2, 3), expected)


def test_maxpool_overlapping_tie_adds_once_per_window():
    adapter = build([
        Input(shape=(1, 3, 5)),
        MaxPool2D(pool_size=(3, 3), stride=(2, 2)),
        Flatten(),
        Dense(units=2, weight_init=GlorotUniform()),
    ], loss=SquaredError(reduction="sum", half=True))
    x = np.zeros((1, 1, 3, 5))
    x[0, 0, 1, 2] = 7.0
    pool = adapter.layers[0]

    adapter.loss_and_grads(x, np.zeros((1, 2)), None)
    dx = np.asarray(pool.backward(np.array([[[[1.0, 10.0]]]])))
    # Both overlapping windows pick the shared maximum at (1, 2), so it gets 1 + 10.
    assert dx[0, 0, 1, 2] == 11.0
    assert np.count_nonzero(dx) == 1


def test_flatten_and_dropout_with_mask():
    rng = np.random.default_rng(6)
    adapter = build([
        Input(shape=(2, 4, 4)),
        Conv2D(filters=3, kernel_size=(3, 3), padding="same", activation="sigmoid",
               weight_init=GlorotUniform(), bias_init=wide_uniform()),
        Dropout(rate=0.5),
        Flatten(),
        Dense(units=6, activation="tanh", weight_init=GlorotUniform(), bias_init=wide_uniform()),
        Dropout(rate=0.25),
        Dense(units=3, weight_init=GlorotUniform()),
    ])
    masks = [
        (rng.random((3, 3, 4, 4)) >= 0.5) / 0.5,
        (rng.random((3, 6)) >= 0.25) / 0.75,
    ]
    loss_masked, _ = check_gradients(adapter, rng.normal(size=(3, 2, 4, 4)), rng.integers(0, 3, 3), masks)
    loss_plain, _ = adapter.loss_and_grads(rng.normal(size=(3, 2, 4, 4)), rng.integers(0, 3, 3), None)
    assert loss_masked != loss_plain


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_simple_rnn(activation, use_bias):
    rng = np.random.default_rng(7)
    adapter = build([
        Input(shape=(5, 3)),
        SimpleRNN(units=4, activation=activation, use_bias=use_bias, input_init=wide_uniform(),
                  recurrent_init=wide_uniform(), bias_init=wide_uniform()),
        Dense(units=1, activation="sigmoid", use_bias=False, weight_init=wide_uniform()),
    ], loss=SquaredError(reduction="sum", half=True))
    check_gradients(adapter, rng.normal(size=(2, 5, 3)), rng.random((2, 5, 1)))


def mlp(loss, regularization=None):
    return build([
        Input(shape=(4,)),
        Dense(units=5, activation="tanh", weight_init=wide_uniform(), bias_init=wide_uniform()),
        Dense(units=3, weight_init=wide_uniform(), bias_init=wide_uniform()),
    ], loss=loss, regularization=regularization)


@pytest.mark.parametrize("loss", [
    SoftmaxCrossEntropy(reduction="sum"), SoftmaxCrossEntropy(reduction="mean"),
    BinaryCrossEntropy(reduction="sum", epsilon=1e-7), BinaryCrossEntropy(reduction="mean", epsilon=1e-7),
    SquaredError(reduction="sum", half=True), SquaredError(reduction="mean", half=False),
], ids=lambda loss: f"{loss.kind}-{loss.reduction}")
def test_losses(loss):
    rng = np.random.default_rng(8)
    adapter = mlp(loss)
    x = rng.normal(size=(6, 4))
    y = rng.normal(size=(6, 3)) if isinstance(loss, SquaredError) else rng.integers(0, 3, 6)
    check_gradients(adapter, x, y)


def test_binary_cross_entropy_clipping_stops_gradient():
    rng = np.random.default_rng(9)
    adapter = mlp(BinaryCrossEntropy(reduction="sum", epsilon=0.2))
    x = rng.normal(size=(8, 4)) * 3.0
    y = rng.integers(0, 3, 8)
    probs = np.exp(adapter.predict(x))
    probs /= probs.sum(axis=1, keepdims=True)
    clipped = (probs < 0.2) | (probs > 0.8)
    # The case only tests clipping if some probabilities are clipped and none sits near a bound.
    assert clipped.any()
    assert not clipped.all()
    assert np.min(np.abs(probs - 0.2)) > 1e-4
    assert np.min(np.abs(probs - 0.8)) > 1e-4
    check_gradients(adapter, x, y)

    # A row whose every probability is clipped gets no gradient at all.
    all_clipped = build([
        Input(shape=(4,)), Dense(units=2, weight_init=wide_uniform(), bias_init=wide_uniform()),
    ], loss=BinaryCrossEntropy(reduction="sum", epsilon=0.2))
    all_clipped.params[0][...] = 0.0
    all_clipped.params[1][...] = [10.0, -10.0]
    _, grads = all_clipped.loss_and_grads(rng.normal(size=(3, 4)), np.array([0, 1, 0]), None)
    assert not np.any(grads["dense1/W"])
    assert not np.any(grads["dense1/b"])


@pytest.mark.parametrize("regularization", [
    L2(factor=0.05, half=True, params="weights"), L2(factor=0.05, half=False, params="all"),
], ids=["weights-half", "all-full"])
def test_l2(regularization):
    rng = np.random.default_rng(10)
    adapter = mlp(SoftmaxCrossEntropy(reduction="mean"), regularization)
    x, y = rng.normal(size=(6, 4)), rng.integers(0, 3, 6)
    check_gradients(adapter, x, y)

    plain = mlp(SoftmaxCrossEntropy(reduction="mean"))
    loss_reg, grads_reg = adapter.loss_and_grads(x, y, None)
    loss_plain, grads_plain = plain.loss_and_grads(x, y, None)
    params = adapter.get_params()
    scale = regularization.gradient_scale
    for key in params:
        is_weight = key.endswith("/W")
        expected = grads_plain[key] + (scale * params[key] if regularization.applies_to(is_weight) else 0.0)
        np.testing.assert_allclose(grads_reg[key], expected, rtol=1e-13, atol=1e-15)
    assert loss_reg > loss_plain
