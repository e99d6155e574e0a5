"""The PyTensor (``theano``) adapter against the NumPy reference adapter, in float64, on real data.

PyTensor compiles each graph with a C compiler. The compiled modules are
cached in a per-environment directory, so only the first run pays the full
compile (about 70 s for the MNIST CNN on 2 shared CPU cores).
"""

import importlib.util
import os

import numpy as np
import pytest

if importlib.util.find_spec("pytensor") is None:
    pytest.skip("pytensor not installed; install with: pip install -c constraints.txt -e '.[theano]'",
                allow_module_level=True)

from nnparity.backends.theano import environment  # noqa: E402
from nnparity.datasets import load_dataset  # noqa: E402
from nnparity.harness.schedule import batch_plan, dropout_masks  # noqa: E402
from nnparity.models import get_spec  # noqa: E402
from nnparity.specs import (  # noqa: E402
    L2, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input, MaxPool2D, ModelSpec, Momentum,
    Orthogonal, Schedule, SoftmaxCrossEntropy,
)
from nnparity.testing import make_adapter, max_relative_difference, train_steps  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Import PyTensor through the adapter's settings (compile directory, OpenBLAS), not with its defaults.
environment.import_pytensor(threads=1)

STEP_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def mnist_images():
    data = load_dataset("mnist", {"flatten": False})
    return data.x_train[:2000], data.y_train[:2000]


@pytest.fixture(scope="module")
def mnist_vectors():
    data = load_dataset("mnist", {"flatten": True})
    return data.x_train[:3000], data.y_train[:3000]


