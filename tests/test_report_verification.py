"""The verification column: ``verify.json`` in a results directory, read into the report.

The cell tests build records and verify documents by hand, because they test
how the report reads them. The command tests make them with real runs and
real verifications.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from nnparity.harness.output import OutputDirError, archive_previous
from nnparity.harness.results import RunRecord
from nnparity.harness.verify import refresh_run_report, run_verify
from nnparity.models import get_spec
from nnparity.report import verification
from nnparity.report.verification import Verification, load, merge, verification_cell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_SOURCE = os.path.join(ROOT, "tests", "plugin_example")
BIN = os.path.dirname(sys.executable)


def record(backend="torch", model="moons-mlp", dtype="float32", step_hash="abc", versions=None, **fields):
    return RunRecord(run_id=f"{model}.{backend}.{dtype}", model=model, spec_hash="s", step_hash=step_hash,
                     backend=backend, dtype=dtype, status="ok",
                     framework_versions={"torch": "2.13.0"} if versions is None else versions, **fields)


def document(rows, dtype="float64", step_hash="abc", versions=None, **fields):
    return {
        "date": "2026-12-04T00:00:00Z", "command": "nnparity verify", "dtype": dtype, "steps": 10, "device": "cpu",
        "tolerances": {"step0": 1e-9, "curve": 1e-6, "final": 1e-6},
        "backends": {"torch": {"versions": {"torch": "2.13.0"} if versions is None else versions}},
        "models": {"moons-mlp": {"step_hash": step_hash}},
        "rows": rows, **fields,
    }


def row(quantity="logits", status="pass", model="moons-mlp", backend="torch", max_rel=1e-15, message=""):
    return {"model": model, "backend": backend, "quantity": quantity, "max_rel": max_rel, "max_abs": 0.0,
            "tolerance": 1e-9, "status": status, "message": message}


# The cell -----------------------------------------------------------------------


def test_cell_passes_and_names_the_verified_dtype():
    found = Verification([document([row("logits"), row("loss@0")])])

    assert verification_cell(record(), found) == "pass (float64)"


def test_cell_names_first_failing_quantity_with_its_difference():
    rows = [row("logits"), row("grad:dense1/b", "FAIL", max_rel=3.2e-4), row("final:dense1/b", "FAIL", max_rel=1.0)]

    cell = verification_cell(record(), Verification([document(rows)]))

    assert cell == "FAIL grad:dense1/b (3.2e-04 > 1.0e-09) (float64)"


def test_cell_shows_worker_error_and_skip_reasons():
    error = Verification([document([row("all", "failed", max_rel=None, message="worker exited with code 1\ntrace")])])
    skipped = Verification([document([row("all", "skipped", max_rel=None, message="float64 is not supported")])])

    assert verification_cell(record(), error) == "error: worker exited with code 1 (float64)"
    assert verification_cell(record(), skipped) == "skipped: float64 is not supported (float64)"


def test_cell_of_unverified_pair():
    other_backend = Verification([document([row(backend="jax")])])

    assert verification_cell(record(), Verification()) == "not verified"
    assert verification_cell(record(), None) == "not verified"
    assert verification_cell(record(), other_backend) == "not verified"


def test_cell_of_reference_and_baseline():
    found = Verification([document([row()])])
    baseline = RunRecord(run_id="b", model="moons-logreg", spec_hash="baseline-logistic", backend="scikit-learn",
                         status="ok")

    assert verification_cell(record(backend="numpy"), found) == "reference"
    assert verification_cell(baseline, found) == "-"


def test_cell_refuses_verification_of_another_spec_or_version():
    found = Verification([document([row()], step_hash="abc", versions={"torch": "2.12.0"})])

    assert verification_cell(record(step_hash="other"), found) == "other spec verified"
    assert verification_cell(record(), found) == "other version verified (torch 2.12.0)"


def test_cell_prefers_failure_then_float64():
    fail64, pass64 = document([row("logits", "FAIL", max_rel=1e-3)]), document([row()])
    pass32 = document([row()], dtype="float32")
    skip64 = document([row("all", "skipped", message="no float64")])

    # A float64 FAIL shows on a float32 run too, even where float32 passed.
    assert verification_cell(record(dtype="float32"), Verification([fail64, pass32])).startswith("FAIL logits")
    assert verification_cell(record(dtype="float32"), Verification([pass32, pass64])) == "pass (float64)"
    assert verification_cell(record(dtype="float32"), Verification([skip64, pass32])) == "pass (float32)"
    # Only the newest verification in each dtype counts: the older float64 FAIL was replaced.
    assert verification_cell(record(), Verification([pass64, fail64])) == "pass (float64)"


def test_cell_skips_other_version_verification():
    old = document([row("logits", "FAIL", max_rel=1e-3)], dtype="float32", versions={"torch": "2.12.0"})

    assert verification_cell(record(), Verification([document([row()]), old])) == "pass (float64)"


def test_cell_names_other_device():
    found = Verification([document([row()])])

    assert verification_cell(record(device="cuda"), found) == "pass (float64 on cpu)"


# verify.json ----------------------------------------------------------------------


def test_merge_keeps_earlier_verifications_of_other_pairs(tmp_path):
    first = document([row(model="mnist-cnn")])
    (tmp_path / "verify.json").write_text(json.dumps(merge(first, str(tmp_path))))

    second = merge(document([row(model="moons-mlp")]), str(tmp_path))
    (tmp_path / "verify.json").write_text(json.dumps(second))
    third = merge(document([row(model="moons-mlp")]), str(tmp_path))

    assert [d["rows"][0]["model"] for d in second["earlier"]] == ["mnist-cnn"]
    # The third covers what the second covered, so it replaces it and keeps the first.
    assert [d["rows"][0]["model"] for d in third["earlier"]] == ["mnist-cnn"]
    assert len(load(str(tmp_path)).documents) == 2


def test_unreadable_verify_file_is_reported_not_fatal(tmp_path):
    (tmp_path / "verify.json").write_text("{not json")

    found = load(str(tmp_path))

    assert found.documents == []
    assert "verify.json could not be read" in found.problem
    assert verification_cell(record(), found) == "unknown: verify.json unreadable"
    assert "nnparity verify --out" in verification.header_lines(found)[0]


@pytest.mark.parametrize("damage, problem", [
    ({"rows": [row(), "not a row"]}, "rows that are not a list of objects"),
    ({"dtype": ["float64"]}, "dtype ['float64'], not float32 or float64"),
    ({"models": []}, "no models and backends to match runs against"),
], ids=["row", "dtype", "models"])
def test_damaged_verification_speaks_for_no_run(tmp_path, damage, problem):
    # The damaged one is an earlier float64 verification; the newest float32 one alone would read as a pass.
    newest = {**document([row()], dtype="float32"), "earlier": [{**document([row()]), **damage}]}
    (tmp_path / "verify.json").write_text(json.dumps(newest))

    found = load(str(tmp_path))

    assert problem in found.problem
    assert verification_cell(record(), found) == "unknown: verify.json unreadable"


def test_unknown_or_missing_status_is_no_pass():
    rows = [row(), {key: value for key, value in row().items() if key != "status"}]

    assert verification_cell(record(), Verification([document(rows)])) == \
        "error: unknown status None in verify.json (float64)"
    assert verification_cell(record(), Verification([document([row(status="PASS")])])).startswith("error: unknown")


def test_bad_tolerances_read_as_not_recorded():
    found = Verification([{**document([row()]), "tolerances": {}}])

    assert "relative tolerances not recorded" in verification.header_lines(found)[0]


def test_newest_verification_of_the_same_spec_counts():
    other_spec = document([row("logits", "FAIL", max_rel=1.0)], step_hash="other")
    found = Verification([other_spec, document([row()])])

    assert verification_cell(record(), found) == "pass (float64)"
    assert verification_cell(record(step_hash="other"), found).startswith("FAIL logits")


def test_new_suite_moves_verification_to_history(tmp_path):
    (tmp_path / "runs.jsonl").write_text("")
    (tmp_path / "verify.json").write_text("{}")

    target = archive_previous(str(tmp_path))

    assert os.path.exists(os.path.join(target, "verify.json"))
    assert not (tmp_path / "verify.json").exists()


def test_verification_without_runs_stays_for_the_next_suite(tmp_path):
    (tmp_path / "verify.json").write_text("{}")

    assert archive_previous(str(tmp_path)) is None
    assert (tmp_path / "verify.json").exists()


def test_failed_move_to_history_puts_everything_back(tmp_path, monkeypatch):
    for name in ("runs.jsonl", "report.md", "verify.json"):
        (tmp_path / name).write_text(name)
    real_replace = os.replace

    def replace(source, target):
        if source.endswith("verify.json"):
            raise PermissionError(1, "Operation not permitted")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputDirError, match="verify.json: Operation not permitted; nothing was moved"):
        archive_previous(str(tmp_path))

    assert sorted(os.listdir(tmp_path)) == ["report.md", "runs.jsonl", "verify.json"]


def test_interrupted_verification_keeps_the_models_it_finished(tmp_path):
    def progress(done, total, model, backend, status, seconds):
        if model == "mnist-softmax":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_verify([get_spec("moons-mlp"), get_spec("mnist-softmax")], ["torch"], steps=1, out_dir=str(tmp_path),
                   progress=progress)

    document = json.loads((tmp_path / "verify.json").read_text())
    assert document["complete"] is False
    assert {r["model"] for r in document["rows"]} == {"moons-mlp"}
    assert "interrupted before its last model" in verification.header_lines(load(str(tmp_path)))[0]


def test_verify_options_need_verify(tmp_path, capsys):
    from nnparity.cli import main

    status = main(["run", "--models", "moons-mlp", "--verify-steps", "3", "--out", str(tmp_path)])

    assert status == 2
    assert "--verify-steps has no effect without --verify; add --verify" in capsys.readouterr().err
    assert main(["run", "--models", "moons-mlp", "--verify", "--verify-dtype", "float16", "--out", str(tmp_path)]) == 2
    assert "invalid --verify-dtype 'float16'" in capsys.readouterr().err
    assert main(["run", "--models", "moons-mlp", "--verify", "--verify-dtype", "", "--out", str(tmp_path)]) == 2
    assert "invalid --verify-dtype ''" in capsys.readouterr().err


def test_dtype_lists_accept_both_and_drop_repeats():
    from nnparity.cli import parse_dtypes

    assert parse_dtypes("both", "--dtype") == ["float32", "float64"]
    assert parse_dtypes("float64,,float64,float32", "--dtype") == ["float64", "float32"]


def test_verify_steps_beyond_the_schedule_name_the_limit():
    result = run_verify([get_spec("moons-mlp")], ["torch"], steps=25000)

    assert [r.status for r in result.rows] == ["failed"]
    assert "25000 steps is more than the 20000 of moons-mlp's schedule" in result.rows[0].message


# Real runs and verifications ----------------------------------------------------


def nnparity(*args, env=None, timeout=900):
    return subprocess.run([os.path.join(BIN, "nnparity"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def summary_column(out_dir, column: str) -> dict[str, str]:
    with open(os.path.join(out_dir, "summary.csv"), newline="") as handle:
        return {r["backend"]: r[column] for r in csv.DictReader(handle)}


def test_run_with_verify_fills_the_column(tmp_path):
    out = tmp_path / "out"

    completed = nnparity("run", "--models", "moons-mlp", "--backends", "numpy,torch", "--max-steps", "5",
                         "--verify", "--verify-steps", "3", "--out", str(out))

    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((out / "verify.json").read_text())
    assert document["dtype"] == "float64"
    assert document["steps"] == 3
    assert document["tolerances"]["step0"] == 1e-9
    assert "--verify" in document["command"]
    assert summary_column(out, "verification") == {"numpy": "reference", "torch": "pass (float64)"}
    report = (out / "report.md").read_text()
    assert "| pass (float64) |" in report
    assert "3 steps in float64 on cpu against numpy, relative tolerances step 0 1e-09" in report
    assert "[2/2] verify moons-mlp on torch: ok" in completed.stderr, completed.stderr


def test_run_with_verify_checks_keras_torch_in_float32(tmp_path):
    out = tmp_path / "out"

    completed = nnparity("run", "--models", "moons-mlp", "--backends", "numpy,keras-torch", "--max-steps", "3",
                         "--verify", "--verify-steps", "2", "--out", str(out), "--no-progress")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    # keras-torch refuses float64, so it gets the float32 verification; an explicit --verify-dtype would not.
    assert summary_column(out, "verification")["keras-torch"] == "pass (float32)"
    assert [d["dtype"] for d in load(str(out)).documents] == ["float32", "float64"]


def test_verify_into_results_dir_updates_report(tmp_path):
    out = tmp_path / "out"
    completed = nnparity("run", "--models", "mnist-softmax", "--backends", "numpy,jax", "--max-steps", "5",
                         "--dtype", "float32,float64", "--out", str(out), "--no-progress")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert set(summary_column(out, "verification").values()) == {"reference", "not verified"}

    completed = nnparity("verify", "--steps", "2", "--dtype", "float32", "--out", str(out), "--no-progress")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "models mnist-softmax; backends jax" in completed.stderr
    assert {r["backend"] for r in json.loads((out / "verify.json").read_text())["rows"]} == {"jax"}
    assert f"updated the verification column of {out / 'report.md'}" in completed.stdout
    with open(out / "summary.csv", newline="") as handle:
        cells = {(r["backend"], r["dtype"]): r["verification"] for r in csv.DictReader(handle)}
    # The float64 run has no float64 verification, so its cell shows the float32 one and names that dtype.
    assert cells[("jax", "float32")] == "pass (float32)"
    assert cells[("jax", "float64")] == "pass (float32)"


@pytest.fixture
def faulty_plugin_env(tmp_path):
    """An environment whose entry points add ``faulty-l2``: the reference with L2 applied to biases too."""
    site = tmp_path / "site"
    dist_info = site / "faulty_l2-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: faulty-l2\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[nnparity.backends]\nfaulty-l2 = faulty_l2:info\n")
    (site / "faulty_l2.py").write_text(
        "from nnparity.backends.registry import BackendInfo\n\n\n"
        "def info():\n"
        "    return BackendInfo('faulty-l2', 'nnparity_example_plugin.faulty:L2OnBiasesAdapter', ('numpy',))\n"
    )
    path = os.pathsep.join(filter(None, [str(site), PLUGIN_SOURCE, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_run_with_verify_reports_a_wrong_adapter(tmp_path, faulty_plugin_env):
    out = tmp_path / "out"

    completed = nnparity("run", "--models", "moons-mlp", "--backends", "numpy,faulty-l2", "--max-steps", "5",
                         "--verify", "--verify-steps", "2", "--out", str(out), "--no-progress", env=faulty_plugin_env)

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "Verification failed" in completed.stderr
    cell = summary_column(out, "verification")["faulty-l2"]
    # The biases start at zero, so their extra L2 term shows only after the first update, on a bias.
    assert cell.startswith("FAIL final:dense"), cell
    assert "/b (" in cell, cell
    assert "(model, backend) pairs: 1 FAIL." in (out / "report.md").read_text()
    # The runs were recorded and reported before the verification.
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {r["backend"]: r["status"] for r in records} == {"numpy": "ok", "faulty-l2": "ok"}


def test_verify_accepts_a_spec_file(tmp_path):
    completed = nnparity("verify", "--spec", os.path.join(ROOT, "examples", "moons-relu.toml"), "--backends", "torch",
                         "--steps", "2", "--out", str(tmp_path), "--no-progress")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((tmp_path / "verify.json").read_text())
    assert set(document["models"]) == {"moons-relu8"}
    assert {r["status"] for r in document["rows"]} == {"pass"}


def test_verify_names_spec_file_model(tmp_path):
    out = tmp_path / "out"
    completed = nnparity("run", "--spec", os.path.join(ROOT, "examples", "moons-relu.toml"), "--backends",
                         "numpy,torch", "--max-steps", "3", "--out", str(out), "--no-progress")
    assert completed.returncode == 0, completed.stdout + completed.stderr

    completed = nnparity("verify", "--models", "moons-relu8", "--steps", "2", "--out", str(out), "--no-progress")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert summary_column(out, "verification")["torch"] == "pass (float64)"


def test_refresh_leaves_a_directory_without_runs_alone(tmp_path):
    result = run_verify([get_spec("moons-mlp")], [], steps=1, out_dir=str(tmp_path))

    assert not result.failed
    assert refresh_run_report(str(tmp_path)) is None
    assert not (tmp_path / "report.md").exists()
