"""The spec language: validation messages, shape inference, serialization, hashing, initializers."""

import numpy as np
import pytest

from nnparity.models import WORKLOADS, get_spec
from nnparity.specs import (
    L2, SGD, Adam, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input, MaxPool2D, ModelSpec,
    Momentum, Orthogonal, ScaledNormal, Schedule, SimpleRNN, SoftmaxCrossEntropy, SpecError,
    TruncatedNormal, Uniform, Zeros,
)

NETWORK_MODELS = [name for name, w in WORKLOADS.items() if w.factory is not None]


def small_spec(*layers, **changes) -> ModelSpec:
    fields = dict(
        name="small",
        dataset="moons",
        layers=[Input(shape=(2,)), *layers] if layers else [Input(shape=(2,)), Dense(units=2)],
        loss=SoftmaxCrossEntropy(reduction="sum"),
        optimizer=SGD(learning_rate=0.1),
        schedule=Schedule(steps=5),
    )
    fields.update(changes)
    return ModelSpec(**fields)


@pytest.mark.parametrize(
    "layers, fragment",
    [
        ((Dense(units=0),), "units must be a positive integer, got 0"),
        ((Dense(units=3, activation="swish"),), "unknown activation 'swish'"),
        ((Dense(units=3, activation="leaky_relu"),), "needs an explicit negative_slope"),
        ((Conv2D(filters=4, kernel_size=(3, 3)),), "conv2d needs a (channels, height, width) input"),
        ((Dropout(rate=1.0), Dense(units=2)), "dropout rate must be in [0, 1), got 1.0"),
        ((SimpleRNN(units=4),), "simple_rnn needs a (time, features) input"),
        ((Dense(units=2, activation="tanh"),), "must have activation 'linear', not 'tanh'"),
    ],
)
def test_invalid_layer_names_layer_and_value(layers, fragment):
    with pytest.raises(SpecError) as error:
        small_spec(*layers).validate()
    assert fragment in str(error.value)


def test_invalid_layer_message_names_layer():
    spec = small_spec(Dense(units=-1, name="hidden"), Dense(units=2))
    with pytest.raises(SpecError, match="layer 'hidden'"):
        spec.validate()


def test_window_larger_than_input_rejected():
    spec = ModelSpec(
        name="tiny-conv",
        dataset="digits",
        layers=[Input(shape=(1, 5, 5)), Conv2D(filters=2, kernel_size=(9, 9)), Flatten(), Dense(units=2)],
        loss=SoftmaxCrossEntropy(),
        optimizer=SGD(),
        schedule=Schedule(steps=1),
    )
    with pytest.raises(SpecError, match="window 9 is larger than the padded height 5"):
        spec.validate()


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(optimizer=SGD(learning_rate=0)), "learning_rate must be > 0"),
        (dict(optimizer=Adam(epsilon_form="hat")), "epsilon_form must be 'corrected'"),
        (dict(optimizer=Momentum(form="lasagne")), "form must be 'torch' or 'keras'"),
        (dict(schedule=Schedule(steps=5, epochs=2)), "exactly one of steps and epochs"),
        (dict(schedule=Schedule(steps=5, batch_size=0)), "batch_size must be a positive integer"),
        (dict(regularization=L2(factor=0.1, params="biases")), "params must be 'weights' or 'all'"),
        (dict(loss=SoftmaxCrossEntropy(reduction="avg")), "reduction must be 'sum' or 'mean'"),
    ],
)
def test_invalid_training_fields(changes, fragment):
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        small_spec(**changes).validate()


def test_first_layer_must_be_input():
    spec = small_spec(layers=[Dense(units=2)])
    with pytest.raises(SpecError, match="first layer must be an Input layer"):
        spec.validate()


def test_mnist_cnn_shapes_and_layout():
    spec = get_spec("mnist-cnn")
    shapes = spec.shapes()
    assert shapes[1] == (32, 28, 28)
    assert shapes[2] == (32, 14, 14)
    assert shapes[4] == (64, 7, 7)
    assert shapes[5] == (3136,)
    layout = {p.key: p.shape for p in spec.param_layout()}
    assert layout["conv2d1/W"] == (32, 1, 5, 5)
    assert layout["dense1/W"] == (3136, 1024)
    assert spec.parameter_count() == 3274634