def grad_difference(a, b) -> float:
    """``max |a - b|`` relative to the reference's largest entry, so tiny entries do not dominate."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_curves_match(spec, x, y, steps, backend="theano", tolerance=STEP_TOLERANCE):
    adapter = make_adapter(backend, spec)
    reference = make_adapter("numpy", spec)
    losses = train_steps(adapter, x, y, steps)
    expected = train_steps(reference, x, y, steps)

    for step, (loss, reference_loss) in enumerate(zip(losses, expected)):
        assert max_relative_difference(loss, reference_loss) < tolerance, f"step {step}"
    params, reference_params = adapter.get_params(), reference.get_params()
    assert sorted(params) == sorted(reference_params)
    for key in reference_params:
        assert params[key].shape == reference_params[key].shape, key
        assert grad_difference(params[key], reference_params[key]) < tolerance, key
    return adapter, losses


def assert_grads_match(spec, x, y, masks, tolerance=1e-9):
    loss, grads = make_adapter("theano", spec).loss_and_grads(x, y, masks)
    reference_loss, reference_grads = make_adapter("numpy", spec).loss_and_grads(x, y, masks)

    assert max_relative_difference(loss, reference_loss) < tolerance
    assert sorted(grads) == sorted(reference_grads)
    for key in reference_grads:
        assert grad_difference(grads[key], reference_grads[key]) < tolerance, key


# Workloads --------------------------------------------------------------------


def test_moons_curve_matches_numpy():
    spec = get_spec("moons-mlp")
    data = load_dataset("moons", spec.dataset_options)
    _, losses = assert_curves_match(spec, data.x_train, data.y_train, 30)
    assert losses[-1] < losses[0]


def test_mnist_softmax_curve_matches_numpy(mnist_vectors):
    spec = get_spec("mnist-softmax")
    _, losses = assert_curves_match(spec, *mnist_vectors, 20)
    assert losses[-1] < losses[0]


def test_mnist_cnn_curve_matches_numpy(mnist_images):
    adapter, _ = assert_curves_match(get_spec("mnist-cnn"), *mnist_images, 5)
    assert adapter.describe()["compile_s"] > 0


@pytest.mark.slow
def test_mnist_cnn_200_steps_match_numpy():
    data = load_dataset("mnist", {"flatten": False})
    _, losses = assert_curves_match(get_spec("mnist-cnn"), data.x_train, data.y_train, 200)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])


def test_binary_adder_curve_matches_numpy():
    spec = get_spec("binary-adder-rnn")
    data = load_dataset("binary-addition", spec.dataset_options)
    assert_curves_match(spec, data.x_train, data.y_train, 40)


# Convolution and pooling gradients ---------------------------------------------


def pool_spec(padding="valid", pool=(2, 2), stride=(2, 2)) -> ModelSpec:
    return ModelSpec(
        name="pool-check", dataset="none",
        layers=[
            Input(shape=(2, 6, 7)),
            Conv2D(filters=3, kernel_size=(3, 3), padding="same", activation="relu", weight_init=GlorotUniform()),
            MaxPool2D(pool_size=pool, stride=stride, padding=padding),
            Flatten(),
            Dense(units=4, weight_init=GlorotUniform()),
        ],
        loss=SoftmaxCrossEntropy(reduction="sum"),
        optimizer=Momentum(learning_rate=0.1),
        schedule=Schedule(batch_size=4, steps=1),
        seed=3,
    ).validate()


@pytest.mark.parametrize("padding, pool, stride", [
    ("valid", (2, 2), (2, 2)), ("same", (2, 2), (2, 2)), ("valid", (3, 3), (2, 2)), ("same", (3, 2), (2, 3)),
])
def test_pool_gradient_with_ties(padding, pool, stride):
    # Quantized inputs and zero biases make whole windows tie after the ReLU.
    rng = np.random.RandomState(0)
    x = np.round(rng.uniform(0, 2, size=(4, 2, 6, 7)))
    y = np.array([0, 1, 2, 3])
    assert_grads_match(pool_spec(padding, pool, stride), x, y, None)


def test_pool_gradient_goes_to_first_maximum():
    spec = ModelSpec(
        name="tie", dataset="none",
        layers=[Input(shape=(1, 2, 2)), MaxPool2D(pool_size=(2, 2)), Flatten(), Dense(units=2, weight_init=GlorotUniform())],
        loss=SoftmaxCrossEntropy(reduction="sum"), optimizer=Momentum(learning_rate=0.1),
        schedule=Schedule(batch_size=1, steps=1),
    ).validate()
    pytensor = environment.import_pytensor(threads=1)
    from nnparity.backends.theano import layers as B

    shared_x = pytensor.shared(np.array([[[[1.0, 3.0], [3.0, 3.0]]]]))
    pooled = B.max_pool2d(shared_x, spec.layers[1], (1, 2, 2), (1, 1, 1))
    grad = pytensor.function([], pytensor.grad(pooled.sum(), shared_x), mode="CVM")()

    np.testing.assert_array_equal(grad, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_conv_gradient_strided_asymmetric_padding():
    spec = ModelSpec(
        name="conv-check", dataset="none",
        layers=[
            Input(shape=(3, 7, 8)),
            Conv2D(filters=4, kernel_size=(4, 3), stride=(2, 1), padding="same", activation="leaky_relu",
                   negative_slope=0.01, weight_init=GlorotUniform(), bias_init=GlorotUniform()),
            Conv2D(filters=2, kernel_size=(2, 2), padding=((1, 0), (0, 1)), activation="tanh",
                   weight_init=GlorotUniform()),
            Flatten(),
            Dense(units=3, weight_init=GlorotUniform()),
        ],
        loss=SoftmaxCrossEntropy(reduction="mean"),
        optimizer=Momentum(learning_rate=0.1),
        schedule=Schedule(batch_size=5, steps=1),
        seed=1,
    ).validate()
    rng = np.random.RandomState(1)
    assert_grads_match(spec, rng.randn(5, 3, 7, 8), rng.randint(0, 3, size=5), None)


# A small CIFAR-style network, end to end --------------------------------------


def tiny_cifar_spec() -> ModelSpec:
    """The cifar-cnn recipe (leaky ReLU, 3/2 pooling, dropout, Nesterov, mean loss + L2) at a tenth of the size."""
    leaky = dict(activation="leaky_relu", negative_slope=0.01)
    return ModelSpec(
        name="tiny-cifar", dataset="cifar10",
        layers=[
            Input(shape=(3, 12, 12)),
            Conv2D(filters=6, kernel_size=(3, 3), weight_init=GlorotUniform(), **leaky),
            Conv2D(filters=4, kernel_size=(3, 3), weight_init=GlorotUniform(), **leaky),
            MaxPool2D(pool_size=(3, 3), stride=(2, 2)),
            Dropout(rate=0.5),
            Flatten(),
            Dense(units=16, weight_init=Orthogonal(gain=1.0), **leaky),
            Dropout(rate=0.5),
            Dense(units=10, weight_init=GlorotUniform()),
        ],
        loss=SoftmaxCrossEntropy(reduction="mean"),
        regularization=L2(factor=1e-4, half=False, params="weights"),
        optimizer=Momentum(learning_rate=0.01, momentum=0.9, nesterov=True, form="keras"),
        schedule=Schedule(batch_size=16, epochs=1, shuffle_seed=0),
        seed=0,
    ).validate()


def cifar_like_images(n=96):
    """Pixel values on the CIFAR-10 grid (uint8 / 255) with a class-dependent mean, so the loss can fall."""
    rng = np.random.RandomState(7)
    y = rng.randint(0, 10, size=n)
    pixels = rng.randint(0, 256, size=(n, 3, 12, 12)) // 2 + (y * 12)[:, None, None, None]
    return pixels / 255.0, y


def test_tiny_cifar_trains_like_numpy():
    spec = tiny_cifar_spec()
    x, y = cifar_like_images()
    adapter, losses = assert_curves_match(spec, x, y, 6)

    predictions = adapter.predict(x[:8])
    reference = make_adapter("numpy", spec)
    reference.build(adapter.get_params())
    assert predictions.shape == (8, 10)
    assert max_relative_difference(predictions, reference.predict(x[:8])) < 1e-9


def test_tiny_cifar_float32_close_to_float64():
    spec = tiny_cifar_spec()
    x, y = cifar_like_images()
    losses32 = train_steps(make_adapter("theano", spec, "float32"), x, y, 3)
    losses64 = train_steps(make_adapter("theano", spec, "float64"), x, y, 3)
    assert max_relative_difference(losses32, losses64) < 1e-4


def test_native_dropout_draws_its_own_masks():
    spec = tiny_cifar_spec()
    x, y = cifar_like_images()
    plan = batch_plan(spec.schedule, len(x))
    native = make_adapter("theano", spec, dropout_mode="native")
    exact = make_adapter("theano", spec)

    native_loss = native.to_float(native.train_step(x[plan[0]], y[plan[0]], None))
    exact_loss = exact.to_float(exact.train_step(x[plan[0]], y[plan[0]], dropout_masks(spec, 0, 16, "float64")))
    no_dropout_loss, _ = make_adapter("theano", spec).loss_and_grads(x[plan[0]], y[plan[0]], None)

    assert np.isfinite(native_loss)
    assert native_loss != exact_loss
    assert native_loss != no_dropout_loss


def test_describe_reports_linker_and_compile_time():
    spec = get_spec("moons-mlp")
    info = make_adapter("theano", spec).describe()
    assert info["linker"] == "cvm"
    assert info["compile_s"] > 0
    assert info["floatX"] == "float64"
    assert info["compiledir"].startswith(str(environment.compile_dir()))
    if environment.openblas_ldflags():
        assert info["blas__ldflags"] == "-lopenblas"


# Other linkers ------------------------------------------------------------------


def test_jax_linker_matches_numpy():
    pytest.importorskip("jax")
    spec = get_spec("moons-mlp")
    data = load_dataset("moons", spec.dataset_options)
    adapter, _ = assert_curves_match(spec, data.x_train, data.y_train, 10, backend="theano-jax")
    assert adapter.describe()["linker"] == "jax"


def test_jax_linker_sync_waits_for_step():
    # The JAX linker dispatches asynchronously: without a blocking sync the
    # harness would time only the dispatch of each step.
    pytest.importorskip("jax")
    spec = get_spec("moons-mlp")
    data = load_dataset("moons", spec.dataset_options)
    adapter = make_adapter("theano-jax", spec, dtype="float64")
    loss = adapter.train_step(data.x_train, data.y_train, None)
    adapter.sync()
    assert loss.is_ready()
    for key, variable in adapter._shared.items():
        assert variable.get_value(borrow=True).is_ready(), key


@pytest.mark.slow
def test_numba_linker_matches_numpy():
    pytest.importorskip("numba")
    spec = get_spec("moons-mlp")
    data = load_dataset("moons", spec.dataset_options)
    adapter, _ = assert_curves_match(spec, data.x_train, data.y_train, 10, backend="theano-numba")
    assert adapter.describe()["linker"] == "numba"
