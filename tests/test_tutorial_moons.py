"""The NumPy adapter on moons reproduces the classic hand-written NumPy program, pass for pass.

Full-batch training of this network is sensitive to rounding. Two float64
runs whose softmax differs by one ulp at step 1 separate around step 1400,
when the loss jumps from 0.069 to about 0.15 and back. Both then settle
into the same 2-cycle (the loss alternates between 0.07132 and 0.07076),
often with opposite phase, so their parameters differ in the second digit.
Agreement to 1e-9 after 20000 passes therefore means that the adapter
rounds exactly as the program does.

PyTorch rounds differently: its float64 run leaves the program's trajectory
near pass 1400 (0.25% apart at pass 1500) and rejoins the same 2-cycle in
phase, ending 6.8e-10 apart after 20000 passes (measured with this test on
torch 2.13.0 CPU). That final check is kept because it is what a user
comparing the two programs sees, but it depends on the phase of the cycle.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_moons

from nnparity.backends.base import RunOptions
from nnparity.backends.numpy.adapter import NumpyAdapter
from nnparity.models import get_spec
from nnparity.specs import objective
from nnparity.testing import make_adapter, train_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from tutorial_moons import moons_problem, train_tutorial, tutorial_loss  # noqa: E402

PASSES = 20000


@pytest.fixture(scope="module")
def problem():
    return moons_problem(hidden=3)


@pytest.fixture(scope="module")
def tutorial_params(problem):
    return train_tutorial(problem, PASSES)


@pytest.fixture(scope="module")
def trained(problem):
    spec = get_spec("moons-mlp").replace(dtype="float64").validate()
    options = spec.dataset_options
    x, y = make_moons(options["n_samples"], noise=options["noise"], random_state=options["random_state"])
    adapter = NumpyAdapter(spec, RunOptions(dtype="float64", threads=1))
    adapter.build(spec.initial_params())
    losses = train_steps(adapter, x, y, PASSES)
    return adapter, x, y, losses


def test_spec_start_is_tutorial_start(problem):
    params = get_spec("moons-mlp").initial_params()
    for key, expected in problem.initial.items():
        np.testing.assert_array_equal(params[key], expected, err_msg=key)


def test_spec_data_is_tutorial_data(problem, trained):
    _, x, y, _ = trained
    np.testing.assert_array_equal(x, problem.x)
    np.testing.assert_array_equal(y, problem.labels)


def test_final_loss_matches_tutorial(problem, tutorial_params, trained):
    adapter, x, y, _ = trained
    spec = adapter.spec
    value = objective.objective(spec, adapter.predict(x), y, adapter.get_params())
    final = objective.per_sample(spec, value, len(x))
    assert final == pytest.approx(tutorial_loss(problem, tutorial_params), rel=1e-9)


def test_final_params_match_tutorial(tutorial_params, trained):
    adapter, _, _, _ = trained
    params = adapter.get_params()
    for key, expected in tutorial_params.items():
        np.testing.assert_allclose(params[key], expected, rtol=1e-9, atol=1e-12, err_msg=key)


def test_first_loss_is_tutorial_loss_of_start(problem, trained):
    adapter, x, _, losses = trained
    assert losses[0] / len(x) == pytest.approx(tutorial_loss(problem, problem.initial), rel=1e-12)
    assert losses[-1] < losses[0]


def test_train_accuracy(trained):
    adapter, x, y, _ = trained
    assert objective.accuracy(adapter.spec, adapter.predict(x), y) >= 0.96


def test_torch_final_loss_matches_tutorial(problem, tutorial_params):
    pytest.importorskip("torch", reason="torch is not installed; install with: make venv")
    adapter = make_adapter("torch", get_spec("moons-mlp"), "float64", threads=1)
    train_steps(adapter, problem.x, problem.labels, PASSES)
    spec = adapter.spec
    value = objective.objective(spec, adapter.predict(problem.x), problem.labels, adapter.get_params())
    final = objective.per_sample(spec, value, len(problem.x))
    assert final == pytest.approx(tutorial_loss(problem, tutorial_params), rel=1e-9)
    assert objective.accuracy(spec, adapter.predict(problem.x), problem.labels) >= 0.96
