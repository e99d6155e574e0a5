"""The runner: one worker process per job, one job at a time, each record stored as soon as it ends.

Jobs never overlap, because concurrent runs would share the CPU and spoil
each other's timings. A worker that crashes, is killed or runs past its
timeout becomes a ``failed`` record; Ctrl-C stops the suite after killing the
current worker, and every record written so far stays in ``runs.jsonl``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import nnparity
from nnparity.harness.plan import Job
from nnparity.harness.results import RunRecord, append_record
from nnparity.harness.worker import PROGRESS_PREFIX, THREAD_VARIABLES

log = logging.getLogger("nnparity")

STDERR_TAIL_LINES = 20
JOBS_DIR = ".jobs"


@dataclass
class Event:
    """A runner notification: ``start`` and ``end`` of a run, or ``progress`` within one."""

    kind: str
    job: Job
    index: int
    count: int
    step: int = 0
    total: int = 0
    phase: str = "train"
    record: RunRecord | None = None


class InterruptedRun(KeyboardInterrupt):
    """Ctrl-C while a run was in progress; ``record`` is set when its worker had already written its result."""

    def __init__(self, result: dict | None = None):
        super().__init__()
        self.result = result
        self.record: RunRecord | None = None


@dataclass
class SuiteResult:
    records: list[RunRecord] = field(default_factory=list)
    interrupted: bool = False


def run_suite(
    jobs: list[Job],
    out_dir: str,
    environment: dict | None = None,
    backends: dict | None = None,
    callback: Callable[[Event], None] | None = None,
) -> SuiteResult:
    """Run ``jobs`` in order and append each record to ``<out_dir>/runs.jsonl`` when it ends.

    ``backends`` maps backend names to ``BackendInfo`` (for the interpreter
    and framework versions). Ctrl-C ends the suite early with
    ``interrupted=True`` instead of raising.
    """
    environment = environment or {}
    backends = backends or {}
    notify = callback or (lambda event: None)
    suite = SuiteResult()

    for index, job in enumerate(jobs):
        try:
            notify(Event("start", job, index, len(jobs)))
            record = run_one(job, out_dir, environment, backends.get(job.backend),
                             lambda step, total, phase: notify(
                                 Event("progress", job, index, len(jobs), step, total, phase)))
        except KeyboardInterrupt as interrupt:
            finished = getattr(interrupt, "record", None)
            if finished is not None:
                # The worker had written its result before Ctrl-C arrived: the run is complete, so keep it.
                append_record(out_dir, finished)
                suite.records.append(finished)
            log.warning("interrupted during %s; %d records kept in %s", job.run_id, len(suite.records), out_dir)
            suite.interrupted = True
            return suite
        # Stored before anything else can be interrupted, so a finished run is never lost.
        append_record(out_dir, record)
        suite.records.append(record)
        log.info("%s: %s %s", job.run_id, record.status, record.reason.splitlines()[0] if record.reason else "")
        try:
            notify(Event("end", job, index, len(jobs), record=record))
        except KeyboardInterrupt:
            suite.interrupted = True
            return suite
    return suite


def run_one(job: Job, out_dir: str, environment: dict, info=None, progress=None) -> RunRecord:
    """Run one job (or record why it cannot run) and return its record."""
    if job.skip_reason:
        return make_record(job, {"status": "skipped", "reason": job.skip_reason}, environment)
    if job.fail_reason:
        return make_record(job, {"status": "failed", "reason": job.fail_reason}, environment)

    # Read before the worker starts, so the report can tell which step times other processes may have slowed.
    load = machine_load()
    interpreter = (info.interpreter() if info is not None and info.interpreter is not None else None)
    meter = OtherCpuMeter()
    try:
        result = run_worker(job, out_dir, interpreter or sys.executable, progress)
    except InterruptedRun as interrupt:
        if interrupt.result is not None:
            interrupt.record = _worker_record(job, interrupt.result, environment, load)
        raise
    load["other_cpu_cores"] = meter.stop()
    return _worker_record(job, result, environment, load)


def _worker_record(job: Job, result: dict, environment: dict, load: dict) -> RunRecord:
    versions = dict(environment.get("framework_versions", {}).get(job.backend, {}))
    versions.update(result.pop("framework_versions", {}))
    return make_record(job, result, environment, versions, load)


class OtherCpuMeter:
    """Measures how many cores, on average, processes other than nnparity and its worker used during a run.

    The machine's busy CPU time comes from ``/proc/stat``; this process's and
    its waited-for children's (the worker and whatever the worker waited for)
    come from ``os.times``. The difference, over the wall time, is the CPU
    other processes took (with the hypervisor's steal time, which other
    machines took). Unlike the load average, it does not count the suite's
    own previous run. ``stop`` returns None where ``/proc/stat`` is
    missing (not Linux).
    """

    def __init__(self):
        self.busy, self.times, self.wall = _busy_cpu_seconds(), os.times(), time.monotonic()

    def stop(self) -> float | None:
        busy, times, wall = _busy_cpu_seconds(), os.times(), time.monotonic() - self.wall
        if busy is None or self.busy is None or wall <= 0:
            return None
        ours = sum(getattr(times, f) - getattr(self.times, f)
                   for f in ("user", "system", "children_user", "children_system"))
        return round(max(0.0, (busy - self.busy - ours) / wall), 2)


def _busy_cpu_seconds() -> float | None:
    """Return the CPU seconds all cores spent busy since boot, from the first line of ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    ticks = [int(value) for value in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def machine_load() -> dict:
    """Return the 1-minute load average and the CPU count, for the record of the run about to start."""
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # no load average on this platform
        load = None
    return {"load_average_1m": load, "cpu_count": os.cpu_count()}


def make_record(job: Job, result: dict, environment: dict, versions: dict | None = None,
                load: dict | None = None) -> RunRecord:
    worker = result.pop("worker", None)
    env = dict(environment)
    env.pop("framework_versions", None)
    env.update(load or {})
    if worker:
        env["worker"] = worker
    known = set(RunRecord.__dataclass_fields__)
    fields = {k: v for k, v in result.items() if k in known}
    return RunRecord(
        run_id=job.run_id, model=job.model, spec_hash=job.spec_hash, step_hash=job.step_hash, backend=job.backend,
        variant=job.variant,
        device=job.device, dtype=job.dtype, dropout_mode=job.dropout_mode, threads=job.threads,
        repeat=job.repeat, framework_versions=versions or {}, environment=env, **fields,
    )


def worker_environment(job: Job) -> dict:
    """Build the worker's environment: ours, plus thread counts, the backend's variables and nnparity on the path."""
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(job.threads)
    env.update(job.backend_environment)
    # Another interpreter (the legacy Theano environment) may not have nnparity installed.
    root = os.path.dirname(os.path.dirname(os.path.abspath(nnparity.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def run_worker(job: Job, out_dir: str, interpreter: str, progress=None) -> dict:
    """Start the worker process, follow its progress, enforce the timeout and return its result dict."""
    jobs_dir = os.path.join(out_dir, JOBS_DIR)
    os.makedirs(jobs_dir, exist_ok=True)
    job_path = os.path.join(jobs_dir, f"{job.run_id}.json")
    result_path = os.path.join(jobs_dir, f"{job.run_id}.result.json")
    log_path = os.path.join(jobs_dir, f"{job.run_id}.log")
    with open(job_path, "w", encoding="utf-8") as handle:
        handle.write(job.to_json())
    if os.path.exists(result_path):
        os.remove(result_path)

    command = [interpreter, "-m", "nnparity.harness.worker", job_path, result_path]
    log.debug("starting %s", " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    with open(log_path, "w", encoding="utf-8") as log_file:
        # A session of its own lets a timeout kill the worker and every process it started.
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.PIPE, text=True, errors="replace",
            env=worker_environment(job), start_new_session=True,
        )
        reader = threading.Thread(target=_follow_stderr, args=(process.stderr, tail, log_file, progress), daemon=True)
        reader.start()
        try:
            returncode = process.wait(timeout=job.timeout_s)
            reader.join(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            reader.join(timeout=5)
            return {"status": "failed", "reason": f"timed out after {job.timeout_s:g} s (log: {log_path})"}
        except KeyboardInterrupt:
            _kill_group(process)
            # The worker writes its result file whole (through a rename) only after the run ended, so a
            # file present here is a finished run, interrupted while the worker exited.
            raise InterruptedRun(_read_result(result_path)) from None

    if returncode == 0 and os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as handle:
            return json.load(handle)
    if returncode < 0:
        cause = f"worker killed by signal {signal.Signals(-returncode).name}"
    elif returncode != 0:
        cause = f"worker exited with code {returncode}"
    else:
        cause = "worker exited with code 0 but wrote no result file"
    stderr_tail = "\n".join(tail)
    return {"status": "failed", "reason": f"{cause}; last stderr lines:\n{stderr_tail}" if tail else cause}


def _read_result(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _follow_stderr(stream, tail, log_file, progress) -> None:
    for line in stream:
        if line.startswith(PROGRESS_PREFIX):
            if progress is not None:
                try:
                    fields = json.loads(line[len(PROGRESS_PREFIX):])
                    progress(int(fields["step"]), int(fields["total"]), fields.get("phase", "train"))
                except (ValueError, KeyError) as error:
                    log.debug("ignoring malformed progress line %r: %s", line, error)
            continue
        tail.append(line.rstrip("\n"))
        log_file.write(line)
    stream.close()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
