"""``nnparity verify``: check that backends compute what the NumPy reference computes.

For each model, the parent draws the initial parameters once (float64,
canonical layout) and cuts the first k batches of the spec's batch plan.
Each backend then runs in its own worker process (``verify_worker``) from
those inputs, with the harness's exact dropout masks, and returns:

- ``logits``: ``predict`` on the first batch, before any update;
- ``loss@0`` and ``grad:<layer/param>``: ``loss_and_grads`` on the first
  batch with the step-0 masks;
- ``loss curve``: the losses of k ``train_step`` calls;
- ``final:<layer/param>``: the parameters after those k steps (one row,
  naming the parameter that differs most).

How quantities are compared, and the tolerances by dtype with their reasons,
are in ``nnparity.harness.verify_compare``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from nnparity.backends.registry import BackendInfo, all_backends
from nnparity.harness.schedule import batch_plan
from nnparity.harness.verify_compare import (  # noqa: F401  (re-exported)
    ABS_FLOOR, FINAL_BY_NORM, SCALE_FLOOR, TOLERANCES, Row, compare, compare_backend,
)
from nnparity.report.verification import VERIFY_FILE, merge
from nnparity.specs import ModelSpec

log = logging.getLogger("nnparity")

REFERENCE = "numpy"
DEFAULT_MODELS = ("moons-mlp", "mnist-softmax", "mnist-cnn", "binary-adder-rnn")
DEFAULT_STEPS = 10
DEFAULT_TIMEOUT_S = 900.0
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
)


@dataclass
class VerifyResult:
    rows: list[Row] = field(default_factory=list)
    backends: dict = field(default_factory=dict)
    # Model name -> spec_hash and step_hash of the spec verified, so a report can tell whether a run used it.
    models: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(row.status in ("FAIL", "failed") for row in self.rows)


# Inputs and workers ---------------------------------------------------------


class StepsBeyondSchedule(ValueError):
    """A requested number of verify steps above the number of steps in the model's schedule."""


def prepare_inputs(spec: ModelSpec, steps: int, data_dir: str | None, path: str) -> None:
    """Write the initial parameters and the first ``steps`` batches of ``spec`` to ``path`` (.npz)."""
    from nnparity.datasets import load_dataset

    dataset = load_dataset(spec.dataset, spec.dataset_options, data_dir)
    plan = batch_plan(spec.schedule, len(dataset.x_train))[:steps]
    if len(plan) < steps:
        raise StepsBeyondSchedule(f"{steps} steps is more than the {len(plan)} of {spec.name}'s schedule; "
                                  f"verify {len(plan)} steps or fewer")
    arrays = {f"param/{key}": value for key, value in spec.initial_params().items()}
    for step, index in enumerate(plan):
        arrays[f"x/{step}"] = dataset.x_train[index]
        arrays[f"y/{step}"] = dataset.y_train[index]
    np.savez(path, **arrays)


