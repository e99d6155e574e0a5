"""The JAX adapter against the NumPy reference, in float64, step by step; plus its own contracts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from nnparity.backends.base import BackendUnavailable  # noqa: E402
from nnparity.backends.registry import get_backend  # noqa: E402
from nnparity.datasets import DatasetMissing, load_dataset  # noqa: E402
from nnparity.harness.schedule import dropout_masks  # noqa: E402
from nnparity.models import get_spec  # noqa: E402
from nnparity.specs import (  # noqa: E402
    L2, SGD, Adam, BinaryCrossEntropy, Constant, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input,
    MaxPool2D, ModelSpec, Momentum, Schedule, SimpleRNN, SoftmaxCrossEntropy, SquaredError, Uniform,
)
from nnparity.testing import make_adapter, max_relative_difference, train_steps  # noqa: E402

TOLERANCE = 1e-6
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def workload_data(spec: ModelSpec):
    try:
        data = load_dataset(spec.dataset, spec.dataset_options)
    except DatasetMissing as error:
        pytest.skip(str(error))
    return data.x_train.astype(np.float64), data.y_train


def assert_params_close(reference: dict, candidate: dict, tolerance: float = TOLERANCE) -> None:
    assert sorted(reference) == sorted(candidate)
    for key in reference:
        assert candidate[key].shape == reference[key].shape, key
        # Relative to the tensor's largest entry: single entries near zero
        # (Adam moves every weight by about lr) would make a per-element
        # relative difference meaningless.
        scale = max(float(np.max(np.abs(reference[key]))), 1e-12)
        difference = float(np.max(np.abs(reference[key] - candidate[key]))) / scale
        assert difference < tolerance, f"{key}: relative difference {difference:.3g}"


def compare_training(spec: ModelSpec, x, y, steps: int, tolerance: float = TOLERANCE):
    reference = make_adapter("numpy", spec, "float64")
    candidate = make_adapter("jax", spec, "float64")
    reference_losses = train_steps(reference, x, y, steps)
    candidate_losses = train_steps(candidate, x, y, steps)
    for step, (expected, actual) in enumerate(zip(reference_losses, candidate_losses)):
        difference = max_relative_difference(expected, actual)
        assert difference < tolerance, f"step {step}: loss {actual!r} vs reference {expected!r}"
    assert_params_close(reference.get_params(), candidate.get_params(), tolerance)
    return reference, candidate


# Workloads --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["moons-mlp", "mnist-softmax", "mnist-cnn", "binary-adder-rnn"])
def test_workload_matches_reference(model):
    spec = get_spec(model)
    x, y = workload_data(spec)
    reference, candidate = compare_training(spec, x, y, steps=5)

    sample = x[:64]
    assert max_relative_difference(reference.predict(sample), candidate.predict(sample), floor=1e-6) < TOLERANCE


@pytest.mark.slow
def test_mnist_cnn_200_steps_match_reference():
    spec = get_spec("mnist-cnn")
    x, y = workload_data(spec)
    compare_training(spec, x, y, steps=200)


# Small specs: every loss, optimizer, L2 variant and layer kind -------------------


def small_spec(layers, loss=None, optimizer=None, regularization=None, input_shape=(6,)) -> ModelSpec:
    return ModelSpec(
        name="small",
        dataset="none",
        layers=[Input(shape=input_shape), *layers],
        loss=loss or SoftmaxCrossEntropy(reduction="sum"),
        optimizer=optimizer or SGD(learning_rate=0.05),
        regularization=regularization,
        schedule=Schedule(batch_size=8, steps=6, shuffle_seed=3),
        seed=7,
    )


def small_mlp(**changes) -> ModelSpec:
    layers = [
        Dense(units=5, activation="tanh", weight_init=GlorotUniform(), bias_init=Uniform(-0.1, 0.1)),
        Dense(units=3, weight_init=GlorotUniform(), bias_init=Uniform(-0.1, 0.1)),
    ]
    return small_spec(layers, **changes)


def small_data(spec: ModelSpec, n: int = 24):
    rng = np.random.RandomState(11)
    x = rng.randn(n, *spec.layers[0].shape)
    if x.ndim == 4:
        # A blank band, as on MNIST's borders: the first conv then outputs
        # relu(bias) there, so pooling windows hold tied maxima.
        x[:, :, :, :5] = 0.0
    if isinstance(spec.loss, SquaredError):
        y = rng.uniform(0, 1, size=(n, *spec.shapes()[-1]))
    else:
        y = rng.randint(0, spec.shapes()[-1][-1], size=n)
    return x, y


SMALL_SPECS = {
    "ce-sum": small_mlp(),
    "ce-mean": small_mlp(loss=SoftmaxCrossEntropy(reduction="mean")),
    "bce-mean": small_mlp(loss=BinaryCrossEntropy(reduction="mean", epsilon=1e-7)),
    # A large epsilon clips many probabilities, so the zero-gradient rule is exercised.
    "bce-sum-clipped": small_mlp(loss=BinaryCrossEntropy(reduction="sum", epsilon=0.3)),
    "squared-half-sum": small_mlp(loss=SquaredError(reduction="sum", half=True)),
    "squared-mean": small_mlp(loss=SquaredError(reduction="mean", half=False)),
    "l2-half-weights": small_mlp(regularization=L2(factor=0.05, half=True, params="weights")),
    "l2-all": small_mlp(regularization=L2(factor=0.05, half=False, params="all")),
    "momentum-torch": small_mlp(optimizer=Momentum(learning_rate=0.05, momentum=0.9, form="torch")),
    "nesterov-torch": small_mlp(optimizer=Momentum(0.05, momentum=0.9, nesterov=True, form="torch")),
    "momentum-keras": small_mlp(optimizer=Momentum(learning_rate=0.05, momentum=0.9, form="keras")),
    "nesterov-keras": small_mlp(optimizer=Momentum(0.05, momentum=0.9, nesterov=True, form="keras")),
    "adam-corrected": small_mlp(optimizer=Adam(learning_rate=0.01, epsilon_form="corrected")),
    "adam-uncorrected": small_mlp(optimizer=Adam(learning_rate=0.01, epsilon=1e-3, epsilon_form="uncorrected")),
    "leaky-relu-dropout": small_spec([
        Dense(units=7, activation="leaky_relu", negative_slope=0.1, weight_init=GlorotUniform()),
        Dropout(rate=0.4),
        Dense(units=3, weight_init=GlorotUniform()),
    ]),
    "conv-pool-relu": small_spec(
        [
            Conv2D(filters=3, kernel_size=(3, 3), padding="same", activation="relu",
                   weight_init=GlorotUniform(), bias_init=Constant(0.05)),
            MaxPool2D(pool_size=(2, 2), padding="same"),
            Conv2D(filters=2, kernel_size=(2, 3), stride=(2, 1), padding=((1, 0), (0, 2)),
                   activation="leaky_relu", negative_slope=0.01, weight_init=GlorotUniform()),
            MaxPool2D(pool_size=(3, 3), stride=(2, 2)),
            Flatten(),
            Dense(units=3, weight_init=GlorotUniform()),
        ],
        input_shape=(2, 12, 13),
        regularization=L2(factor=0.01, half=False, params="weights"),
        optimizer=Adam(learning_rate=0.01, epsilon_form="uncorrected"),
    ),
    "rnn-tanh-bias": small_spec(
        [
            SimpleRNN(units=4, activation="tanh", input_init=Uniform(-0.5, 0.5),
                      recurrent_init=Uniform(-0.5, 0.5), bias_init=Uniform(-0.1, 0.1)),
            Dense(units=2, activation="sigmoid", weight_init=Uniform(-1, 1)),
        ],
        input_shape=(5, 3),
        loss=SquaredError(reduction="mean", half=True),
        optimizer=Momentum(learning_rate=0.1, momentum=0.5, form="keras"),
    ),
}


@pytest.mark.parametrize("case", sorted(SMALL_SPECS))
def test_small_spec_gradients_match_reference(case):
    spec = SMALL_SPECS[case]
    x, y = small_data(spec)
    reference = make_adapter("numpy", spec, "float64")
    candidate = make_adapter("jax", spec, "float64")
    masks = dropout_masks(spec.replace(dtype="float64"), 0, len(x), "float64") or None

    expected_loss, expected_grads = reference.loss_and_grads(x, y, masks)
    loss, grads = candidate.loss_and_grads(x, y, masks)

    assert max_relative_difference(expected_loss, loss) < 1e-10
    assert sorted(grads) == sorted(expected_grads)
    for key in expected_grads:
        assert max_relative_difference(expected_grads[key], grads[key], floor=1e-8) < 1e-8, key


@pytest.mark.parametrize("case", sorted(SMALL_SPECS))
def test_small_spec_training_matches_reference(case):
    spec = SMALL_SPECS[case]
    x, y = small_data(spec)
    compare_training(spec, x, y, steps=6, tolerance=1e-9)


# Max pooling's gradient on tied windows ------------------------------------------


def first_maximum_gradient(x, upstream, window, stride, padding):
    """Route each window's upstream gradient to its first maximum in row-major order (the spec's rule)."""
    padded = np.pad(x, ((0, 0), (0, 0), *padding), constant_values=-np.inf)
    grad = np.zeros_like(padded)
    for n, c, i, j in np.ndindex(*upstream.shape):
        top, left = i * stride[0], j * stride[1]
        patch = padded[n, c, top:top + window[0], left:left + window[1]]
        row, col = np.unravel_index(np.argmax(patch), patch.shape)
        grad[n, c, top + row, left + col] += upstream[n, c, i, j]
    (top, bottom), (left, right) = padding
    return grad[:, :, top:padded.shape[2] - bottom, left:padded.shape[3] - right]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "window, stride, padding",
    [((2, 2), (2, 2), ((0, 0), (0, 0))), ((2, 2), (2, 2), ((0, 1), (0, 1))), ((3, 3), (2, 2), ((0, 0), (0, 0)))],
)
def test_max_pool_ties_first_maximum(dtype, window, stride, padding):
    from nnparity.backends.jax.network import max_pool2d
    from nnparity.backends.jax.runtime import jax

    rng = np.random.RandomState(0)
    # Values from {0, 1, 2}: most windows hold several equal maxima.
    x = rng.randint(0, 3, size=(2, 3, 9, 9)).astype(dtype)
    pooled = max_pool2d(x, window, stride, padding)
    upstream = rng.randn(*pooled.shape).astype(dtype)

    grad = jax.jit(jax.grad(lambda x: (max_pool2d(x, window, stride, padding) * upstream).sum()))(x)

    expected = first_maximum_gradient(x.astype(np.float64), upstream.astype(np.float64), window, stride, padding)
    # Overlapping windows add float32 contributions in another order: allow rounding.
    np.testing.assert_allclose(np.asarray(grad, dtype=np.float64), expected, rtol=0, atol=1e-6)


# Dropout modes ---------------------------------------------------------------------


def test_exact_mode_without_masks_raises():
    spec = SMALL_SPECS["leaky-relu-dropout"]
    x, y = small_data(spec)
    adapter = make_adapter("jax", spec, "float64")
    with pytest.raises(ValueError, match="no masks were passed"):
        adapter.train_step(x, y, None)


def test_native_dropout_seeded_and_fresh():
    spec = SMALL_SPECS["leaky-relu-dropout"]
    x, y = small_data(spec)
    first = make_adapter("jax", spec, "float64", dropout_mode="native")
    second = make_adapter("jax", spec, "float64", dropout_mode="native")
    undropped = make_adapter("jax", spec, "float64").loss_and_grads(x, y, None)[0]

    first_losses = [first.to_float(first.train_step(x, y, None)) for _ in range(3)]
    second_losses = [second.to_float(second.train_step(x, y, None)) for _ in range(3)]

    assert first_losses == second_losses
    assert first_losses[0] != undropped
    # Same parameters, fresh masks: the loss differs from step to step even
    # on the same batch, which it could not if the key were reused.
    assert len(set(first_losses)) == 3


# Float32, devices, registration, threads --------------------------------------------


def test_float32_tracks_reference():
    spec = get_spec("mnist-softmax")
    x, y = workload_data(spec)
    reference = make_adapter("numpy", spec, "float32")
    candidate = make_adapter("jax", spec, "float32")

    reference_losses = train_steps(reference, x, y, 3)
    candidate_losses = train_steps(candidate, x, y, 3)

    assert max_relative_difference(reference_losses, candidate_losses) < 1e-5
    assert {value.dtype for value in candidate.get_params().values()} == {np.dtype("float32")}
    assert candidate.predict(x[:2500]).shape == (2500, 10)


def test_gpu_request_without_gpu_is_unavailable():
    from nnparity.backends.jax.runtime import jax

    try:
        jax.devices("gpu")
        pytest.skip("a GPU is present")
    except RuntimeError:
        pass
    with pytest.raises(BackendUnavailable, match="no gpu device"):
        make_adapter("jax", SMALL_SPECS["ce-sum"], "float64", device="gpu")


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="device 'tpu-x' is not supported"):
        make_adapter("jax", SMALL_SPECS["ce-sum"], "float64", device="tpu-x")


def run_python(code: str, **environment) -> subprocess.CompletedProcess:
    env = {**os.environ, **environment}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_registration_does_not_import_jax():
    code = (
        "import sys, nnparity.backends.jax\n"
        "from nnparity.backends.registry import get_backend\n"
        "info = get_backend('jax')\n"
        "print(info.adapter, info.requires, 'jax' in sys.modules)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "nnparity.backends.jax.adapter:JaxAdapter", "('jax',", "'jaxlib',", "'optax')", "False",
    ]
    assert get_backend("jax").availability().available


def test_threads_limit_cpu_affinity():
    code = (
        "import json\n"
        "from nnparity.models import get_spec\n"
        "from nnparity.testing import make_adapter\n"
        "adapter = make_adapter('jax', get_spec('moons-mlp'))\n"
        "print(json.dumps(adapter.describe()))\n"
    )
    result = run_python(code, NNPARITY_THREADS="1", XLA_FLAGS="")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout.strip().splitlines()[-1])
    assert described["threads"] == 1
    assert len(described["cpu_affinity"]) == 1
    assert "--xla_cpu_multi_thread_eigen=false" in described["xla_flags"]
    assert described["jax_enable_x64"] is True


def test_invalid_thread_setting_names_the_variable():
    result = run_python("import nnparity.backends.jax.adapter", NNPARITY_THREADS="two")
    assert result.returncode != 0
    assert "NNPARITY_THREADS='two' is not a positive integer" in result.stderr
