"""``nnparity verify``: backends against the NumPy reference on real workloads, and faults it must catch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnparity.backends.registry import BackendInfo
from nnparity.harness.verify import TOLERANCES, VERIFY_FILE, compare, format_table, run_verify
from nnparity.harness.verify_compare import compare_norm
from nnparity.models import get_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = os.path.join(ROOT, "tests", "plugin_example")
FAULTY = "nnparity_example_plugin.faulty"


def faulty(class_name: str) -> BackendInfo:
    return BackendInfo(f"faulty-{class_name}", f"{FAULTY}:{class_name}", ("numpy",))


def rows_by_quantity(result, backend: str, model: str) -> dict:
    return {r.quantity: r for r in result.rows if r.backend == backend and r.model == model}


def test_compare_uses_tensor_scale_floor():
    rel, abs_ = compare(np.array([1.0, 1e-12]), np.array([1.0, 2e-12]))

    assert rel == pytest.approx(1e-9)
    assert abs_ == pytest.approx(1e-12)


def test_compare_flags_nan_and_shape():
    rel, _ = compare(np.array([1.0, 2.0]), np.array([1.0, np.nan]))
    assert rel == np.inf

    with pytest.raises(ValueError, match="shape"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)))


def test_compare_norm_near_zero_element():
    reference = np.array([1.0, -2.0, 3.0, 1e-6])
    candidate = np.array([1.0, -2.0, 3.0, -1e-6])

    rel, abs_ = compare_norm(reference, candidate)

    assert rel == pytest.approx(2e-6 / np.linalg.norm(reference))
    assert abs_ == pytest.approx(2e-6)
    assert compare(reference, candidate)[0] > 1e-4


def test_float32_final_parameters_are_compared_by_norm():
    # Element by element, keras-torch's float32 MNIST CNN parameters differed from NumPy's by 0.14 after 10 Adam
    # steps, because a near-zero gradient element takes a whole step either way. By norm they agree to about 1e-6.
    result = run_verify([get_spec("mnist-cnn")], ["keras-torch"], dtype="float32", steps=10)

    assert not result.failed, format_table(result.rows)
    final = next(r for r in result.rows if r.quantity.startswith("final:"))
    assert final.tolerance == TOLERANCES["float32"]["final"]
    assert final.max_rel < 1e-5


def test_torch_matches_numpy_on_moons_and_mnist(tmp_path):
    specs = [get_spec("moons-mlp"), get_spec("mnist-softmax")]

    result = run_verify(specs, ["torch"], dtype="float64", steps=3, out_dir=str(tmp_path))

    assert not result.failed, format_table(result.rows)
    moons = rows_by_quantity(result, "torch", "moons-mlp")
    expected = {"logits", "loss@0", "grad:dense1/W", "grad:dense1/b", "grad:dense2/W", "grad:dense2/b", "loss curve"}
    assert expected <= set(moons)
    assert any(q.startswith("final:") for q in moons)
    assert all(r.max_rel <= 1e-12 for r in moons.values() if r.quantity.startswith("grad:"))

    document = json.loads((tmp_path / VERIFY_FILE).read_text())
    assert document["passed"] is True
    assert document["tolerances"]["step0"] == TOLERANCES["float64"]["step0"]
    assert document["backends"]["torch"]["versions"]["torch"]
    assert document["date"].endswith("Z")
    assert len(document["rows"]) == len(result.rows)


def test_flatten_order_fault_fails_logits():
    result = run_verify([get_spec("mnist-cnn")], [faulty("FlattenHWCAdapter")], steps=2,
                        python_path=[PLUGIN_DIR])

    assert result.failed
    rows = rows_by_quantity(result, "faulty-FlattenHWCAdapter", "mnist-cnn")
    assert rows["logits"].status == "FAIL"
    assert "forward pass differs" in rows["logits"].message
    # The conformance checks for the model's layer kinds name the culprit.
    assert "Conformance checks that fail on faulty-FlattenHWCAdapter: layer:flatten-after-conv" in rows["logits"].message
    assert "layer:conv-same" not in rows["logits"].message
    assert rows["grad:dense1/W"].status == "FAIL"
    assert rows["loss curve"].status == "FAIL"
    assert "first differs at step 0" in rows["loss curve"].message


def test_l2_on_biases_fault_shows_after_training():
    # moons-mlp starts with zero biases, so L2 on them changes nothing at
    # step 0; the fault appears once the biases move.
    result = run_verify([get_spec("moons-mlp")], [faulty("L2OnBiasesAdapter")], steps=6,
                        python_path=[PLUGIN_DIR])

    rows = rows_by_quantity(result, "faulty-L2OnBiasesAdapter", "moons-mlp")
    assert rows["logits"].status == "pass"
    assert rows["loss@0"].status == "pass"
    assert rows["grad:dense1/b"].status == "pass"
    assert rows["loss curve"].status == "FAIL"
    assert "first differs at step" in rows["loss curve"].message
    assert "loss:l2-weights: grad:dense1/b differs" in rows["loss curve"].message
    (final,) = [r for q, r in rows.items() if q.startswith("final:")]
    assert final.status == "FAIL"
    assert final.quantity.endswith("/b")
    assert "worst parameter after 6 steps" in final.message


def test_unsupported_layer_is_skipped():
    result = run_verify([get_spec("mnist-cnn")], [faulty("DenseOnlyAdapter")], steps=1,
                        python_path=[PLUGIN_DIR])

    assert not result.failed
    (row,) = [r for r in result.rows if r.backend == "faulty-DenseOnlyAdapter"]
    assert row.status == "skipped"
    assert "UnsupportedSpec" in row.message
    assert "conv2d1" in row.message


def test_unavailable_backend_is_skipped():
    absent = BackendInfo("absent", "absent_module:Adapter", ("nnparity-no-such-distribution",))

    result = run_verify([get_spec("moons-mlp")], [absent], steps=1)

    assert not result.failed
    (row,) = [r for r in result.rows if r.backend == "absent"]
    assert row.status == "skipped"
    assert "nnparity-no-such-distribution not installed" in row.message


def test_missing_dataset_is_skipped(tmp_path):
    result = run_verify([get_spec("cifar-cnn")], ["torch"], steps=1, data_dir=str(tmp_path))

    assert not result.failed
    (row,) = [r for r in result.rows if r.backend == "torch"]
    assert row.status == "skipped"
    assert "dataset missing" in row.message


def test_command_prints_table_and_exit_status(tmp_path):
    command = [sys.executable, "-m", "nnparity.harness.verify", "--models", "binary-adder-rnn",
               "--backends", "torch", "--steps", "2", "--out", str(tmp_path)]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "grad:simple_rnn1/W_rec" in completed.stdout
    assert "max rel" in completed.stdout
    assert (tmp_path / VERIFY_FILE).exists()


def test_command_rejects_unknown_backend(tmp_path):
    command = [sys.executable, "-m", "nnparity.harness.verify", "--models", "moons-mlp",
               "--backends", "no-such-backend", "--out", str(tmp_path)]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 2
    assert "unknown backend 'no-such-backend'" in completed.stderr
