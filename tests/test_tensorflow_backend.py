"""The TensorFlow adapters (eager-compiled and XLA) against the NumPy reference adapter."""

import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from nnparity.backends.base import BackendUnavailable  # noqa: E402
from nnparity.backends.registry import get_backend  # noqa: E402
from nnparity.datasets import load_dataset  # noqa: E402
from nnparity.models import get_spec  # noqa: E402
from nnparity.specs import (  # noqa: E402
    L2, SGD, Adam, BinaryCrossEntropy, Constant, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input,
    MaxPool2D, ModelSpec, Momentum, Orthogonal, Schedule, SoftmaxCrossEntropy, SquaredError,
)
from nnparity.testing import make_adapter, max_relative_difference, train_steps  # noqa: E402

BACKENDS = ["tensorflow", "tensorflow-xla"]


@pytest.fixture(scope="module")
def mnist():
    """The first 1000 real MNIST training digits, float64 bytes / 255, NCHW."""
    data = load_dataset("mnist", {"flatten": False})
    return np.round(data.x_train[:1000].astype(np.float64) * 255) / 255, data.y_train[:1000]


def moons():
    data = load_dataset("moons", get_spec("moons-mlp").dataset_options)
    return data.x_train.astype(np.float64), data.y_train


def small_cnn(optimizer=None, loss=None, l2=None, padding=((1, 2), (0, 1)), pool_padding="same"):
    """A CIFAR-like network small enough for gradient checks: every layer kind and padding form."""
    leaky = dict(activation="leaky_relu", negative_slope=0.01)
    return ModelSpec(
        name="small-cnn",
        dataset="none",
        layers=[
            Input(shape=(3, 9, 8)),
            Conv2D(filters=4, kernel_size=(3, 3), padding=padding, weight_init=GlorotUniform(),
                   bias_init=Constant(value=0.1), **leaky),
            Conv2D(filters=5, kernel_size=(2, 3), stride=(2, 1), padding="same", activation="relu",
                   weight_init=GlorotUniform(), bias_init=Constant(value=0.05)),
            MaxPool2D(pool_size=(3, 3), stride=(2, 2), padding=pool_padding),
            Dropout(rate=0.5),
            Flatten(),
            Dense(units=6, weight_init=Orthogonal(gain=1.0), **leaky),
            Dropout(rate=0.25),
            Dense(units=3, weight_init=GlorotUniform()),
        ],
        loss=loss or SoftmaxCrossEntropy(reduction="mean"),
        regularization=l2 if l2 is not None else L2(factor=1e-2, half=False, params="weights"),
        optimizer=optimizer or Momentum(learning_rate=0.05, momentum=0.9, nesterov=True, form="keras"),
        schedule=Schedule(batch_size=8, steps=4, shuffle_seed=1),
        seed=3,
    ).validate()


def random_images(n=32, seed=0):
    rng = np.random.RandomState(seed)
    return rng.standard_normal((n, 3, 9, 8)), rng.randint(0, 3, size=n)


def assert_same_training(backend, spec, x, y, steps, tolerance=1e-6, **options):
    """Train the backend and the NumPy reference side by side; compare every loss and the final parameters."""
    adapter = make_adapter(backend, spec, **options)
    reference = make_adapter("numpy", spec)
    losses = train_steps(adapter, x, y, steps)
    expected = train_steps(reference, x, y, steps)
    for step, (loss, reference_loss) in enumerate(zip(losses, expected)):
        assert max_relative_difference(loss, reference_loss) < tolerance, f"step {step}: {loss} vs {reference_loss}"
    params, reference_params = adapter.get_params(), reference.get_params()
    for key, value in reference_params.items():
        scale = max(np.max(np.abs(value)), 1e-12)
        assert np.max(np.abs(params[key] - value)) / scale < tolerance, key


def test_registry_entries():
    assert get_backend("tensorflow").variant == ""
    assert get_backend("tensorflow-xla").variant == "xla"
    assert get_backend("tensorflow").availability().available


def test_package_import_skips_tensorflow():
    code = "import sys, nnparity.backends.tensorflow; print('tensorflow' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


