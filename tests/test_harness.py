"""The harness: planning, shared inputs, worker processes, failure handling and the results store."""

import datetime
import json
import math
import os
import textwrap

import numpy as np
import pytest

from nnparity.backends.registry import BackendInfo, get_backend
from nnparity.harness import inputs, schedule
from nnparity.harness.labels import LabelMismatch, LabelSummary
from nnparity.harness.output import OutputDirError, archive_previous, prepare_out_dir
from nnparity.harness.plan import BASELINE_BACKEND, load_spec_file, plan_jobs, prepare_inputs
from nnparity.harness.results import RUNS_FILE, SCHEMA_VERSION, RunRecord, read_records
from nnparity.harness.runner import run_suite
from nnparity.harness.worker import run_job, warmup_count
from nnparity.models import get_spec
from nnparity.specs import SGD, Schedule, SpecError

NUMPY = get_backend("numpy")
EXAMPLE_SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "moons-relu.toml")


def numpy_jobs(tmp_path, models=("moons-mlp",), max_steps=30, backends=(NUMPY,), **options):
    jobs = plan_jobs(list(models), list(backends), max_steps=max_steps, threads=1, **options)
    prepare_inputs(jobs, str(tmp_path))
    return jobs


def adapter_module(tmp_path, name: str, body: str) -> BackendInfo:
    """A test-only backend whose adapter module, in ``tmp_path``, runs ``body`` when imported."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return BackendInfo(name, f"{name}:Adapter", requires=(), summary="test-only backend")


def with_python_path(jobs, path):
    for job in jobs:
        job.python_path = [str(path)]
    return jobs


# Planning ---------------------------------------------------------------------------


def test_plan_expands_matrix(tmp_path):
    torch = get_backend("torch")
    jobs = plan_jobs(["moons-mlp", "moons-logreg"], [NUMPY, torch], dtypes=["float32", "float64"], repeats=2)

    network = [j for j in jobs if j.model == "moons-mlp"]
    baseline = [j for j in jobs if j.model == "moons-logreg"]
    assert len(network) == 2 * 2 * 2
    assert len(baseline) == 2
    assert {j.backend for j in baseline} == {BASELINE_BACKEND}
    assert {(j.backend, j.dtype, j.repeat) for j in network} == {
        (b, d, r) for b in ("numpy", "torch") for d in ("float32", "float64") for r in (0, 1)
    }
    assert len({j.run_id for j in jobs}) == len(jobs)
    hashes = {j.dtype: j.spec_hash for j in network}
    assert hashes["float32"] != hashes["float64"]


def test_plan_marks_unavailable_backend_skipped():
    absent = BackendInfo("absent", "nowhere:Adapter", requires=("nnparity-test-no-such-distribution",))
    jobs = plan_jobs(["moons-mlp"], [NUMPY, absent])
    reasons = {j.backend: j.skip_reason for j in jobs}
    assert reasons["numpy"] == ""
    assert "nnparity-test-no-such-distribution not installed" in reasons["absent"]


def test_plan_scales_timeout_with_schedule_length():
    tutorial = {j.model: j.timeout_s for j in plan_jobs(["mnist-cnn", "moons-logreg"], [NUMPY])}
    long = {j.model: j.timeout_s for j in plan_jobs(["mnist-cnn", "moons-logreg"], [NUMPY], schedule_name="long")}
    chosen = plan_jobs(["mnist-cnn"], [NUMPY], schedule_name="long", timeout_s=5)

    steps = get_spec("mnist-cnn", "long").schedule.steps / get_spec("mnist-cnn").schedule.steps
    assert long["mnist-cnn"] == pytest.approx(tutorial["mnist-cnn"] * steps)
    assert steps > 1
    assert long["moons-logreg"] == tutorial["moons-logreg"]
    assert [j.timeout_s for j in chosen] == [5]


def test_plan_rejects_bad_options():
    with pytest.raises(ValueError, match="max_steps"):
        plan_jobs(["moons-mlp"], [NUMPY], max_steps=0)
    with pytest.raises(ValueError, match="dropout mode"):
        plan_jobs(["moons-mlp"], [NUMPY], dropout_mode="random")


def test_warmup_count():
    assert warmup_count(1) == 0
    assert warmup_count(30) == 2
    assert warmup_count(20000) == 5


# Identical inputs -------------------------------------------------------------------


def test_inputs_written_once_per_spec(tmp_path):
    torch = get_backend("torch")
    jobs = numpy_jobs(tmp_path, max_steps=40, backends=(NUMPY, torch))
    spec = get_spec("moons-mlp").replace(dtype="float32").validate()

    assert os.listdir(tmp_path / ".inputs") == [jobs[0].spec_hash]
    assert jobs[0].plan_path == jobs[1].plan_path
    params = inputs.load_params(jobs[0].inputs_dir)
    expected = spec.initial_params()
    assert set(params) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(params[key], expected[key])
    plan = inputs.load_plan(jobs[0].plan_path)
    assert len(plan) == 40
    for got, want in zip(plan, schedule.batch_plan(spec.schedule, 200)[:40]):
        np.testing.assert_array_equal(got, want)
    # 40 full-batch steps share one stored index array.
    with np.load(jobs[0].plan_path) as archive:
        assert archive["indices"].shape == (200,)


def test_plan_file_roundtrip_shuffled(tmp_path):
    plan = schedule.batch_plan(Schedule(batch_size=7, epochs=2, shuffle_seed=3), 20)
    loaded = inputs.load_plan(inputs.write_plan(str(tmp_path), plan))
    assert [b.tolist() for b in loaded] == [b.tolist() for b in plan]


def test_worker_loads_shared_params(tmp_path):
    jobs = numpy_jobs(tmp_path, max_steps=3)
    zeros = {k: np.zeros_like(v) for k, v in inputs.load_params(jobs[0].inputs_dir).items()}
    inputs.write_params(jobs[0].inputs_dir, zeros)

    result = run_job(jobs[0])

    # All-zero parameters give equal logits, so the first loss is exactly log 2 per sample.
    assert result["status"] == "ok", result["reason"]
    assert result["loss_curve"]["loss"][0] == pytest.approx(math.log(2.0), rel=1e-6)


# Worker runs end to end ---------------------------------------------------------------


def test_numpy_moons_run_end_to_end(tmp_path):
    jobs = numpy_jobs(tmp_path, max_steps=30)
    suite = run_suite(jobs, str(tmp_path))
    record = suite.records[0]

    assert record.status == "ok", record.reason
    assert record.steps == 30
    assert record.schedule_shortened is True
    assert record.loss_curve["steps"][0] == 0
    assert record.loss_curve["steps"][-1] == 29
    assert all(math.isfinite(v) for v in record.loss_curve["loss"])
    assert 0.5 <= record.test_accuracy <= 1.0
    assert record.final_loss > 0
    timings = record.timings
    for key in ("import_s", "build_s", "first_step_s", "train_total_s", "eval_s", "samples_per_s"):
        assert timings[key] > 0, key
    assert timings["warmup_steps"] == 2
    assert len(timings["step_samples"]) == 30 - 1 - 2
    assert timings["step_q1_s"] <= timings["step_median_s"] <= timings["step_q3_s"]
    assert record.peak_memory_mb > 10
    assert record.device_used == "cpu"
    assert os.path.isfile(tmp_path / record.params_file)
    assert read_records(str(tmp_path))[0].to_dict() == record.to_dict()
    # Read when the run started, so the report can flag timings taken on a busy machine.
    assert record.environment["cpu_count"] == os.cpu_count()
    assert record.environment["load_average_1m"] >= 0
    assert record.environment["other_cpu_cores"] >= 0


def test_runner_reports_progress(tmp_path):
    jobs = numpy_jobs(tmp_path, max_steps=30)
    events = []

    run_suite(jobs, str(tmp_path), callback=events.append)

    kinds = [e.kind for e in events]
    assert kinds[0] == "start"
    assert kinds[-1] == "end"
    train = [(e.step, e.total) for e in events if e.kind == "progress" and e.phase == "train"]
    evaluation = [(e.step, e.total) for e in events if e.kind == "progress" and e.phase == "eval"]
    assert train[-1] == (30, 30)
    assert evaluation[-1] == (400, 400)
    assert events[-1].record.status == "ok"


def test_worker_needs_no_pandas_or_matplotlib(tmp_path):
    # Packages earlier on sys.path that fail on import stand in for the legacy Theano environment.
    blockers = tmp_path / "blockers"
    for name in ("pandas", "matplotlib", "tqdm"):
        (blockers / name).mkdir(parents=True)
        (blockers / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    jobs = with_python_path(numpy_jobs(tmp_path, max_steps=5), blockers)

    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "ok", record.reason


def test_baseline_run(tmp_path):
    jobs = numpy_jobs(tmp_path, models=("moons-logreg",))
    record = run_suite(jobs, str(tmp_path)).records[0]
    assert record.backend == BASELINE_BACKEND
    assert record.status == "ok", record.reason
    assert 0.7 < record.test_accuracy < 0.95
    assert record.timings["train_total_s"] > 0
    assert "scikit-learn" in record.framework_versions


def test_divergence_is_failed_with_step(tmp_path):
    jobs = numpy_jobs(tmp_path, max_steps=50)
    spec = get_spec("moons-mlp").replace(dtype="float32", optimizer=SGD(learning_rate=1e6))
    spec.schedule = Schedule(batch_size=None, steps=20000, shuffle=False, record_every=1)
    jobs[0].spec = spec.validate().to_dict()

    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "failed"
    assert record.reason.startswith("diverged: loss is ")
    step = int(record.reason.rsplit(" ", 1)[1])
    assert 0 < step < 50
    assert record.loss_curve["steps"][-1] == step
    assert not math.isfinite(record.loss_curve["loss"][-1])
    assert all(math.isfinite(v) for v in record.loss_curve["loss"][:-1])


def test_crashing_worker_is_failed_with_exit_code(tmp_path):
    crasher = adapter_module(tmp_path, "nnparity_test_crasher", "import os\nos._exit(3)\n")
    jobs = with_python_path(numpy_jobs(tmp_path, backends=(crasher,)), tmp_path)

    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "failed"
    assert record.reason.startswith("worker exited with code 3")


def test_killed_worker_is_failed_with_signal(tmp_path):
    body = "import os, signal, sys\nsys.stderr.write('about to die\\n')\nos.kill(os.getpid(), signal.SIGKILL)\n"
    killer = adapter_module(tmp_path, "nnparity_test_killer", body)
    jobs = with_python_path(numpy_jobs(tmp_path, backends=(killer,)), tmp_path)

    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "failed"
    assert record.reason.startswith("worker killed by signal SIGKILL")
    assert record.reason.endswith("about to die")


def test_raising_adapter_is_failed_with_traceback(tmp_path):
    raiser = adapter_module(tmp_path, "nnparity_test_raiser", "raise RuntimeError('adapter import broke')\n")
    jobs = with_python_path(numpy_jobs(tmp_path, backends=(raiser,)), tmp_path)

    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "failed"
    assert record.reason.startswith("RuntimeError: adapter import broke")
    assert "nnparity_test_raiser.py" in record.reason


def test_timeout_kills_worker(tmp_path):
    sleeper = adapter_module(tmp_path, "nnparity_test_sleeper", "import time\ntime.sleep(120)\n")
    jobs = with_python_path(numpy_jobs(tmp_path, backends=(sleeper,), timeout_s=3), tmp_path)

    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "failed"
    assert record.reason.startswith("timed out after 3 s")
    assert record.timings == {}


def test_missing_dataset_is_skipped_with_path(tmp_path):
    data_dir = tmp_path / "empty-data"
    data_dir.mkdir()
    jobs = numpy_jobs(tmp_path, models=("cifar-cnn",), data_dir=str(data_dir))

    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "skipped"
    assert str(data_dir) in record.reason
    assert "cifar-10-python.tar.gz" in record.reason


def test_worker_skips_missing_dataset(tmp_path):
    data_dir = tmp_path / "empty-data"
    data_dir.mkdir()
    job = plan_jobs(["cifar-cnn"], [NUMPY], data_dir=str(data_dir))[0]

    result = run_job(job)

    assert result["status"] == "skipped"
    assert result["reason"].startswith("DatasetMissing")
    assert str(data_dir) in result["reason"]


def test_records_survive_later_failure(tmp_path):
    crasher = adapter_module(tmp_path, "nnparity_test_crasher2", "import os\nos._exit(5)\n")
    jobs = numpy_jobs(tmp_path, max_steps=5, backends=(NUMPY, crasher))
    jobs[1].python_path = [str(tmp_path)]
    seen_before_second = []

    def on_event(event):
        if event.kind == "start" and event.index == 1:
            seen_before_second.extend(read_records(str(tmp_path)))

    suite = run_suite(jobs, str(tmp_path), callback=on_event)

    assert [r.status for r in seen_before_second] == ["ok"]
    assert [r.status for r in suite.records] == ["ok", "failed"]
    assert [r.run_id for r in read_records(str(tmp_path))] == [j.run_id for j in jobs]


# Labels against the model's outputs ------------------------------------------------------


def image_folder(folder, labels, per_label=4):
    from PIL import Image

    rng = np.random.RandomState(0)
    os.makedirs(folder, exist_ok=True)
    for label in labels:
        for index in range(per_label):
            Image.fromarray(rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)).save(folder / f"{label}.{index}.png")
    return folder


def test_label_summary_checks_outputs():
    spec = get_spec("moons-mlp")  # two outputs
    LabelSummary.from_arrays([0, 1, 1], [0, 1]).check(spec)

    with pytest.raises(LabelMismatch) as error:
        LabelSummary.from_arrays([0, 1, 2], [2], ["bird", "cat", "dog"], "/data/three").check(spec)
    message = str(error.value)
    assert "moons-mlp has 2 outputs" in message
    assert "/data/three contains 3 labels (bird, cat, dog)" in message
    assert "Keep exactly 2 labels" in message

    with pytest.raises(LabelMismatch, match=r"only one class \(cat\)"):
        LabelSummary.from_arrays([0, 0], [0, 1], ["cat", "dog"]).check(spec)


def test_label_check_skips_other_metrics():
    spec = get_spec("binary-adder-rnn")
    assert spec.metric != "argmax"
    LabelSummary.from_arrays(np.zeros((4, 8)), np.zeros((2, 8))).check(spec)


def test_worker_rejects_too_many_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("NNPARITY_IMAGE_DIR", str(image_folder(tmp_path / "three", ["bird", "cat", "dog"])))
    job = plan_jobs(["image-mlp"], [NUMPY], data_dir=str(tmp_path), max_steps=2)[0]

    result = run_job(job)  # no prepare_inputs: the worker checks on its own, before building the adapter

    assert result["status"] == "failed"
    assert result["reason"].startswith("image-mlp has 2 outputs")
    assert "3 labels (bird, cat, dog)" in result["reason"]
    assert "backend_settings" not in result


def test_prepare_inputs_fails_single_label(tmp_path, monkeypatch):
    monkeypatch.setenv("NNPARITY_IMAGE_DIR", str(image_folder(tmp_path / "one", ["cat"])))
    jobs = numpy_jobs(tmp_path, models=("image-mlp",), max_steps=2, data_dir=str(tmp_path))

    record = run_suite(jobs, str(tmp_path / "out")).records[0]

    assert record.status == "failed"
    assert "only one class (cat)" in record.reason
    assert record.timings == {}


# Spec files -----------------------------------------------------------------------------


def test_plan_accepts_spec_objects(tmp_path):
    spec = load_spec_file(EXAMPLE_SPEC)
    jobs = numpy_jobs(tmp_path, models=(spec,), max_steps=3)

    assert [j.model for j in jobs] == ["moons-relu8"]
    assert jobs[0].dataset == "moons"
    assert jobs[0].model_spec().layers[1].activation == "relu"
    assert os.path.isfile(os.path.join(jobs[0].inputs_dir, "spec.json"))


def test_spec_file_errors_name_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(open(EXAMPLE_SPEC).read().replace('activation = "relu"', 'activation = "relux"'))
    with pytest.raises(SpecError) as error:
        load_spec_file(str(bad))
    assert str(bad) in str(error.value)
    assert "layer 'dense1': unknown activation 'relux'" in str(error.value)

    with pytest.raises(SpecError, match="name it .toml or .json"):
        load_spec_file(str(tmp_path / "spec.yaml"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SpecError, match="is not a valid spec: JSONDecodeError"):
        load_spec_file(str(broken))


# Output directory -----------------------------------------------------------------------


def test_archive_previous_keeps_every_suite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert archive_previous(str(out)) is None
    now = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    for generation in ("first", "second"):
        (out / "runs.jsonl").write_text(generation)
        (out / "loss_curves_old.png").write_bytes(b"png")
        (out / "params").mkdir()
        (out / "params" / "run.npz").write_bytes(b"npz")
        archive_previous(str(out), now=now)

    first, second = out / "history" / "20240506T070809Z", out / "history" / "20240506T070809Z-1"
    assert (first / "runs.jsonl").read_text() == "first"
    assert (second / "runs.jsonl").read_text() == "second"
    assert (second / "loss_curves_old.png").is_file()
    assert (second / "params" / "run.npz").is_file()
    assert sorted(os.listdir(out)) == ["history"]


def test_prepare_out_dir_rejects_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputDirError, match="it is a file, not a directory"):
        prepare_out_dir(str(afile))
    with pytest.raises(OutputDirError, match=f"{afile} is a file, not a directory"):
        prepare_out_dir(str(afile / "below"))
    assert prepare_out_dir(str(tmp_path / "new" / "dir")) == str(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()


# Results store ------------------------------------------------------------------------


def test_read_records_skips_truncated_last_line(tmp_path):
    record = RunRecord(run_id="a", model="moons-mlp", spec_hash="x", backend="numpy", status="ok")
    with open(tmp_path / RUNS_FILE, "w") as handle:
        handle.write(json.dumps(record.to_dict()) + "\n" + '{"run_id": "b", "mod')
    assert [r.run_id for r in read_records(str(tmp_path))] == ["a"]


def test_read_records_rejects_newer_schema(tmp_path):
    record = RunRecord(run_id="a", model="m", spec_hash="x", backend="numpy", status="ok").to_dict()
    record["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / RUNS_FILE).write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="upgrade nnparity"):
        read_records(str(tmp_path))


def test_record_rejects_unknown_status():
    with pytest.raises(ValueError, match="status must be one of"):
        RunRecord(run_id="a", model="m", spec_hash="x", backend="numpy", status="broken")


def test_full_moons_schedule(tmp_path):
    jobs = numpy_jobs(tmp_path, max_steps=None, dtypes=["float64"])
    record = run_suite(jobs, str(tmp_path)).records[0]

    assert record.status == "ok", record.reason
    assert record.steps == 20000
    assert record.schedule_shortened is False
    # record_every is 10 for this spec, and the last step is always recorded.
    assert len(record.loss_curve["steps"]) == 2001
    assert record.loss_curve["steps"][-1] == 19999
    assert record.loss_curve["loss"][-1] < record.loss_curve["loss"][0] / 5
    assert record.train_accuracy > 0.95
    assert len(record.timings["step_samples"]) == 20000 - 1 - 5


@pytest.mark.slow
def test_legacy_interpreter_worker(tmp_path):
    legacy = get_backend("theano-lasagne")
    if not legacy.availability().available:
        pytest.skip(f"theano-lasagne unavailable: {legacy.availability().reason}")
    jobs = numpy_jobs(tmp_path, max_steps=20, backends=(NUMPY, legacy), dtypes=["float64"])

    records = run_suite(jobs, str(tmp_path), backends={"theano-lasagne": legacy}).records

    assert [r.status for r in records] == ["ok", "ok"], [r.reason for r in records]
    worker = records[1].environment["worker"]
    assert worker["executable"] == legacy.interpreter()
    assert worker["numpy"].startswith("1.23")
    assert records[1].loss_curve["loss"] == pytest.approx(records[0].loss_curve["loss"], rel=1e-12)
