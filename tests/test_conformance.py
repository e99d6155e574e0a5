"""The conformance kit: every built-in adapter passes it, and deliberately wrong adapters do not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nnparity.backends.numpy.adapter import NumpyAdapter
from nnparity.backends.registry import BackendInfo, builtin_backends, get_backend
from nnparity.testing.checks import CHECKS
from nnparity.testing.conformance import cases, run_check, run_check_here, run_checks, run_checks_in_subprocess
from nnparity.testing.pytest_plugin import parametrize_with_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = os.path.join(ROOT, "tests", "plugin_example")
FAULTY = "nnparity_example_plugin.faulty"

# Backends that compile every tiny spec take seconds per check, so the
# default run gives each a subset and marks the other checks slow (run them
# with `make test-slow`). Measured on 2 cores shared with other jobs, the
# first check of a backend includes the framework import (10-25 s). After
# it, TensorFlow and Keras took about 1 s per check, JAX and PyTensor's JAX
# linker 1-6 s, and PyTensor's C linker 16 s on average with a cold compile
# cache. Theano 1.0.5
# (theano-lasagne) took 2 minutes for its first check with a cold cache and
# torch.compile about 10 s per check, so those run only with the slow tests,
# as does PyTensor's Numba linker (not measured here).
FULL_IN_DEFAULT_RUN = ("numpy", "torch")
MINIMAL_IN_DEFAULT_RUN = ("jax", "keras-jax", "theano", "theano-jax")
SLOW_BACKENDS = ("torch-compile", "theano-numba", "theano-lasagne", "theano-lasagne-stock")
# One check per group, with the layer kinds of the built-in workloads.
CORE_CHECKS = (
    "layer:dense-relu", "layer:conv-stride2", "layer:maxpool-tied", "layer:flatten-after-conv",
    "layer:dropout-exact", "layer:simple-rnn", "loss:l2-weights", "init:truncated_normal", "layout:roundtrip",
    "optimizer:adam-uncorrected", "dropout:native", "dtype:float32", "device:gpu", "timing:sync",
    "unsupported:layer",
)
# The checks behind the largest differences measured between real frameworks.
MINIMAL_CHECKS = ("layer:maxpool-tied", "layer:flatten-after-conv", "optimizer:adam-uncorrected", "unsupported:layer")
BUILTIN = sorted(builtin_backends())


def is_slow(backend: str, check: str) -> bool:
    if backend in SLOW_BACKENDS:
        return True
    if backend in FULL_IN_DEFAULT_RUN:
        return False
    if backend in MINIMAL_IN_DEFAULT_RUN:
        return check not in MINIMAL_CHECKS
    return check not in CORE_CHECKS


@parametrize_with_checks(BUILTIN, slow=is_slow)
def test_builtin_adapter_conforms(backend, check):
    check(backend)


def test_core_checks_cover_every_group():
    assert set(MINIMAL_CHECKS) <= set(CORE_CHECKS)
    assert set(CORE_CHECKS) <= set(CHECKS)
    assert {check.split(":")[0] for check in CORE_CHECKS} == {check.split(":")[0] for check in CHECKS}


def faulty(class_name: str) -> BackendInfo:
    return BackendInfo(f"faulty-{class_name}", f"{FAULTY}:{class_name}", ("numpy",))


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(PLUGIN_DIR)
    return PLUGIN_DIR


def failed_checks(results) -> dict[str, str]:
    return {r.check: r.message for r in results if r.status == "failed"}


def test_flatten_order_fault_localised(plugin_path):
    failures = failed_checks(run_checks(faulty("FlattenHWCAdapter")))

    assert set(failures) == {"layer:flatten-after-conv"}
    message = failures["layer:flatten-after-conv"]
    assert "predict output differs" in message
    assert "grad:dense1/W differs" in message
    assert "flatten1 (flatten)" in message


def test_l2_on_biases_fault_localised(plugin_path):
    failures = failed_checks(run_checks(faulty("L2OnBiasesAdapter")))

    assert set(failures) == {"loss:l2-weights"}
    message = failures["loss:l2-weights"]
    assert "grad:dense1/b differs" in message
    assert "grad:dense1/W" not in message


def test_declared_gap_is_xfailed(plugin_path):
    result = run_check_here(faulty("FlattenHWCWithGapAdapter"), "layer:flatten-after-conv")

    assert result.status == "xfailed"
    assert "(H, W, C) order" in result.message


class GapOnPassingCheckAdapter(NumpyAdapter):
    conformance_gaps = {"optimizer": "declared for the whole group, although every update is right"}


def test_declared_gap_that_passes_is_xpassed():
    info = BackendInfo("stale-gap", f"{__name__}:GapOnPassingCheckAdapter", ("numpy",))

    result = run_check_here(info, "optimizer:sgd")

    assert result.status == "xpassed"
    assert "remove it" in result.message


def test_missing_framework_is_skipped():
    info = BackendInfo("absent", "absent_module:Adapter", ("nnparity-no-such-distribution",))

    result = run_check(info, "layer:dense-tanh")

    assert result.status == "skipped"
    assert "nnparity-no-such-distribution not installed" in result.message


def test_subprocess_driver_matches_in_process():
    info = faulty("L2OnBiasesAdapter")
    checks = ["loss:l2-weights", "layer:dense-relu", "unsupported:layer"]

    results = run_checks_in_subprocess(info, checks, python_path=[PLUGIN_DIR])

    assert sorted(results) == sorted(checks)
    assert results["loss:l2-weights"].status == "failed"
    assert "grad:dense1/b" in results["loss:l2-weights"].message
    assert results["layer:dense-relu"].status == "passed"
    assert results["unsupported:layer"].status == "passed"


def test_environment_backend_runs_in_subprocess():
    # An environment override is what marks Keras-style backends; the
    # variable must reach the process that runs the checks.
    info = BackendInfo("numpy-in-subprocess", get_backend("numpy").adapter, ("numpy",),
                       environment={"NNPARITY_CONFORMANCE_PROBE": "1"})

    result = run_check(info, "layer:conv-stride2")

    assert result.status == "passed"


def test_case_ids_are_readable():
    ids = [case.id for case in cases(["numpy", "torch"])]

    assert "numpy-layer:maxpool-tied" in ids
    assert "torch-optimizer:adam-uncorrected" in ids
    assert "torch-unsupported:layer" in ids
    assert len(ids) == 2 * len(CHECKS)
    assert len(set(ids)) == len(ids)


def test_kit_covers_required_groups():
    groups = {check.split(":")[0] for check in CHECKS}

    assert groups == {"layer", "loss", "init", "layout", "optimizer", "dropout", "dtype", "device", "timing",
                      "unsupported"}
    for variant in ("dense-relu", "conv-stride2", "maxpool-tied", "flatten-after-conv", "dropout-exact",
                    "simple-rnn"):
        assert f"layer:{variant}" in CHECKS


def test_pytest_outcomes_from_decorator(tmp_path):
    test_file = tmp_path / "test_kit_outcomes.py"
    test_file.write_text(textwrap.dedent(f"""
        from nnparity.backends.registry import BackendInfo
        from nnparity.testing.pytest_plugin import parametrize_with_checks

        BACKENDS = [
            BackendInfo("plain", "{FAULTY}:FlattenHWCAdapter", ("numpy",)),
            BackendInfo("declared", "{FAULTY}:FlattenHWCWithGapAdapter", ("numpy",)),
            BackendInfo("absent", "absent_module:Adapter", ("nnparity-no-such-distribution",)),
        ]

        @parametrize_with_checks(BACKENDS, checks=["layer:flatten-after-conv", "layer:dense-tanh"])
        def test_kit(backend, check):
            check(backend)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PLUGIN_DIR, ROOT])}

    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "nnparity.testing.pytest_plugin",
         "--nnparity-backends", "plain,declared,absent", str(test_file)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )

    summary = completed.stdout.strip().splitlines()[-1]
    assert "1 failed" in summary, completed.stdout
    assert "2 passed" in summary
    assert "2 skipped" in summary
    assert "1 xfailed" in summary
    assert "plain-layer:flatten-after-conv" in completed.stdout
    assert "grad:dense1/W differs" in completed.stdout
