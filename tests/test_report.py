"""Reports from hand-built records: the parity column, the failure list, plots and run comparison."""

import os

import numpy as np
import pytest

from nnparity.harness.results import RunRecord, append_record
from nnparity.models import get_spec
from nnparity.report import write_report
from nnparity.report.boundary import dense_forward
from nnparity.report.compare import compare_records, format_comparison
from nnparity.report import tables
from nnparity.report.tables import curve_difference, first_divergence, fmt_ms, fmt_number, fmt_s, parity_cell

STEPS = [0, 10, 20]
TIMINGS = {
    "import_s": 0.5, "build_s": 0.01, "first_step_s": 0.2, "warmup_steps": 5, "step_median_s": 0.0123,
    "step_q1_s": 0.012, "step_q3_s": 0.0125, "step_samples": [0.012, 0.0123, 0.0125], "train_total_s": 1.5,
    "eval_s": 0.1, "samples_per_s": 16260.0,
}


def record(run_id, backend, model="moons-mlp", dtype="float64", status="ok", loss=None, reason="", **fields):
    curve = {"steps": STEPS[:len(loss)], "loss": loss} if loss else {"steps": [], "loss": []}
    timings = dict(TIMINGS) if status == "ok" else {}
    return RunRecord(
        run_id=run_id, model=model, spec_hash="h", backend=backend, dtype=dtype, status=status, reason=reason,
        loss_curve=curve, timings=timings, train_accuracy=0.9 if status == "ok" else None,
        test_accuracy=0.88 if status == "ok" else None, final_loss=0.4 if status == "ok" else None,
        peak_memory_mb=120.0, device_used="cpu", **fields,
    )


@pytest.fixture
def results_dir(tmp_path):
    records = [
        record("moons.numpy", "numpy", loss=[0.7, 0.5, 0.4], params_file="params/moons.numpy.npz"),
        record("moons.torch", "torch", loss=[0.7, 0.5, 0.404]),
        record("moons.jax", "jax", status="failed", loss=[0.7, float("nan")],
               reason="diverged: loss is nan at step 10"),
        record("moons.tf", "tensorflow", status="skipped",
               reason="backend 'tensorflow': tensorflow-cpu not installed; install with: pip install tensorflow-cpu"),
        record("softmax.torch", "torch", model="mnist-softmax", dtype="float32", loss=[2.3, 1.0]),
        record("logreg", "scikit-learn", model="moons-logreg"),
    ]
    for item in records:
        append_record(str(tmp_path), item)
    os.makedirs(tmp_path / "params")
    np.savez(tmp_path / "params" / "moons.numpy.npz", **get_spec("moons-mlp").initial_params())
    return tmp_path


