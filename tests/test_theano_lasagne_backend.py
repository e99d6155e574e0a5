"""The Theano 1.0.5 + Lasagne 0.1 adapters against the NumPy reference adapter.

The adapters run in the legacy environment, so each check writes a job file,
runs ``nnparity.backends.theano_lasagne.driver`` with the legacy interpreter
and compares its output with the NumPy adapter in this process.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from nnparity.backends.registry import get_backend
from nnparity.backends.theano_lasagne import CREATE_COMMAND, legacy_python
from nnparity.backends.theano_lasagne.driver import write_job
from nnparity.datasets import load_dataset
from nnparity.harness.schedule import batch_plan, dropout_masks
from nnparity.models import get_spec
from nnparity.specs import (
    L2, Adam, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input, MaxPool2D, ModelSpec, Momentum,
    SGD, Orthogonal, Schedule, SoftmaxCrossEntropy,
)
from nnparity.testing import make_adapter, max_relative_difference

PYTHON = legacy_python()
pytestmark = pytest.mark.skipif(PYTHON is None, reason=f"legacy environment missing; create it with: {CREATE_COMMAND}")

STEP_TOLERANCE = 1e-6


def grad_difference(a, b) -> float:
    """``max |a - b|`` relative to the reference's largest entry, so tiny entries do not dominate."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def batches_for(spec, x, y, steps, dtype):
    plan = batch_plan(spec.schedule, len(x))[:steps]
    return [
        (x[index].astype(dtype), y[index], dropout_masks(spec, step, len(index), dtype) or None)
        for step, index in enumerate(plan)
    ]


