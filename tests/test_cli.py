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
from nnparity.cli import main, resolve_models
from nnparity.harness.results import RunRecord
from nnparity.models import MOONS_SWEEP


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
    assert (out / "runs.previous.jsonl").read_text().splitlines() == first

    os.remove(out / "report.md")
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()

    capsys.readouterr()
    assert main(["compare", str(out), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "moons-mlp / numpy / float32" in printed
    assert "1.000" in printed


def test_report_of_missing_dir_fails(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "runs.jsonl not found" in capsys.readouterr().err


def test_ctrl_c_keeps_records_and_writes_report(tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    (tmp_path / "nnparity_test_slow.py").write_text(
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    out = tmp_path / "results"
    script = (
        "import sys\n"
        "from nnparity.backends import registry\n"
        "registry.register(registry.BackendInfo('slow-test', 'nnparity_test_slow:Adapter'))\n"
        "from nnparity.cli import main\n"
        f"sys.exit(main(['run', '--models', 'moons-mlp', '--backends', 'numpy,slow-test', '--max-steps', '5',"
        f" '--out', {str(out)!r}, '--no-progress']))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the slow worker never started"
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
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
    assert "invalid dtype 'float16'" in capsys.readouterr().err


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