def run_worker(info: BackendInfo, spec: ModelSpec, dtype: str, steps: int, inputs: str, work_dir: str,
               threads: int = 1, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S,
               python_path: list[str] | None = None) -> tuple[dict, dict]:
    """Run one backend's verify worker; return (result dict, arrays). Arrays are empty unless status is ok."""
    stem = os.path.join(work_dir, f"{spec.name}-{info.name}")
    job = {
        "backend": info.name, "adapter": info.adapter, "spec": spec.to_dict(), "dtype": dtype,
        "steps": steps, "threads": threads, "device": device, "inputs": inputs,
        "arrays": stem + ".npz", "result": stem + ".json",
    }
    with open(stem + ".job.json", "w") as handle:
        json.dump(job, handle)

    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update(info.environment)
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join([*python_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    interpreter = (info.interpreter() if info.interpreter else None) or sys.executable
    command = [interpreter, "-m", "nnparity.harness.verify_worker", stem + ".job.json"]
    log.info("verify %s on %s: starting worker", spec.name, info.name)
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout_s:g} s"}, {}
    if not os.path.exists(job["result"]):
        tail = "\n".join(completed.stderr.strip().splitlines()[-8:])
        return {"status": "failed", "reason": f"worker exited with code {completed.returncode}: {tail}"}, {}
    with open(job["result"]) as handle:
        result = json.load(handle)
    if result["status"] != "ok":
        return result, {}
    with np.load(job["arrays"]) as data:
        return result, {name: data[name] for name in data.files}


# The verify run ---------------------------------------------------------------


def resolve_backends(names: list) -> list[BackendInfo]:
    """Turn names (or ``BackendInfo`` objects) into infos, reference first; unknown names raise KeyError."""
    known = all_backends()
    infos = []
    for item in [REFERENCE, *names]:
        if isinstance(item, BackendInfo):
            if all(info.name != item.name for info in infos):
                infos.append(item)
        elif item not in known:
            raise KeyError(f"unknown backend {item!r}; known backends: {', '.join(known)}")
        elif all(info.name != item for info in infos):
            infos.append(known[item])
    return infos


def run_verify(specs: list[ModelSpec], backends: list, dtype: str = "float64", steps: int = DEFAULT_STEPS,
               out_dir: str | None = None, data_dir: str | None = None, threads: int = 1,
               timeout_s: float = DEFAULT_TIMEOUT_S, python_path: list[str] | None = None,
               diagnose: bool = True, progress=None) -> VerifyResult:
    """Verify every backend against the reference on every spec; write ``verify.json`` when ``out_dir`` is set.

    With ``diagnose``, a backend that differs on a model also runs the
    conformance checks for that model's layer kinds and loss, and the first
    failing row's message names the checks that fail. ``progress``, if
    given, is called after each worker as ``progress(done, total, model,
    backend, status, seconds)``.
    """
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {', '.join(TOLERANCES)}, got {dtype!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    infos = resolve_backends(backends)
    result = VerifyResult()
    for info in infos:
        availability = info.availability()
        result.backends[info.name] = {"versions": availability.versions, "available": availability.available,
                                      "reason": availability.reason, "plugin": info.plugin}

    counter = _Counter(len(specs) * len(infos), progress)
    try:
        with tempfile.TemporaryDirectory(prefix="nnparity-verify-") as work_dir:
            for spec in specs:
                spec = spec.replace(dtype=dtype).validate()
                rows = _verify_model(spec, infos, dtype, steps, data_dir, work_dir, threads, timeout_s,
                                     python_path, result.backends, diagnose, counter)
                result.models[spec.name] = {"spec_hash": spec.content_hash(), "step_hash": spec.step_hash()}
                result.rows.extend(rows)
    except KeyboardInterrupt:
        if out_dir is not None and result.rows:
            write_report(result, out_dir, dtype, steps, complete=False)
            log.warning("verification interrupted; %s keeps the verification of %s",
                        os.path.join(out_dir, VERIFY_FILE), ", ".join(result.models))
        raise
    if out_dir is not None:
        write_report(result, out_dir, dtype, steps)
    return result


class _Counter:
    """Counter of finished workers, which passes each one to the caller's progress callback."""

    def __init__(self, total: int, callback):
        self.total, self.done, self.callback = total, 0, callback

    def __call__(self, model: str, backend: str, status: str, seconds: float = 0.0, count: int = 1) -> None:
        self.done += count
        if self.callback is not None:
            self.callback(self.done, self.total, model, backend, status, seconds)


def _verify_model(spec, infos, dtype, steps, data_dir, work_dir, threads, timeout_s, python_path, backends,
                  diagnose, counter):
    from nnparity.datasets import DatasetCorrupt, DatasetMissing

    others = [info for info in infos if info.name != REFERENCE]
    inputs = os.path.join(work_dir, f"{spec.name}-inputs.npz")
    try:
        prepare_inputs(spec, steps, data_dir, inputs)
    except DatasetMissing as error:
        counter(spec.name, "all", "skipped: dataset missing", count=len(infos))
        return [Row(spec.name, info.name, "all", status="skipped", message=f"dataset missing: {error}")
                for info in others]
    except StepsBeyondSchedule as error:
        counter(spec.name, "all", f"failed: {error}", count=len(infos))
        return [Row(spec.name, info.name, "all", status="failed", message=str(error)) for info in others]
    except DatasetCorrupt as error:
        log.warning("verify %s: dataset %r is corrupt: %s", spec.name, spec.dataset, error)
        counter(spec.name, "all", "failed: dataset corrupt", count=len(infos))
        return [Row(spec.name, info.name, "all", status="failed", message=f"dataset corrupt: {error}")
                for info in others]

    outputs = {}
    for info in infos:
        if not backends[info.name]["available"]:
            outputs[info.name] = ({"status": "skipped", "reason": backends[info.name]["reason"]}, {})
            counter(spec.name, info.name, "skipped")
            continue
        started = time.monotonic()
        outputs[info.name] = run_worker(info, spec, dtype, steps, inputs, work_dir, threads,
                                        timeout_s=timeout_s, python_path=python_path)
        status = outputs[info.name][0]
        log.info("verify %s on %s: %s in %.1f s", spec.name, info.name, status["status"], time.monotonic() - started)
        counter(spec.name, info.name, status["status"], time.monotonic() - started)
        if status["status"] == "failed":
            log.warning("verify %s on %s failed: %s\n%s", spec.name, info.name, status["reason"],
                        status.get("traceback", ""))

    reference_result, reference = outputs[REFERENCE]
    if reference_result["status"] != "ok":
        reason = f"reference backend {REFERENCE!r} {reference_result['status']}: {reference_result['reason']}"
        return [Row(spec.name, info.name, "all", status="failed", message=reason) for info in others]

    rows = []
    keys = [p.key for p in spec.param_layout()]
    for info in others:
        status, arrays = outputs[info.name]
        if status["status"] != "ok":
            message = status["reason"] + (f"\n{status['traceback']}" if status.get("traceback") else "")
            rows.append(Row(spec.name, info.name, "all", status=status["status"], message=message))
            continue
        backend_rows = compare_backend(spec.name, info.name, reference, arrays, dtype, keys, steps)
        if diagnose and any(r.status == "FAIL" for r in backend_rows):
            _add_diagnosis(backend_rows, info, spec, python_path)
        rows.extend(backend_rows)
    return rows


def _add_diagnosis(rows: list[Row], info: BackendInfo, spec: ModelSpec, python_path) -> None:
    """Run the conformance checks for this model's layer kinds and loss; add what fails to the first failure."""
    from nnparity.testing.conformance import checks_for_spec, diagnose

    log.info("verify %s on %s: differs; running the conformance checks %s", spec.name, info.name,
             ", ".join(checks_for_spec(spec)))
    failures = diagnose(info, spec, python_path)
    first = next(r for r in rows if r.status == "FAIL")
    if failures:
        details = "; ".join(f.message.splitlines()[0] if f.message.startswith(f.check) else
                            f"{f.check}: {f.message.splitlines()[0]}" for f in failures)
        first.message += f". Conformance checks that fail on {info.name}: {details}"
    else:
        first.message += (f". The conformance checks for this model's layer kinds and loss pass on {info.name}, "
                          "so look at what they do not cover (optimizer, schedule, data handling)")


# Output -------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    """Format rows as a plain-text table: model, backend, quantity, max rel, max abs, tolerance, status."""
    header = ("model", "backend", "quantity", "max rel", "max abs", "tolerance", "status")
    lines = [header]
    for r in rows:
        number = (lambda v: "-" if v is None else f"{v:.2e}")
        lines.append((r.model, r.backend, r.quantity, number(r.max_rel), number(r.max_abs),
                      "-" if r.tolerance is None else f"{r.tolerance:.0e}", r.status))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def failure_messages(rows: list[Row]) -> list[str]:
    return [f"{r.model} on {r.backend}: {r.message}" for r in rows if r.status in ("FAIL", "failed")]


def write_report(result: VerifyResult, out_dir: str, dtype: str, steps: int, command: str = "",
                 complete: bool = True) -> str:
    """Write ``verify.json`` in ``out_dir``, keeping the earlier verifications there that this one does not cover.

    ``complete`` is False for a verification interrupted before its last model.
    """
    import nnparity

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, VERIFY_FILE)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command or _command_line(),
        "nnparity_version": nnparity.__version__,
        "python": sys.version.split()[0],
        "reference": REFERENCE, "dtype": dtype, "steps": steps, "device": "cpu",
        "tolerances": {**TOLERANCES[dtype], "scale_floor": SCALE_FLOOR, "abs_floor": ABS_FLOOR},
        "final_by_norm": dtype in FINAL_BY_NORM,
        "backends": result.backends,
        "models": result.models,
        "passed": not result.failed,
        "complete": complete,
        "rows": [asdict(r) for r in result.rows],
    }
    document = merge(document, out_dir)
    # Written beside and renamed over, so an interrupted write leaves the earlier file whole.
    with open(path + ".part", "w") as handle:
        json.dump(document, handle, indent=2, default=str)
    os.replace(path + ".part", path)
    return path