def table_row(report: str, model: str, backend: str) -> list[str]:
    section = report.split(f"## {model}\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == backend:
            return cells
    raise AssertionError(f"no row for {backend} in the {model} table")


PARITY = tables.COLUMNS.index("max rel. loss diff vs numpy")


def test_report_parity_column(results_dir):
    write_report(str(results_dir))
    report = (results_dir / "report.md").read_text()

    assert table_row(report, "moons-mlp", "numpy")[PARITY] == "ref"
    assert table_row(report, "moons-mlp", "torch")[-1] == "not verified"
    assert "Verification: none. These runs were not checked against the NumPy reference" in report
    assert table_row(report, "moons-mlp", "torch")[PARITY] == "0.0099 (> 1e-09 from step 20)"
    assert table_row(report, "moons-mlp", "jax")[PARITY] == "nan (> 1e-09 from step 10)"
    assert table_row(report, "moons-mlp", "tensorflow")[PARITY] == "-"
    assert table_row(report, "mnist-softmax", "torch")[PARITY] == "-"
    assert table_row(report, "moons-logreg", "scikit-learn")[3] == "ok"


def test_report_formats_numbers(results_dir):
    write_report(str(results_dir))
    row = table_row((results_dir / "report.md").read_text(), "moons-mlp", "numpy")
    assert row[7] == "0.01 s"
    assert row[8] == "0.2 s"
    assert row[9] == "12.3 ms [12-12.5]"
    assert row[10] == "1.5 s"
    assert row[11] == "1.626e+04"
    assert row[12] == "120 MB"


def test_report_lists_failed_and_skipped(results_dir):
    write_report(str(results_dir))
    report = (results_dir / "report.md").read_text()
    problems = report.split("## Failed and skipped runs", 1)[1]

    assert "`moons.jax` **failed**: diverged: loss is nan at step 10" in problems
    assert "`moons.tf` **skipped**: backend 'tensorflow': tensorflow-cpu not installed" in problems
    assert "moons.torch" not in problems
    assert "Runs: 6 (4 ok, 1 failed, 1 skipped)." in report
    assert "Shortened schedules" not in report


def test_report_writes_plots_and_html(results_dir):
    written = write_report(str(results_dir))
    for name in ("loss_curves_moons-mlp.png", "loss_curves_mnist-softmax.png", "step_time.png",
                 "accuracy_vs_time.png", "decision_boundary_h3.png", "summary.csv"):
        assert (results_dir / name).is_file(), name
    html = open(written["html"]).read()
    assert html.count("data:image/png;base64,") == 5
    assert "diverged: loss is nan at step 10" in html


def test_backend_colours_match_across_plots(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgba

    from nnparity.report import plots

    figures = {}

    def keep_figure(figure, out_dir, name):
        figures[name] = figure
        return name

    monkeypatch.setattr(plots, "_save", keep_figure)
    records = [
        record("n", "numpy", loss=[0.7, 0.5, 0.4]),
        record("t", "torch", loss=[0.7, 0.5, 0.41]),
        record("j", "jax", loss=[0.7, 0.5, 0.42]),
    ]
    plots.loss_curves(str(tmp_path), "moons-mlp", records)
    plots.accuracy_vs_time(str(tmp_path), records)

    curve_axis = figures["loss_curves_moons-mlp.png"].axes[0]
    line_colors = {line.get_label().split()[0]: to_rgba(line.get_color()) for line in curve_axis.get_lines()}
    scatter_axis = figures["accuracy_vs_time.png"].axes[0]
    point_colors = {c.get_label().split()[0]: to_rgba(c.get_facecolor()[0]) for c in scatter_axis.collections}
    assert set(line_colors) == {"numpy", "torch", "jax"}
    assert point_colors == line_colors
    assert len(set(line_colors.values())) == 3


def test_load_warning_when_machine_busy(tmp_path):
    busy = {"load_average_1m": 5.4, "cpu_count": 2}
    quiet = {"load_average_1m": 0.3, "cpu_count": 8}
    append_record(str(tmp_path), record("busy", "torch", loss=[0.7], threads=2, environment=busy))
    append_record(str(tmp_path), record("quiet", "numpy", loss=[0.7], threads=2, environment=quiet))

    write_report(str(tmp_path), plots=False)

    report = (tmp_path / "report.md").read_text()
    assert "Warning: 1 of 2 runs started while the 1-minute load average (up to 5.4)" in report
    assert "(2 cores - 2 threads)" in report
    assert "timings may be inflated" in report
    assert "timings may be inflated" in (tmp_path / "report.html").read_text()


def test_measured_other_cpu_decides_the_warning(tmp_path):
    # The load average counts the suite's own previous run; the measured share of other processes does not.
    own_load = {"load_average_1m": 1.9, "cpu_count": 2, "other_cpu_cores": 0.05}
    shared = {"load_average_1m": 0.2, "cpu_count": 2, "other_cpu_cores": 1.2}
    append_record(str(tmp_path), record("own", "numpy", loss=[0.7], threads=2, environment=own_load))
    append_record(str(tmp_path), record("shared", "torch", loss=[0.7], threads=2, environment=shared))

    write_report(str(tmp_path), plots=False)

    report = (tmp_path / "report.md").read_text()
    assert "Warning: during 1 of 2 runs, other processes used on average up to 1.2 cores" in report
    assert "left 0 free (2 cores - 2 threads)" in report


def test_no_load_warning_on_quiet_machine(results_dir):
    write_report(str(results_dir), plots=False)
    assert "Warning:" not in (results_dir / "report.md").read_text()


def test_report_of_empty_runs_says_no_runs(tmp_path):
    (tmp_path / "runs.jsonl").write_text("")

    write_report(str(tmp_path))

    report = (tmp_path / "report.md").read_text()
    assert "No runs: runs.jsonl in this directory contains no records" in report
    assert "?" not in report
    assert "unknown" not in report
    assert "No runs" in (tmp_path / "report.html").read_text()


def test_curve_difference_uses_shared_steps():
    ours = {"steps": [0, 5, 10], "loss": [1.0, 2.0, 3.0]}
    reference = {"steps": [0, 10], "loss": [1.0, 3.3]}
    assert curve_difference(ours, reference) == pytest.approx(0.3 / 3.3)
    assert curve_difference(ours, {"steps": [1], "loss": [1.0]}) is None


def test_first_divergence_step():
    reference = {"steps": [0, 1, 2, 3], "loss": [1.0, 1.0, 1.0, 1.0]}
    curve = {"steps": [0, 1, 2, 3], "loss": [1.0, 1.0 + 1e-12, 1.001, 1.0]}
    assert first_divergence(curve, reference, 1e-9) == 2
    assert first_divergence(curve, reference, 1e-2) is None


def test_parity_cell_within_tolerance():
    reference = record("n", "numpy", dtype="float32", loss=[1.0, 1.0])
    close = record("t", "torch", dtype="float32", loss=[1.0, 1.00001])
    assert parity_cell(close, [reference, close]) == "1e-05"


def test_parity_cell_matches_repeat():
    numpy_runs = [record("n0", "numpy", loss=[1.0, 1.0], repeat=0), record("n1", "numpy", loss=[1.0, 2.0], repeat=1)]
    torch_run = record("t1", "torch", loss=[1.0, 2.0], repeat=1)
    assert parity_cell(torch_run, numpy_runs + [torch_run]) == "0"


def test_number_formats():
    assert fmt_ms(0.0123456) == "12.35 ms"
    assert fmt_s(123.456) == "123.5 s"
    assert fmt_number(None) == "-"
    assert fmt_number(0.91234) == "0.9123"


def test_dense_forward_matches_tanh_network():
    spec = get_spec("moons-mlp")
    params = spec.initial_params()
    x = np.array([[0.5, -0.25], [1.0, 2.0]])
    expected = np.tanh(x @ params["dense1/W"] + params["dense1/b"]) @ params["dense2/W"] + params["dense2/b"]
    np.testing.assert_allclose(dense_forward(spec, params, x), expected)


# Compare --------------------------------------------------------------------------------


def timed(run_id, backend, step_s, status="ok", accuracy=0.9):
    item = record(run_id, backend, status=status)
    if status == "ok":
        item.timings["step_median_s"] = step_s
        item.test_accuracy = accuracy
    return item


def test_compare_marks():
    old = [timed("a", "numpy", 0.010), timed("b", "torch", 0.010), timed("c", "jax", 0.010),
           timed("d", "tensorflow", 0.010), timed("e", "theano", 0.010, status="failed")]
    new = [timed("a", "numpy", 0.020), timed("b", "torch", 0.005), timed("c", "jax", 0.0105, accuracy=0.85),
           timed("d", "tensorflow", 0.010, status="failed"), timed("e", "theano", 0.010)]

    rows = {row.backend: row for row in compare_records(old, new, threshold=1.1)}

    assert rows["numpy"].mark == "-"
    assert rows["numpy"].ratio == pytest.approx(2.0)
    assert rows["torch"].mark == "+"
    assert rows["jax"].mark == " "
    assert rows["jax"].new_accuracy - rows["jax"].old_accuracy == pytest.approx(-0.05)
    assert rows["tensorflow"].mark == "!"
    assert rows["theano"].mark == "+"
    text = format_comparison(list(rows.values()))
    assert "-0.0500" in text
    assert "ok -> failed" in text


def test_compare_names_step_counts_when_they_differ():
    old, new = timed("a", "numpy", 0.010, accuracy=0.9), timed("a", "numpy", 0.010, accuracy=0.8)
    old.steps, new.steps = 20, 5

    text = format_comparison(compare_records([old], [new]))

    assert "-0.1000 (steps 20 -> 5)" in text
    assert text.startswith("mark  old step")


def test_compare_rejects_threshold_below_one():
    with pytest.raises(ValueError, match="threshold must be above 1"):
        compare_records([], [], threshold=0.9)