def test_same_padding_puts_extra_pixel_after():
    conv = Conv2D(filters=1, kernel_size=(4, 4), padding="same", name="c")
    assert conv.explicit_padding((1, 8, 8)) == ((1, 2), (1, 2))
    pool = MaxPool2D(pool_size=(3, 3), stride=(2, 2), padding="valid", name="p")
    assert pool.output_shape((1, 28, 28)) == (1, 13, 13)


@pytest.mark.parametrize("name", NETWORK_MODELS)
def test_round_trip_json_and_toml(name):
    spec = get_spec(name)
    from_json = ModelSpec.from_json(spec.to_json())
    from_toml = ModelSpec.from_toml(spec.to_toml())
    assert from_json.to_dict() == spec.to_dict()
    assert from_toml.to_dict() == spec.to_dict()
    assert from_toml.content_hash() == spec.content_hash()


def test_content_hash_tracks_training_fields():
    spec = get_spec("moons-mlp")
    assert spec.replace(description="other words").content_hash() == spec.content_hash()
    assert spec.replace(dtype="float64").content_hash() != spec.content_hash()
    assert spec.replace(optimizer=SGD(learning_rate=0.02)).content_hash() != spec.content_hash()


def test_unknown_fields_are_rejected_on_read():
    data = get_spec("moons-mlp").to_dict()
    data["layers"][1]["unit"] = 3
    with pytest.raises(SpecError, match=r"unknown fields \['unit'\]"):
        ModelSpec.from_dict(data)
    data = get_spec("moons-mlp").to_dict()
    data["optimizer"]["kind"] = "adagrad"
    with pytest.raises(SpecError, match="unknown optimizer kind 'adagrad'"):
        ModelSpec.from_dict(data)


def test_scaled_normal_draws_like_seeded_randn():
    spec = get_spec("moons-mlp")
    params = spec.initial_params()
    np.random.seed(0)
    expected_w1 = np.random.randn(2, 3) / np.sqrt(2)
    expected_w2 = np.random.randn(3, 2) / np.sqrt(3)
    np.testing.assert_array_equal(params["dense1/W"], expected_w1)
    np.testing.assert_array_equal(params["dense2/W"], expected_w2)
    np.testing.assert_array_equal(params["dense1/b"], np.zeros(3))


@pytest.mark.parametrize(
    "init, check",
    [
        (TruncatedNormal(std=0.1, bound=2.0), lambda w: np.abs(w).max() <= 0.2 and 0.08 < w.std() < 0.1),
        (Uniform(low=-0.05, high=0.05), lambda w: w.min() >= -0.05 and w.max() < 0.05 and abs(w.mean()) < 0.005),
        (GlorotUniform(), lambda w: np.abs(w).max() <= np.sqrt(6 / (200 + 300))),
        (ScaledNormal(), lambda w: abs(w.std() - 1 / np.sqrt(200)) < 0.005),
        (Zeros(), lambda w: not w.any()),
    ],
)
def test_initializer_statistics(init, check):
    w = init.sample(np.random.RandomState(1), (200, 300), 200, 300)
    assert w.shape == (200, 300)
    assert check(w)


def test_orthogonal_has_orthonormal_rows_times_gain():
    w = Orthogonal(gain=2.0).sample(np.random.RandomState(1), (64, 128), 64, 128)
    np.testing.assert_allclose(w @ w.T, 4.0 * np.eye(64), atol=1e-10)


def test_truncated_normal_rejects_then_redraws():
    w = TruncatedNormal(std=1.0, bound=0.5).sample(np.random.RandomState(0), (1000,), 1, 1)
    assert np.abs(w).max() <= 0.5
    assert len(np.unique(w)) == 1000


def test_flops_count_dense():
    spec = get_spec("mnist-softmax")
    assert spec.forward_flops() == 2 * 784 * 10