@pytest.mark.parametrize("backend", BACKENDS)
def test_moons_mlp_matches_numpy(backend):
    x, y = moons()
    assert_same_training(backend, get_spec("moons-mlp"), x, y, steps=30)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mnist_softmax_matches_numpy(backend, mnist):
    x, y = mnist
    assert_same_training(backend, get_spec("mnist-softmax"), x.reshape(len(x), -1), y, steps=5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mnist_cnn_first_steps_match_numpy(backend, mnist):
    x, y = mnist
    assert_same_training(backend, get_spec("mnist-cnn"), x, y, steps=3)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_mnist_cnn_200_steps_match_numpy(backend):
    data = load_dataset("mnist", {"flatten": False})
    x = np.round(data.x_train[:10000].astype(np.float64) * 255) / 255
    assert_same_training(backend, get_spec("mnist-cnn"), x, data.y_train[:10000], steps=200)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_adder_rnn_matches_numpy(backend):
    data = load_dataset("binary-addition", get_spec("binary-adder-rnn").dataset_options)
    assert_same_training(backend, get_spec("binary-adder-rnn"), data.x_train.astype(np.float64), data.y_train, 25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_output_and_targets_are_canonical(backend):
    # A spec ending in a pool outputs a feature map: predict returns NCHW and
    # squared-error targets arrive NCHW, although the model runs NHWC.
    spec = ModelSpec(
        name="image-regression", dataset="none",
        layers=[Input(shape=(2, 6, 5)), Conv2D(filters=3, kernel_size=(3, 3), padding="same", activation="tanh",
                                               weight_init=GlorotUniform(), bias_init=Constant(value=0.1)),
                MaxPool2D(pool_size=(2, 2))],
        loss=SquaredError(reduction="mean"), optimizer=SGD(learning_rate=0.5),
        schedule=Schedule(batch_size=4, steps=3),
    ).validate()
    rng = np.random.RandomState(2)
    x, y = rng.standard_normal((12, 2, 6, 5)), rng.uniform(size=(12, 3, 3, 2))
    assert make_adapter(backend, spec).predict(x).shape == (12, 3, 3, 2)
    assert_same_training(backend, spec, x, y, steps=3)


OPTIMIZERS = {
    "sgd": SGD(learning_rate=0.05),
    "momentum-torch": Momentum(learning_rate=0.05, momentum=0.9, nesterov=False, form="torch"),
    "nesterov-torch": Momentum(learning_rate=0.05, momentum=0.9, nesterov=True, form="torch"),
    "momentum-keras": Momentum(learning_rate=0.05, momentum=0.9, nesterov=False, form="keras"),
    "nesterov-keras": Momentum(learning_rate=0.05, momentum=0.9, nesterov=True, form="keras"),
    "adam-corrected": Adam(learning_rate=1e-2, epsilon_form="corrected"),
    "adam-uncorrected": Adam(learning_rate=1e-2, epsilon_form="uncorrected"),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_match_numpy(name):
    x, y = random_images()
    assert_same_training("tensorflow", small_cnn(optimizer=OPTIMIZERS[name]), x, y, steps=4)


@pytest.mark.parametrize("loss", [
    BinaryCrossEntropy(reduction="mean", epsilon=1e-7),
    BinaryCrossEntropy(reduction="sum", epsilon=0.2),
    SoftmaxCrossEntropy(reduction="sum"),
], ids=["bce-mean", "bce-sum-clipped", "ce-sum"])
@pytest.mark.parametrize("l2", [L2(factor=0.1, half=True, params="all"), L2(factor=0.0)], ids=["l2-all", "no-l2"])
def test_losses_match_numpy(loss, l2):
    x, y = random_images()
    assert_same_training("tensorflow", small_cnn(loss=loss, l2=l2), x, y, steps=3)


def test_squared_error_mean_matches_numpy():
    spec = ModelSpec(
        name="regression", dataset="none",
        layers=[Input(shape=(4,)), Dense(units=5, activation="sigmoid", weight_init=GlorotUniform()),
                Dense(units=2, activation="tanh", weight_init=GlorotUniform())],
        loss=SquaredError(reduction="mean", half=False), optimizer=SGD(learning_rate=0.5),
        schedule=Schedule(batch_size=10, steps=5),
    ).validate()
    rng = np.random.RandomState(0)
    assert_same_training("tensorflow", spec, rng.standard_normal((40, 4)), rng.standard_normal((40, 2)), steps=5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool_padding", ["same", "valid"])
def test_gradients_match_numpy(backend, pool_padding):
    spec = small_cnn(pool_padding=pool_padding)
    x, y = random_images(16, seed=1)
    masks = [np.asarray(m) for m in _masks(spec, 16)]
    loss, grads = make_adapter(backend, spec).loss_and_grads(x, y, masks)
    reference_loss, reference_grads = make_adapter("numpy", spec).loss_and_grads(x, y, masks)
    assert max_relative_difference(loss, reference_loss) < 1e-10
    for key, expected in reference_grads.items():
        assert grads[key].shape == expected.shape, key
        scale = max(np.max(np.abs(expected)), 1e-300)
        assert np.max(np.abs(grads[key] - expected)) / scale < 1e-9, key


def _masks(spec, batch):
    from nnparity.harness.schedule import dropout_masks

    return dropout_masks(spec, 0, batch, "float64")


@pytest.mark.parametrize("backend", BACKENDS)
def test_pooling_ties_route_to_first_maximum(backend):
    spec = ModelSpec(
        name="ties", dataset="none",
        layers=[Input(shape=(2, 6, 6)), MaxPool2D(pool_size=(2, 2)), Flatten(),
                Dense(units=3, weight_init=GlorotUniform())],
        loss=SoftmaxCrossEntropy(reduction="sum"), optimizer=SGD(learning_rate=0.1),
        schedule=Schedule(batch_size=4, steps=1),
    ).validate()
    # Integer values in {0, 1} tie in most windows, as ReLU outputs do on MNIST.
    x = np.random.RandomState(0).randint(0, 2, size=(4, 2, 6, 6)).astype(np.float64)
    adapter = make_adapter(backend, spec)
    grads = _input_gradient(adapter, x)
    winners = (grads != 0).reshape(4, 2, 3, 2, 3, 2).sum(axis=(3, 5))
    assert winners.max() == 1
    first = (x.reshape(4, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(4, 2, 3, 3, 4).argmax(axis=-1))
    chosen = (grads != 0).reshape(4, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(4, 2, 3, 3, 4).argmax(axis=-1)
    assert np.array_equal(chosen, first)


def _input_gradient(adapter, x):
    # Positive dense weights after the pooling make every window's gradient nonzero.
    adapter.variables["dense1/W"].assign(tf.ones_like(adapter.variables["dense1/W"]) * np.arange(1, 4))
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(adapter.network(x))
    return tape.gradient(total, x).numpy()


def test_native_dropout_draws_masks():
    x, y = random_images()
    spec = small_cnn(optimizer=SGD(learning_rate=1e-3))
    native = make_adapter("tensorflow", spec, dropout_mode="native")
    losses = train_steps(native, x, y, 3)
    no_dropout_loss, _ = make_adapter("tensorflow", spec).loss_and_grads(x[:8], y[:8], None)
    assert all(np.isfinite(losses))
    assert abs(losses[0] - no_dropout_loss) > 1e-6


def test_float32_first_step_close_to_float64(mnist):
    x, y = mnist
    spec = get_spec("mnist-cnn")
    single = train_steps(make_adapter("tensorflow", spec, dtype="float32"), x.astype(np.float32), y, 2)
    double = train_steps(make_adapter("tensorflow", spec), x, y, 2)
    assert max_relative_difference(single, double) < 1e-5


def test_gpu_request_is_unavailable_without_gpu():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable, match="GPU"):
        make_adapter("tensorflow", get_spec("moons-mlp"), device="gpu")


def test_describe_records_threads_and_device():
    adapter = make_adapter("tensorflow-xla", get_spec("moons-mlp"), threads=1)
    info = adapter.describe()
    assert info["jit_compile"] is True
    assert info["intra_op_threads"] >= 1
    assert "CPU:0" in adapter.device_name()