def _command_line() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program == "nnparity":
        return "nnparity " + shlex.join(sys.argv[1:])
    return shlex.join(sys.argv)


# Command line ---------------------------------------------------------------


def add_verify_arguments(parser) -> None:
    """Add the ``verify`` options to an argparse parser."""
    parser.add_argument("--models", default=None,
                        help="comma-separated model names (default: the models of the runs in --out, else "
                             f"{','.join(DEFAULT_MODELS)})")
    parser.add_argument("--spec", action="append", default=[], metavar="FILE",
                        help="a model spec file (.toml or .json) to verify; repeatable")
    parser.add_argument("--backends", default="",
                        help="comma-separated backends to compare with the numpy reference (default: the "
                             "backends of the runs in --out, else every available default backend)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="training steps compared after step 0 (default: %(default)s)")
    parser.add_argument("--dtype", choices=sorted(TOLERANCES), default="float64",
                        help="floating-point type of every run (default: %(default)s)")
    parser.add_argument("--out", default="results/verify",
                        help="directory for verify.json; a results directory of `nnparity run` gets its report's "
                             "verification column updated (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="dataset directory (default: $NNPARITY_DATA_DIR or the cache)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default: %(default)s)")
    parser.add_argument("--no-diagnose", action="store_true",
                        help="do not run the conformance checks for a backend that differs")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds before a worker is stopped and failed (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not print a line per finished worker")


def run_verify_command(args) -> int:
    """Run ``nnparity verify`` from parsed arguments; print the table; return the exit status (0 pass, 1 fail, 2 usage)."""
    from nnparity.harness.output import OutputDirError, prepare_out_dir
    from nnparity.harness.plan import load_spec_file
    from nnparity.models import get_spec
    from nnparity.specs import SpecError

    try:
        _check_options(args)
        suite = suite_of(args.out)
        if args.models is not None or args.spec:
            # A model of the runs in --out, spec-file ones included, can be named like a built-in one.
            known = {spec.name: spec for spec in suite[0]} if suite is not None else {}
            specs = [known[name] if name in known else get_spec(name) for name in _split(args.models)]
            specs += [load_spec_file(p) for p in args.spec]
        elif suite is not None:
            specs = suite[0]
        else:
            specs = [get_spec(name) for name in DEFAULT_MODELS]
        if args.backends:
            names = _split(args.backends)
        elif suite is not None:
            names = suite[1]
        else:
            names = [n for n, i in all_backends().items()
                     if i.default and n != REFERENCE and i.availability().available]
        resolve_backends(names)
        prepare_out_dir(args.out)
        _check_report_writable(args.out)
    except (SpecError, KeyError, OutputDirError, VerifyUsageError) as error:
        print(f"nnparity: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    if suite is not None and (args.models is None and not args.spec or not args.backends):
        print(f"verifying what the runs in {args.out} used: models {', '.join(s.name for s in specs) or '(none)'}; "
              f"backends {', '.join(names) or '(none)'}", file=sys.stderr)
    result = run_verify(specs, names, dtype=args.dtype, steps=args.steps, out_dir=args.out,
                        data_dir=args.data_dir, threads=args.threads, timeout_s=args.timeout,
                        diagnose=not getattr(args, "no_diagnose", False),
                        progress=None if getattr(args, "no_progress", False) else print_progress)
    path = os.path.join(args.out, VERIFY_FILE)
    print_outcome(result)
    print(f"wrote {path}")
    report = refresh_run_report(args.out)
    if report:
        print(f"updated the verification column of {report}")
    return 1 if result.failed else 0


def suite_of(out_dir: str) -> tuple[list[ModelSpec], list[str]] | None:
    """Return the model specs and backends of the runs in ``out_dir``, or None when it contains no runs.

    A run's exact spec is read from the directory's ``.inputs/``, so models
    from spec files are found too; backends no longer installed are left out.
    """
    from nnparity.harness.inputs import inputs_dir
    from nnparity.harness.plan import SPEC_FILE
    from nnparity.harness.results import RUNS_FILE, read_records
    from nnparity.models import get_spec
    from nnparity.specs import SpecError

    if not os.path.isfile(os.path.join(out_dir, RUNS_FILE)):
        return None
    try:
        records = read_records(out_dir)
    except ValueError as error:
        log.warning("the runs in %s cannot be read (%s), so the default models and backends are verified",
                    out_dir, error)
        return None
    known = all_backends()
    specs: dict[str, ModelSpec] = {}
    backends: list[str] = []
    for record in records:
        if record.spec_hash.startswith("baseline-"):
            continue
        if record.backend not in backends and record.backend != REFERENCE:
            if record.backend in known:
                backends.append(record.backend)
            else:
                log.warning("backend %r of the runs in %s is not installed here, so it is not verified; install it "
                            "to verify it",
                            record.backend, out_dir)
        if record.model in specs:
            continue
        path = os.path.join(inputs_dir(out_dir, record.spec_hash), SPEC_FILE)
        try:
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    specs[record.model] = ModelSpec.from_json(handle.read()).validate()
            else:
                specs[record.model] = get_spec(record.model)
        except (SpecError, ValueError) as error:
            log.warning("model %r of the runs in %s is not verified: its spec cannot be read (%s)",
                        record.model, out_dir, error)
            specs[record.model] = None
    return [spec for spec in specs.values() if spec is not None], backends


def _check_report_writable(out_dir: str) -> None:
    """Raise VerifyUsageError, before any worker starts, when the report of the runs in ``out_dir`` cannot be rewritten."""
    from nnparity.harness.results import RUNS_FILE, SUMMARY_FILE

    if not os.path.isfile(os.path.join(out_dir, RUNS_FILE)):
        return
    for name in (SUMMARY_FILE, "report.md", "report.html"):
        path = os.path.join(out_dir, name)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise VerifyUsageError(f"invalid --out {out_dir!r}: {path} is not writable, so the report cannot show "
                                   "the verification; make it writable or choose another --out")


def print_progress(done: int, total: int, model: str, backend: str, status: str, seconds: float) -> None:
    """Print one line per finished worker to stderr (the table goes to stdout)."""
    timing = f" in {seconds:.1f} s" if seconds else ""
    print(f"[{done}/{total}] verify {model} on {backend}: {status}{timing}", file=sys.stderr, flush=True)


def print_outcome(result: VerifyResult) -> None:
    """Print the table, then every failure and skip with its message."""
    print(format_table(result.rows))
    for message in failure_messages(result.rows):
        print(f"FAIL {message}")
    for r in result.rows:
        if r.status == "skipped":
            print(f"skipped {r.model} on {r.backend}: {r.message}")


def refresh_run_report(out_dir: str) -> str | None:
    """Rewrite the report of a results directory with runs, so that it shows the new verification.

    Returns the Markdown report's path, or None when ``out_dir`` contains no runs.
    """
    from nnparity.harness.results import RUNS_FILE, read_records
    from nnparity.report import write_report as write_run_report

    if not os.path.isfile(os.path.join(out_dir, RUNS_FILE)):
        return None
    try:
        return write_run_report(out_dir, records=read_records(out_dir))["markdown"]
    except (OSError, ValueError) as error:
        log.warning("the report in %s was not updated: %s; `nnparity report %s` rebuilds it", out_dir, error,
                    out_dir)
        return None


class VerifyUsageError(ValueError):
    """An invalid ``nnparity verify`` option; the message names the option, the value and the fix."""


def _check_options(args) -> None:
    """Raise VerifyUsageError for a non-positive number, an empty model list or an unusable --data-dir."""
    for option, value in (("--steps", args.steps), ("--threads", args.threads), ("--timeout", args.timeout)):
        if value <= 0:
            raise VerifyUsageError(f"invalid {option} {value:g}: it must be positive")
    if args.models is not None and not _split(args.models) and not args.spec:
        raise VerifyUsageError(f"invalid --models {args.models!r}: name at least one model")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        problem = "it is a file, not a directory" if os.path.exists(args.data_dir) else "the directory does not exist"
        raise VerifyUsageError(f"invalid --data-dir {args.data_dir!r}: {problem}")


def _split(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="nnparity verify", description=__doc__.split("\n")[0])
    add_verify_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each worker start and end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return run_verify_command(args)


if __name__ == "__main__":
    sys.exit(main())
