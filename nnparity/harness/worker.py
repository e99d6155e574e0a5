"""One run in a fresh process: ``python -m nnparity.harness.worker JOB_JSON RESULT_JSON``.

The worker sets the thread and backend environment variables before it
imports NumPy or a framework, because most of them read those variables once,
at import. It then loads the data and the shared inputs, trains with per-step
timing, evaluates and writes a result dict as JSON. It imports only NumPy and nnparity's specs, datasets,
backends and harness modules, so it also runs in the legacy Theano
environment (numpy 1.23, no pandas or matplotlib).

Progress goes to stderr as lines ``nnparity-progress {json}``, which the
parent parses; every other stderr line is kept for its crash reports.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

PROGRESS_PREFIX = "nnparity-progress "
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
    # Read by adapters that must act before their framework is imported (JAX limits CPU affinity).
    "NNPARITY_THREADS",
)
EVAL_CHUNK = 1000
EVAL_TRAIN_CAP = 10_000
SAVE_PARAMS_BELOW = 100_000
PROGRESS_INTERVAL_S = 0.25


def set_environment(job: dict) -> None:
    """Apply the thread count and the backend's variables; call before importing NumPy or a framework."""
    threads = str(job["threads"])
    for name in THREAD_VARIABLES:
        os.environ[name] = threads
    os.environ.update(job.get("backend_environment") or {})
    for entry in reversed(job.get("python_path") or []):
        sys.path.insert(0, entry)


def report_progress(**fields) -> None:
    sys.stderr.write(PROGRESS_PREFIX + json.dumps(fields) + "\n")
    sys.stderr.flush()


