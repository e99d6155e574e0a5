"""The Keras 3 adapters against the NumPy reference adapter.

Keras fixes its backend at import, so each Keras backend runs in one child
process: this file doubles as that child's script (``python
tests/test_keras_backend.py BACKEND OUT.npz STEPS_JSON``). The child trains
every case, computes one set of gradients and saves losses, final
parameters, gradients and ``describe()``; the parent computes the NumPy
reference once per case and compares.

The child runs float64, except where the backend rejects float64
(keras-torch): it records the rejection message and runs float32, compared
with the float64 reference at ``FLOAT32_TOLERANCE``.
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnparity.datasets import load_dataset
from nnparity.models import get_spec
from nnparity.testing import make_adapter, max_relative_difference, train_steps

KERAS_BACKENDS = ["tensorflow", "torch", "jax"]
# Enough steps for every layer, the optimizer state and the L2 term to act;
# more steps repeat the same operations (the slow test runs more).
STEPS = {"moons-mlp": 8, "mnist-softmax": 3, "mnist-cnn": 2, "binary-adder-rnn": 8}
LONG_STEPS = {"moons-mlp": 100, "mnist-softmax": 20, "mnist-cnn": 10, "binary-adder-rnn": 100}
FLOAT64_TOLERANCE = 1e-6
# A float32 run against the float64 reference. Losses: measured up to about 1e-5.
# Parameters get more room: mnist-cnn's Adam divides each gradient by its own
# root mean square, so where a gradient is near 0, float32 rounding flips the
# step of up to the learning rate (1e-4); measured 2.3e-4 of dense1/W's scale.
FLOAT32_TOLERANCE = 1e-4
FLOAT32_PARAM_TOLERANCE = 1e-3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def case_data(name):
    spec = get_spec(name)
    if name.startswith("mnist"):
        data = load_dataset("mnist", spec.dataset_options)
        x = np.round(data.x_train[:600].astype(np.float64) * 255) / 255
        return spec, x, data.y_train[:600]
    data = load_dataset(spec.dataset, spec.dataset_options)
    return spec, data.x_train.astype(np.float64), data.y_train


def gradient_case():
    from tests.test_tensorflow_backend import _masks, random_images, small_cnn

    spec = small_cnn()
    x, y = random_images(16, seed=1)
    return spec, x, y, _masks(spec, 16)


def run_child(backend, out_path, steps_json):
    """Child process: train every case on ``keras-<backend>`` and save the results."""
    from nnparity.backends.base import UnsupportedSpec

    results, dtype = {}, "float64"
    try:
        make_adapter(f"keras-{backend}", get_spec("moons-mlp"), dtype=dtype, threads=1)
    except UnsupportedSpec as error:
        results["float64_unsupported"] = str(error)
        dtype = "float32"
    results["dtype"] = dtype
    for name, steps in json.loads(steps_json).items():
        spec, x, y = case_data(name)
        adapter = make_adapter(f"keras-{backend}", spec, dtype=dtype, threads=1)
        results[f"{name}/losses"] = train_steps(adapter, x.astype(dtype), y, steps)
        for key, value in adapter.get_params().items():
            results[f"{name}/param/{key}"] = value
    spec, x, y, masks = gradient_case()
    adapter = make_adapter(f"keras-{backend}", spec, dtype=dtype, threads=1)
    loss, grads = adapter.loss_and_grads(x.astype(dtype), y, [m.astype(dtype) for m in masks])
    results["grad/loss"] = loss
    results.update({f"grad/{key}": value for key, value in grads.items()})
    results["describe"] = json.dumps(adapter.describe())
    np.savez(out_path, **results)


def run_keras_child(backend, steps, out):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), backend, str(out), json.dumps(steps)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return dict(np.load(out, allow_pickle=False))


@functools.lru_cache(maxsize=None)
def reference_run(name, steps):
    """NumPy float64 losses and final parameters, computed once per case for all backends."""
    spec, x, y = case_data(name)
    reference = make_adapter("numpy", spec)
    return train_steps(reference, x, y, steps), reference.get_params()


def assert_training_matches(results, name, steps):
    expected_losses, expected_params = reference_run(name, steps)
    float64 = str(results["dtype"]) == "float64"
    limit = FLOAT64_TOLERANCE if float64 else FLOAT32_TOLERANCE
    losses = results[f"{name}/losses"]
    assert len(losses) == steps
    for step, (loss, reference_loss) in enumerate(zip(losses, expected_losses)):
        assert max_relative_difference(loss, reference_loss) < limit, f"step {step}: {loss} vs {reference_loss}"
    limit = FLOAT64_TOLERANCE if float64 else FLOAT32_PARAM_TOLERANCE
    for key, value in expected_params.items():
        scale = max(np.max(np.abs(value)), 1e-12)
        assert np.max(np.abs(results[f"{name}/param/{key}"] - value)) / scale < limit, key


@pytest.fixture(scope="module", params=KERAS_BACKENDS)
def keras_run(request, tmp_path_factory):
    backend = request.param
    return backend, run_keras_child(backend, STEPS, tmp_path_factory.mktemp(backend) / "results.npz")


@pytest.mark.parametrize("name", sorted(STEPS))
def test_training_matches_numpy(keras_run, name):
    _, results = keras_run
    assert_training_matches(results, name, STEPS[name])


def test_gradients_match_numpy(keras_run):
    _, results = keras_run
    spec, x, y, masks = gradient_case()
    reference_loss, reference_grads = make_adapter("numpy", spec).loss_and_grads(x, y, masks)
    float64 = str(results["dtype"]) == "float64"
    assert max_relative_difference(results["grad/loss"], reference_loss) < (1e-10 if float64 else 1e-5)
    for key, expected in reference_grads.items():
        scale = max(np.max(np.abs(expected)), 1e-300)
        assert np.max(np.abs(results[f"grad/{key}"] - expected)) / scale < (1e-9 if float64 else 1e-4), key


def test_describe_names_backend(keras_run):
    backend, results = keras_run
    info = json.loads(str(results["describe"]))
    assert info["keras_backend"] == backend
    assert info["floatx"] == str(results["dtype"])


def test_float64_support_matches_backend(keras_run):
    # Keras 3.15.1 computes float64 matmuls in float32 on torch, so that backend must refuse float64 with the reason.
    backend, results = keras_run
    if backend == "torch":
        message = str(results["float64_unsupported"])
        assert "keras-torch" in message
        assert "matmul" in message
        assert "float32" in message
        assert str(results["dtype"]) == "float32"
    else:
        assert "float64_unsupported" not in results
        assert str(results["dtype"]) == "float64"


@pytest.mark.slow
@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_longer_training_matches_numpy(backend, tmp_path):
    results = run_keras_child(backend, LONG_STEPS, tmp_path / "results.npz")
    for name, steps in LONG_STEPS.items():
        assert_training_matches(results, name, steps)


def test_package_import_skips_frameworks():
    code = "import sys, nnparity.backends.keras; print(sorted({'keras', 'torch', 'jax', 'tensorflow'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


if __name__ == "__main__":
    run_child(*sys.argv[1:4])
