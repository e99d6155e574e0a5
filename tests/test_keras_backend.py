"""The Keras 3 adapters against the NumPy reference adapter.

Keras fixes its backend at import, so each Keras backend runs in a child
process: this file doubles as that child's script (``python
tests/test_keras_backend.py BACKEND DTYPE OUT.npz``). The child trains each
case and saves losses, final parameters and gradients; the parent computes
the NumPy reference and compares.
"""

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
CASES = {"moons-mlp": 20, "mnist-softmax": 5, "mnist-cnn": 3, "binary-adder-rnn": 20}


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


def run_child(backend, dtype, out_path):
    """Child process: train every case on ``keras-<backend>`` and save the results."""
    from nnparity.backends.base import UnsupportedSpec

    results = {}
    try:
        for name, steps in CASES.items():
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
    except UnsupportedSpec as error:
        results = {"unsupported": str(error)}
    np.savez(out_path, **results)


@pytest.fixture(scope="module", params=KERAS_BACKENDS)
def keras_run(request, tmp_path_factory):
    backend = request.param
    dtype = "float64"
    out = tmp_path_factory.mktemp(backend) / "results.npz"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), backend, dtype, str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    results = dict(np.load(out, allow_pickle=False))
    if "unsupported" in results:
        pytest.skip(str(results["unsupported"]))
    return backend, results


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_matches_numpy(keras_run, name):
    _, results = keras_run
    spec, x, y = case_data(name)
    reference = make_adapter("numpy", spec)
    expected = train_steps(reference, x, y, CASES[name])
    losses = results[f"{name}/losses"]
    for step, (loss, reference_loss) in enumerate(zip(losses, expected)):
        assert max_relative_difference(loss, reference_loss) < 1e-6, f"step {step}: {loss} vs {reference_loss}"
    for key, value in reference.get_params().items():
        scale = max(np.max(np.abs(value)), 1e-12)
        assert np.max(np.abs(results[f"{name}/param/{key}"] - value)) / scale < 1e-6, key


def test_gradients_match_numpy(keras_run):
    _, results = keras_run
    spec, x, y, masks = gradient_case()
    reference_loss, reference_grads = make_adapter("numpy", spec).loss_and_grads(x, y, masks)
    assert max_relative_difference(results["grad/loss"], reference_loss) < 1e-10
    for key, expected in reference_grads.items():
        scale = max(np.max(np.abs(expected)), 1e-300)
        assert np.max(np.abs(results[f"grad/{key}"] - expected)) / scale < 1e-9, key


def test_describe_names_backend(keras_run):
    backend, results = keras_run
    info = json.loads(str(results["describe"]))
    assert info["keras_backend"] == backend
    assert info["floatx"] == "float64"


def test_torch_float64_is_rejected_with_reason():
    code = (
        "from nnparity.testing import make_adapter; from nnparity.models import get_spec\n"
        "from nnparity.backends.base import UnsupportedSpec\n"
        "try:\n    make_adapter('keras-torch', get_spec('moons-mlp'))\n"
        "except UnsupportedSpec as e:\n    print('unsupported:', e)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "unsupported:" in output.stdout, output.stderr[-2000:]
    assert "float32" in output.stdout


def test_package_import_skips_frameworks():
    code = "import sys, nnparity.backends.keras; print(sorted({'keras', 'torch', 'jax', 'tensorflow'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


if __name__ == "__main__":
    run_child(*sys.argv[1:4])