def warmup_count(total_steps: int) -> int:
    """Return the warm-up steps after the first (compile) step: 5, or 10% of the steps when that is fewer."""
    return max(0, min(5, (total_steps - 1) // 10))


def step_statistics(samples: list[float]) -> dict:
    import numpy as np

    if not samples:
        return {"step_median_s": None, "step_q1_s": None, "step_q3_s": None}
    q1, median, q3 = np.percentile(np.asarray(samples), [25, 50, 75])
    return {"step_median_s": float(median), "step_q1_s": float(q1), "step_q3_s": float(q3)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    On Linux, ``getrusage``'s ``ru_maxrss`` carries the forked parent's peak
    across ``exec``, so a worker started by a parent with a large dataset in
    memory would report the parent's size. ``VmHWM`` in ``/proc/self/status``
    measures the worker's own address space, so it is read first.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run_network(job, result: dict) -> None:
    """Train and evaluate one network job, filling ``result`` as it goes (kept if a later step raises)."""
    import numpy as np

    from nnparity.backends.base import RunOptions
    from nnparity.backends.registry import BackendInfo, load_adapter
    from nnparity.datasets import load_dataset
    from nnparity.harness import inputs, schedule
    from nnparity.harness.labels import LabelSummary
    from nnparity.specs import SquaredError, objective

    spec = job.model_spec()
    timings = result["timings"]

    started = time.perf_counter()
    data = load_dataset(spec.dataset, spec.dataset_options, job.data_dir)
    timings["load_data_s"] = time.perf_counter() - started
    result["dataset_source"] = str(data.source)
    # Before any framework is imported, so a mismatch reads the same on every backend.
    LabelSummary.of(data).check(spec)
    x_train = np.ascontiguousarray(data.x_train, dtype=job.dtype)
    x_test = np.ascontiguousarray(data.x_test, dtype=job.dtype)
    target_type = job.dtype if isinstance(spec.loss, SquaredError) else np.int64
    y_train = np.asarray(data.y_train).astype(target_type)
    y_test = np.asarray(data.y_test).astype(target_type)

    if not job.plan_path:
        raise ValueError(f"job {job.run_id} has no shared inputs; run nnparity.harness.plan.prepare_inputs first")

    started = time.perf_counter()
    adapter_class = load_adapter(BackendInfo(job.backend, job.adapter, environment=job.backend_environment))
    timings["import_s"] = time.perf_counter() - started

    started = time.perf_counter()
    options = RunOptions(
        dtype=job.dtype, device=job.device, threads=job.threads, dropout_mode=job.dropout_mode, variant=job.variant,
    )
    adapter = adapter_class(spec, options)
    adapter.build(inputs.load_params(job.inputs_dir))
    adapter.sync()
    timings["build_s"] = time.perf_counter() - started
    result["device_used"] = adapter.device_name()
    # Recorded now so that a run failing in training still shows its settings; refreshed after evaluation.
    result["backend_settings"] = adapter.describe()

    plan = inputs.load_plan(job.plan_path)
    total = len(plan)
    full_total = schedule.steps_in(spec.schedule, len(x_train))
    result["steps"] = total
    result["schedule_shortened"] = total < full_total
    result["batch_size"] = int(len(plan[0])) if plan else None
    train_loop(job, spec, adapter, plan, x_train, y_train, result)
    if result["status"] != "ok":
        return

    started = time.perf_counter()
    params = adapter.get_params()
    cap = min(len(x_train), EVAL_TRAIN_CAP)
    train_outputs = predict_in_chunks(adapter, x_train[:cap], job.run_id, 0, cap + len(x_test))
    test_outputs = predict_in_chunks(adapter, x_test, job.run_id, cap, cap + len(x_test))
    result["train_samples_evaluated"] = cap
    result["train_accuracy"] = objective.accuracy(spec, train_outputs, y_train[:cap])
    result["test_accuracy"] = objective.accuracy(spec, test_outputs, y_test)
    final = objective.objective(spec, train_outputs, y_train[:cap], params)
    result["final_loss"] = objective.per_sample(spec, final, cap)
    test = objective.objective(spec, test_outputs, y_test, params)
    result["test_loss"] = objective.per_sample(spec, test, len(y_test))
    timings["eval_s"] = time.perf_counter() - started

    if spec.parameter_count() < SAVE_PARAMS_BELOW and job.out_dir:
        result["params_file"] = save_params(job, params)
    result["backend_settings"] = adapter.describe()
    # An adapter on an accelerator may report the framework's own peak, such as torch.cuda.max_memory_allocated.
    device_peak = result["backend_settings"].get("peak_device_memory_mb")
    if device_peak is not None:
        result["peak_device_memory_mb"] = float(device_peak)


def train_loop(job, spec, adapter, plan, x_train, y_train, result: dict) -> None:
    """Run every step of ``plan``, timing each one between two device syncs."""
    import numpy as np

    from nnparity.harness import schedule
    from nnparity.specs import objective

    timings, curve = result["timings"], result["loss_curve"]
    total = len(plan)
    every = schedule.record_every(spec, total)
    warmup = warmup_count(total)
    timings["warmup_steps"] = warmup
    samples: list[float] = []
    steady_samples = 0
    exact = job.dropout_mode == "exact"
    last_report = time.monotonic()
    train_started = time.perf_counter()

    for step, index in enumerate(plan):
        x_batch, y_batch = x_train[index], y_train[index]
        masks = schedule.dropout_masks(spec, step, len(index), job.dtype) if exact else None

        adapter.sync()
        begin = time.perf_counter_ns()
        loss = adapter.train_step(x_batch, y_batch, masks)
        adapter.sync()
        # Whole nanoseconds as seconds: the clock's resolution, and short in runs.jsonl.
        elapsed = round((time.perf_counter_ns() - begin) * 1e-9, 9)

        if step == 0:
            timings["first_step_s"] = elapsed
        elif step > warmup:
            samples.append(elapsed)
            steady_samples += len(index)

        if step % every == 0 or step == total - 1:
            value = objective.per_sample(spec, adapter.to_float(loss), len(index))
            curve["steps"].append(step)
            curve["loss"].append(value)
            if not np.isfinite(value):
                result["status"] = "failed"
                result["reason"] = f"diverged: loss is {value} at step {step}"
                break

        now = time.monotonic()
        if now - last_report >= PROGRESS_INTERVAL_S or step == total - 1:
            report_progress(run_id=job.run_id, phase="train", step=step + 1, total=total)
            last_report = now

    timings["train_total_s"] = time.perf_counter() - train_started
    timings["step_samples"] = samples
    timings.update(step_statistics(samples))
    # Throughput from the median step, so that one slow outlier step does not move it.
    median = timings["step_median_s"]
    timings["samples_per_s"] = steady_samples / len(samples) / median if samples and median > 0 else None


def predict_in_chunks(adapter, x, run_id: str, done: int, total: int):
    """Predict ``x`` in chunks of ``EVAL_CHUNK`` samples, reporting evaluated samples as ``eval`` progress."""
    import numpy as np

    outputs = []
    for start in range(0, len(x), EVAL_CHUNK):
        outputs.append(np.asarray(adapter.predict(x[start:start + EVAL_CHUNK])))
        report_progress(run_id=run_id, phase="eval", step=done + min(start + EVAL_CHUNK, len(x)), total=total)
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def save_params(job, params: dict) -> str:
    import numpy as np

    directory = os.path.join(job.out_dir, "params")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{job.run_id}.npz")
    np.savez(path, **{key: np.asarray(value, dtype=np.float64) for key, value in params.items()})
    return os.path.relpath(path, job.out_dir)


def run_job(job) -> dict:
    """Run one job and return its result dict, with any exception of the run recorded as its status."""
    from nnparity.backends.base import BackendUnavailable, UnsupportedSpec
    from nnparity.datasets import DatasetMissing
    from nnparity.harness.labels import LabelMismatch

    result = {
        "status": "ok", "reason": "", "timings": {}, "loss_curve": {"steps": [], "loss": []},
        "worker": {"python": sys.version.split()[0], "executable": sys.executable, "pid": os.getpid()},
    }
    try:
        if job.baseline is not None:
            from nnparity.harness.baseline import run_baseline

            run_baseline(job, result)
        else:
            run_network(job, result)
    except (DatasetMissing, BackendUnavailable, UnsupportedSpec) as error:
        result["status"] = "skipped"
        result["reason"] = f"{type(error).__name__}: {error}"
    except LabelMismatch as error:
        # The message names the labels, the output size and the fix; a traceback would add nothing.
        result["status"] = "failed"
        result["reason"] = str(error)
    except Exception as error:  # any other failure is this run's result, not the worker's crash
        tail = "".join(traceback.format_exception(error)[-6:]).rstrip()
        result["status"] = "failed"
        result["reason"] = f"{type(error).__name__}: {error}\n{tail}"
    result["peak_memory_mb"] = peak_rss_mb()
    try:
        import numpy

        result["worker"]["numpy"] = numpy.__version__
    except ImportError:
        pass
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python -m nnparity.harness.worker JOB_JSON RESULT_JSON\n")
        return 2
    job_path, result_path = argv
    with open(job_path, encoding="utf-8") as handle:
        raw = json.load(handle)
    set_environment(raw)

    from nnparity.harness.plan import Job

    result = run_job(Job(**raw))
    temporary = result_path + ".partial"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os.replace(temporary, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