def run_legacy(tmp_path, spec, backend, x, y, steps, dtype="float64", dropout_mode="exact"):
    """Run ``steps`` steps in the legacy environment; return its outputs and the batches it saw."""
    spec = spec.replace(dtype=dtype).validate()
    batches = batches_for(spec, x, y, steps, dtype)
    job, out = tmp_path / f"{backend}-job.npz", tmp_path / f"{backend}-out.npz"
    write_job(str(job), spec, backend, dtype, spec.initial_params(), batches, dropout_mode)

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run(
        [PYTHON, "-m", "nnparity.backends.theano_lasagne.driver", str(job), str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as data:
        outputs = {key: data[key] for key in data.files}
    outputs["describe"] = json.loads(str(outputs["describe"]))
    return outputs, batches


def reference_run(spec, batches, dtype="float64"):
    adapter = make_adapter("numpy", spec, dtype)
    grad_loss, grads = adapter.loss_and_grads(*batches[0])
    predict = adapter.predict(batches[0][0])
    losses = [adapter.to_float(adapter.train_step(*batch)) for batch in batches]
    return {"grad_loss": grad_loss, "grads": grads, "predict": predict, "losses": losses, "params": adapter.get_params()}


def assert_matches_numpy(outputs, reference, tolerance=STEP_TOLERANCE):
    assert max_relative_difference(outputs["grad_loss"], reference["grad_loss"]) < tolerance
    for key, grad in reference["grads"].items():
        assert grad_difference(outputs[f"grad/{key}"], grad) < tolerance, key
    assert max_relative_difference(outputs["predict"], reference["predict"]) < tolerance
    for step, (loss, expected) in enumerate(zip(outputs["losses"], reference["losses"])):
        assert max_relative_difference(loss, expected) < tolerance, f"step {step}"
    for key, value in reference["params"].items():
        assert grad_difference(outputs[f"param/{key}"], value) < tolerance, key


@pytest.fixture(scope="module")
def mnist_images():
    data = load_dataset("mnist", {"flatten": False})
    return data.x_train[:1000], data.y_train[:1000]


# Registration -----------------------------------------------------------------


def test_registered_with_legacy_interpreter():
    for name in ("theano-lasagne", "theano-lasagne-stock"):
        info = get_backend(name)
        assert info.interpreter() == PYTHON
        availability = info.availability()
        assert availability.available, availability.reason
        assert availability.versions["Theano"] == "1.0.5"
        assert availability.versions["Lasagne"] == "0.1"
    assert get_backend("theano-lasagne-stock").default is False


# Workloads --------------------------------------------------------------------


def test_moons_matches_numpy(tmp_path):
    spec = get_spec("moons-mlp")
    data = load_dataset("moons", spec.dataset_options)
    outputs, batches = run_legacy(tmp_path, spec, "theano-lasagne", data.x_train, data.y_train, 30)
    assert_matches_numpy(outputs, reference_run(spec, batches))
    assert outputs["describe"]["theano"] == "1.0.5"
    assert outputs["describe"]["blas.ldflags"] == "-lopenblas"
    assert outputs["describe"]["compile_s"] > 0


def test_binary_adder_matches_numpy(tmp_path):
    spec = get_spec("binary-adder-rnn")
    data = load_dataset("binary-addition", spec.dataset_options)
    outputs, batches = run_legacy(tmp_path, spec, "theano-lasagne", data.x_train, data.y_train, 30)
    assert_matches_numpy(outputs, reference_run(spec, batches))


def test_mnist_cnn_matches_numpy(tmp_path, mnist_images):
    spec = get_spec("mnist-cnn")
    outputs, batches = run_legacy(tmp_path, spec, "theano-lasagne", *mnist_images, 3)
    assert_matches_numpy(outputs, reference_run(spec, batches))


def test_stock_layers_differ_on_tied_windows(tmp_path, mnist_images):
    # Blank MNIST borders give conv outputs equal to the bias: whole pooling windows tie,
    # and stock MaxPool2DLayer passes the gradient to every tied element.
    spec = get_spec("mnist-cnn")
    outputs, batches = run_legacy(tmp_path, spec, "theano-lasagne-stock", *mnist_images, 1)
    reference = reference_run(spec, batches)

    assert max_relative_difference(outputs["grad_loss"], reference["grad_loss"]) < STEP_TOLERANCE
    assert grad_difference(outputs["grad/conv2d1/W"], reference["grads"]["conv2d1/W"]) > 1e-2
    assert outputs["describe"]["layers"] == "stock"


def tiny_cifar_spec(optimizer) -> ModelSpec:
    leaky = dict(activation="leaky_relu", negative_slope=0.01)
    return ModelSpec(
        name="tiny-cifar", dataset="cifar10",
        layers=[
            Input(shape=(3, 12, 12)),
            Conv2D(filters=6, kernel_size=(3, 3), weight_init=GlorotUniform(), **leaky),
            Conv2D(filters=4, kernel_size=(2, 2), padding="same", weight_init=GlorotUniform(), **leaky),
            MaxPool2D(pool_size=(3, 3), stride=(2, 2)),
            Dropout(rate=0.5),
            Flatten(),
            Dense(units=16, weight_init=Orthogonal(gain=1.0), **leaky),
            Dropout(rate=0.5),
            Dense(units=10, weight_init=GlorotUniform()),
        ],
        loss=SoftmaxCrossEntropy(reduction="mean"),
        regularization=L2(factor=1e-4, half=False, params="weights"),
        optimizer=optimizer,
        schedule=Schedule(batch_size=16, epochs=1, shuffle_seed=0),
        seed=0,
    ).validate()


@pytest.mark.parametrize("optimizer", [
    Momentum(learning_rate=0.01, momentum=0.9, nesterov=True, form="keras"),
    Momentum(learning_rate=0.01, momentum=0.9, nesterov=True, form="torch"),
    Adam(learning_rate=1e-3, epsilon_form="corrected"),
], ids=["nesterov-keras", "nesterov-torch", "adam-corrected"])
def test_tiny_cifar_matches_numpy(tmp_path, optimizer):
    # The 2x2 SAME convolution pads (0, 1) on each axis: Lasagne needs an explicit pad layer.
    spec = tiny_cifar_spec(optimizer)
    rng = np.random.RandomState(7)
    y = rng.randint(0, 10, size=64)
    x = (rng.randint(0, 256, size=(64, 3, 12, 12)) // 2 + (y * 12)[:, None, None, None]) / 255.0
    outputs, batches = run_legacy(tmp_path, spec, "theano-lasagne", x, y, 4)
    assert_matches_numpy(outputs, reference_run(spec, batches))


@pytest.mark.parametrize("optimizer", [
    SGD(learning_rate=0.01),
    Momentum(learning_rate=0.01, momentum=0.9, nesterov=True, form="keras"),
    Adam(learning_rate=1e-3, epsilon_form="uncorrected"),
], ids=["sgd", "nesterov-keras", "adam-uncorrected"])
def test_float32_runs_lasagne_updates(tmp_path, optimizer):
    # These optimizers use Lasagne's own update rules, whose constants must not turn float32 updates to float64.
    spec = tiny_cifar_spec(optimizer)
    rng = np.random.RandomState(5)
    x, y = rng.uniform(size=(32, 3, 12, 12)), rng.randint(0, 10, size=32)
    outputs, batches = run_legacy(tmp_path, spec, "theano-lasagne", x, y, 3, "float32")
    reference = reference_run(spec.replace(dtype="float32").validate(), batches, "float32")

    assert outputs["param/dense1/W"].dtype == np.float32
    np.testing.assert_allclose(outputs["losses"], reference["losses"], rtol=1e-4)


def test_native_dropout_runs(tmp_path):
    spec = tiny_cifar_spec(Momentum(learning_rate=0.01, momentum=0.9, nesterov=True, form="keras"))
    rng = np.random.RandomState(3)
    x, y = rng.uniform(size=(32, 3, 12, 12)), rng.randint(0, 10, size=32)
    outputs, batches = run_legacy(tmp_path, spec, "theano-lasagne", x, y, 2, "float32", "native")
    exact = reference_run(spec, batches, "float32")

    assert np.all(np.isfinite(outputs["losses"]))
    assert abs(outputs["losses"][0] - exact["losses"][0]) > 1e-6
