"""The ``nnparity`` command: list, run, report, compare, data.

Only this module prints; library code logs under the ``nnparity`` logger.
Exit status: 0 success, 1 a run failed, 2 invalid arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys

from nnparity.cli_display import FetchProgress, ProgressDisplay, print_results

log = logging.getLogger("nnparity")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
MODEL_ALIASES = {"moons-sweep": "MOONS_SWEEP"}
DATA_DIR_HELP = "dataset directory (default: $NNPARITY_DATA_DIR or ~/.cache/nnparity/data)"


class UsageError(Exception):
    """Invalid command-line input; the message names the value and the accepted ones."""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def parse_dtypes(text: str, option: str) -> list[str]:
    """Parse ``float32``, ``float64``, ``both`` or a comma-separated list of them, without repeats."""
    dtypes: list[str] = []
    for item in split_list(text):
        for dtype in ("float32", "float64") if item == "both" else (item,):
            if dtype not in ("float32", "float64"):
                raise UsageError(f"invalid {option} {dtype!r}; use float32, float64 or both "
                                 "(or float32,float64)")
            if dtype not in dtypes:
                dtypes.append(dtype)
    if not dtypes:
        raise UsageError(f"invalid {option} {text!r}; use float32, float64 or both (or float32,float64)")
    return dtypes


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


# nnparity list -------------------------------------------------------------------


def cmd_list(args) -> int:
    from nnparity.backends.registry import all_backends
    from nnparity.datasets import DATASETS, dataset_status
    from nnparity.models import WORKLOADS

    check_data_dir(args.data_dir)
    backends = all_backends()
    # One width for the name column of all three sections, so the columns line up for long names too.
    width = max(len(name) for name in [*WORKLOADS, *DATASETS, *backends]) + 1
    print("Models:")
    for name, workload in WORKLOADS.items():
        present, detail = dataset_status(workload.dataset, args.data_dir) if workload.dataset in DATASETS \
            else (False, f"no loader for dataset {workload.dataset!r} in this nnparity")
        mark = "present" if present else "MISSING"
        suite = "" if workload.in_default_suite else " (not in the default suite)"
        print(f"  {name:{width}} {workload.summary}{suite}")
        print(f"  {'':{width}} data {workload.dataset}: {mark}: {detail}")

    print("\nDatasets:")
    for name, info in DATASETS.items():
        present, detail = dataset_status(name, args.data_dir)
        print(f"  {name:{width}} {'present' if present else 'MISSING':8} {info.summary}")
        print(f"  {'':{width}} {detail}")

    print("\nBackends:")
    for name, info in backends.items():
        availability = info.availability()
        versions = ", ".join(f"{k} {v}" for k, v in availability.versions.items())
        state = "available" if availability.available else "unavailable"
        default = "" if info.default else " (not run by default)"
        print(f"  {name:{width}} {state:11} {versions}{default}")
        if not availability.available:
            print(f"  {'':{width}} {availability.reason}")
    return 0


# nnparity run --------------------------------------------------------------------


def resolve_models(requested: str | None, data_dir: str | None) -> list[str]:
    import nnparity.models as models
    from nnparity.datasets import DATASETS, dataset_status

    if not requested:
        chosen = []
        for name, workload in models.WORKLOADS.items():
            if not workload.in_default_suite:
                continue
            if workload.dataset in DATASETS and dataset_status(workload.dataset, data_dir)[0]:
                chosen.append(name)
            else:
                log.info("default suite: leaving out %s, its dataset %s is not present", name, workload.dataset)
        return chosen

    if not split_list(requested):
        raise UsageError(f"invalid --models {requested!r}: name at least one model; see `nnparity list`")
    names = []
    for item in split_list(requested):
        expanded = list(getattr(models, MODEL_ALIASES[item])) if item in MODEL_ALIASES else [item]
        unknown = [n for n in expanded if n not in models.WORKLOADS]
        if unknown:
            known = ", ".join(list(models.WORKLOADS) + list(MODEL_ALIASES))
            raise UsageError(f"unknown model {unknown[0]!r}; known models: {known}")
        names += [n for n in expanded if n not in names]
    return names


def resolve_backends(requested: str | None) -> list:
    from nnparity.backends.registry import all_backends

    backends = all_backends()
    if not requested:
        chosen = [info for info in backends.values() if info.default and info.availability().available]
        for info in backends.values():
            if info.default and info not in chosen:
                log.info("default suite: leaving out backend %s: %s", info.name, info.availability().reason)
        return chosen
    names = split_list(requested)
    unknown = [n for n in names if n not in backends]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}; known backends: {', '.join(backends)}")
    return [backends[n] for n in dict.fromkeys(names)]


def start_output(out_dir: str) -> None:
    """Create ``out_dir`` and move an earlier suite's results into its history, so the report covers this suite only."""
    from nnparity.harness.output import OutputDirError, archive_previous, prepare_out_dir

    try:
        prepare_out_dir(out_dir)
        archive_previous(out_dir)
    except OutputDirError as error:
        raise UsageError(str(error)) from None


def check_data_dir(data_dir: str | None, option: str = "--data-dir") -> None:
    """Reject an explicit data directory that is missing or a file; the default one is created when needed."""
    if data_dir is None:
        return
    if os.path.isfile(data_dir):
        raise UsageError(f"invalid {option} {data_dir!r}: it is a file, not a directory")
    if not os.path.isdir(data_dir):
        raise UsageError(
            f"invalid {option} {data_dir!r}: the directory does not exist; create it and put the dataset files "
            "there, or leave the option out to use $NNPARITY_DATA_DIR or ~/.cache/nnparity/data"
        )


DEVICE_PATTERN = re.compile(r"cpu|gpu(:\d+)?")


def check_devices(text: str) -> list[str]:
    devices = split_list(text)
    if not devices:
        raise UsageError(f"invalid --devices {text!r}: name at least one device, for example cpu")
    for device in devices:
        if not DEVICE_PATTERN.fullmatch(device):
            raise UsageError(f"invalid --devices value {device!r}; use cpu, gpu or gpu:N (N the GPU index)")
    return devices


def check_schedule(name: str) -> str:
    from nnparity.harness.plan import SCHEDULE_NAMES

    if name not in SCHEDULE_NAMES:
        raise UsageError(f"invalid --schedule {name!r}; use {', '.join(SCHEDULE_NAMES[:-1])} or {SCHEDULE_NAMES[-1]}")
    return name


def load_specs(paths: list[str], models: list[str]) -> list:
    """Read the ``--spec`` files; reject an invalid one, or a name that a built-in or another spec already has."""
    from nnparity.harness.plan import load_spec_file
    from nnparity.models import WORKLOADS
    from nnparity.specs import SpecError

    specs = []
    for path in [p for item in paths for p in split_list(item)]:
        try:
            spec = load_spec_file(path)
        except SpecError as error:
            raise UsageError(str(error)) from None
        if spec.name in WORKLOADS:
            raise UsageError(f"spec file {path}: the name {spec.name!r} is a built-in model's; give the spec another name")
        if spec.name in models or any(other.name == spec.name for other in specs):
            raise UsageError(f"spec file {path}: another spec of this run is also named {spec.name!r}; rename one")
        specs.append(spec)
    return specs


def cmd_run(args) -> int:
    from nnparity.harness import environment as env_capture
    from nnparity.harness.plan import plan_jobs, prepare_inputs
    from nnparity.harness.results import read_records
    from nnparity.harness.runner import run_suite
    from nnparity.report import ENVIRONMENT_FILE, write_report
    from nnparity.report import verification as verification_module

    check_data_dir(args.data_dir)
    # Spec files alone run only themselves; the default suite runs when neither option names a model.
    models = resolve_models(args.models, args.data_dir) if args.models is not None or not args.spec else []
    specs = load_specs(args.spec, models)
    backends = resolve_backends(args.backends)
    dtypes = parse_dtypes(args.dtype, "--dtype")
    if not models and not specs:
        raise UsageError("no model to run: no default model has its data present; see `nnparity list`")
    verify_dtypes = check_verify_options(args)
    for option, value in (("--threads", args.threads), ("--repeats", args.repeats), ("--max-steps", args.max_steps),
                          ("--timeout", args.timeout), ("--verify-steps", args.verify_steps)):
        if value is not None and value <= 0:
            raise UsageError(f"invalid {option} {value:g}: it must be positive")
    devices = check_devices(args.devices)
    check_schedule(args.schedule)
    if specs:
        log.info("spec files run their own schedules; --schedule applies to built-in models only")

    start_output(args.out)
    command = "nnparity " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    environment = env_capture.capture(args.threads, {b.name: b for b in backends}, command)
    with open(os.path.join(args.out, ENVIRONMENT_FILE), "w", encoding="utf-8") as handle:
        json.dump(environment, handle, indent=2)

    jobs = plan_jobs(
        models + specs, backends, devices=devices, dtypes=dtypes, repeats=args.repeats,
        threads=args.threads, data_dir=args.data_dir, max_steps=args.max_steps, schedule_name=args.schedule,
        dropout_mode=args.dropout, timeout_s=args.timeout,
    )
    prepare_inputs(jobs, args.out)
    log.info("running %d jobs into %s", len(jobs), args.out)

    with ProgressDisplay(len(jobs), enabled=not args.no_progress) as display:
        suite = run_suite(jobs, args.out, environment, {b.name: b for b in backends}, display.handle)

    # The report is written before any verification, so stopping that loses none of the runs.
    written = write_report(args.out, records=read_records(args.out))
    verification_failed = False
    if args.verify and not suite.interrupted:
        try:
            verification_failed = verify_suite(jobs, backends, verify_dtypes, args)
        except KeyboardInterrupt:
            written = write_report(args.out, records=read_records(args.out))
            print(f"Interrupted during the verification: the runs, the report and the models already verified "
                  f"are kept in {args.out}; `nnparity verify --out {args.out}` verifies the rest.", file=sys.stderr)
            return EXIT_INTERRUPTED
        written = write_report(args.out, records=read_records(args.out))
    print_results(suite.records, verification_module.load(args.out, warn=False))
    print(f"\nReport: {written['markdown']} and {written['html']}")
    if suite.interrupted:
        print("Interrupted: the report contains the runs that finished.", file=sys.stderr)
        return EXIT_INTERRUPTED
    if verification_failed:
        print(f"Verification failed: a backend differs from numpy; see the verification column of "
              f"{written['markdown']} and {os.path.join(args.out, verification_module.VERIFY_FILE)}", file=sys.stderr)
    failed = verification_failed or any(r.status == "failed" for r in suite.records)
    return EXIT_FAILED if failed else 0


def check_verify_options(args) -> list[str]:
    """Check --verify-dtype and --verify-steps, and that they come with --verify; return the dtypes to verify in."""
    for option, value in (("--verify-dtype", args.verify_dtype), ("--verify-steps", args.verify_steps)):
        if value is not None and not args.verify:
            raise UsageError(f"{option} has no effect without --verify; add --verify or leave {option} out")
    dtypes = parse_dtypes("float64" if args.verify_dtype is None else args.verify_dtype, "--verify-dtype")
    if args.verify_steps is None:
        args.verify_steps = 10
    return dtypes


def verify_suite(jobs, backends, dtypes: list[str], args) -> bool:
    """Verify every model of the suite on its backends, once per dtype; return whether any verification failed.

    Without --verify-dtype, a backend that cannot run float64 at all
    (keras-torch) is verified in float32 instead, so that its runs get the
    strictest check it supports rather than none.
    """
    from nnparity.harness import verify
    from nnparity.specs import ModelSpec

    specs = {}
    for job in jobs:
        if job.spec is not None:
            specs.setdefault(job.model, ModelSpec.from_dict(job.spec))
    names = {job.backend for job in jobs if job.spec is not None}
    infos = [info for info in backends if info.name in names]
    if not specs or not infos:
        log.warning("nothing to verify: the suite ran no network model")
        return False
    failed = False
    passes = [(dtype, infos) for dtype in dtypes]
    while passes:
        dtype, infos = passes.pop(0)
        print(f"Verifying {plural(len(specs), 'model')} on {plural(len(infos), 'backend')} against numpy "
              f"({dtype}, {plural(args.verify_steps, 'step')})", file=sys.stderr)
        # With out_dir, an interrupted verification still writes the models it finished.
        result = verify.run_verify(
            list(specs.values()), infos, dtype=dtype, steps=args.verify_steps, data_dir=args.data_dir,
            threads=args.threads, progress=None if args.no_progress else verify.print_progress, out_dir=args.out,
        )
        for message in verify.failure_messages(result.rows):
            print(f"verification FAIL {message.splitlines()[0]}", file=sys.stderr)
        failed = failed or result.failed
        if dtype == "float64" and args.verify_dtype is None:
            no_float64 = [info for info in infos if _lacks_float64(info.name, result.rows)]
            if no_float64:
                passes.append(("float32", no_float64))
    return failed


def _lacks_float64(backend: str, rows) -> bool:
    """Return whether ``backend`` skipped every model because it does not support float64."""
    mine = [r for r in rows if r.backend == backend]
    return bool(mine) and all(r.status == "skipped" and "float64" in r.message and "not supported" in r.message
                              for r in mine)


# nnparity report / compare / data --------------------------------------------------


def cmd_report(args) -> int:
    from nnparity.harness.results import RUNS_FILE, read_records
    from nnparity.report import write_report

    from nnparity.report import verification

    records = read_records(args.dir)
    written = write_report(args.dir, records=records)
    if not records:
        print(f"nnparity: error: no runs in {os.path.join(args.dir, RUNS_FILE)}: the file contains no records; "
              f"run `nnparity run --out {args.dir}` to add runs", file=sys.stderr)
        return EXIT_FAILED
    print_results(records, verification.load(args.dir, warn=False))
    print(f"\nWrote {', '.join(written.values())}")
    return 0


def cmd_compare(args) -> int:
    from nnparity.report.compare import compare_dirs, format_comparison

    rows = compare_dirs(args.old, args.new, threshold=args.threshold)
    print(format_comparison(rows))
    return EXIT_FAILED if any(row.mark == "!" for row in rows) else 0


def cmd_data_list(args) -> int:
    from nnparity.datasets import DATASETS, dataset_status, default_data_dir

    check_data_dir(args.data_dir)
    print(f"Data directory: {default_data_dir(args.data_dir)}")
    width = max(len(name) for name in DATASETS) + 1
    for name, info in DATASETS.items():
        present, detail = dataset_status(name, args.data_dir)
        fetch = " (fetchable)" if info.fetchable else ""
        print(f"  {name:{width}} {'present' if present else 'MISSING':8} {detail}{fetch}")
    return 0


def cmd_data_fetch(args) -> int:
    from nnparity.datasets import fetch_dataset
    from nnparity.datasets.fetch import SOURCES, FetchError

    if args.name not in SOURCES:
        raise UsageError(f"no standard download for dataset {args.name!r}; fetchable datasets: {', '.join(SOURCES)}")
    bar = FetchProgress(args.name, enabled=not args.no_progress)
    try:
        paths = fetch_dataset(args.name, data_dir=args.data_dir, base_url=args.base_url, progress=bar.update)
    except FetchError as error:
        bar.close()  # before the message, so the bar does not redraw after it
        print(f"nnparity: error: fetching {args.name} failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        bar.close()
    for path in paths:
        print(path)
    return 0


# Argument parsing ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnparity", description="Train one network spec on several backends and compare them.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list models, datasets and backends")
    listing.add_argument("--data-dir", help=DATA_DIR_HELP)
    listing.set_defaults(func=cmd_list)

    run = commands.add_parser("run", help="run the suite and write runs.jsonl, summary.csv and the reports")
    run.add_argument("--models", help="comma-separated models (moons-sweep = every moons-mlp hidden size); "
                     "default: the default suite where its data is present")
    run.add_argument("--spec", action="append", default=[], metavar="FILE",
                     help="a model spec file (.toml or .json) to run under its own name; repeatable or "
                          "comma-separated; without --models, only the spec files run")
    run.add_argument("--backends", help="comma-separated backends; default: every available default backend")
    run.add_argument("--devices", default="cpu", help="comma-separated devices (default: cpu)")
    run.add_argument("--dtype", default="float32", help="float32, float64 or both, comma-separated (default: float32)")
    run.add_argument("--out", default=os.path.join("results", "latest"),
                     help="output directory (default: results/latest)")
    run.add_argument("--data-dir", help=DATA_DIR_HELP)
    run.add_argument("--threads", type=int, default=2, help="CPU threads per run (default: 2)")
    run.add_argument("--repeats", type=int, default=1, help="runs per combination (default: 1)")
    run.add_argument("--max-steps", type=int, help="cut every schedule to at most this many steps")
    run.add_argument("--schedule", default="tutorial",
                     help="tutorial (default), long or short; a model without the requested one runs its tutorial "
                          "schedule")
    run.add_argument("--dropout", choices=("exact", "native"), default="exact",
                     help="exact: the harness supplies the masks (default); native: each framework draws them")
    run.add_argument("--timeout", type=float,
                     help="seconds per run before it is killed (default: per model, 30 min or more for the tutorial "
                          "schedule, scaled by the length of a longer one)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run.add_argument("--verify", action="store_true",
                     help="after the runs, verify each model on each backend against numpy (`nnparity verify`) and "
                          "show the outcome in the report's verification column")
    run.add_argument("--verify-dtype",
                     help="dtypes to verify in with --verify, comma-separated (default: float64, the strict check)")
    run.add_argument("--verify-steps", type=int, help="steps compared by --verify (default: 10)")
    run.set_defaults(func=cmd_run)

    report = commands.add_parser(
        "report", help="regenerate summary.csv, report.md and report.html from DIR/runs.jsonl",
    )
    report.add_argument("dir")
    report.set_defaults(func=cmd_report)

    compare = commands.add_parser("compare", help="compare step times and accuracies of two result directories")
    compare.add_argument("old")
    compare.add_argument("new")
    compare.add_argument("--threshold", type=float, default=1.1, help="ratio that counts as a change (default: 1.1)")
    compare.set_defaults(func=cmd_compare)

    add_verify_command(commands)

    data = commands.add_parser("data", help="list or download datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="download a dataset into the data directory")
    fetch.add_argument("name")
    fetch.add_argument("--data-dir", help=DATA_DIR_HELP)
    fetch.add_argument("--base-url", help="mirror to download from instead of the standard address")
    fetch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    fetch.set_defaults(func=cmd_data_fetch)
    data_list = data_commands.add_parser("list", help="list datasets and whether they are present")
    data_list.add_argument("--data-dir", help=DATA_DIR_HELP)
    data_list.set_defaults(func=cmd_data_list)
    return parser


def add_verify_command(commands) -> None:
    """Add ``nnparity verify``, whose options and behaviour live in ``nnparity.harness.verify``."""
    try:
        from nnparity.harness import verify
    except Exception as error:  # a broken verify module must not take the other commands down
        log.warning("the verify command is unavailable: %s: %s", type(error).__name__, error)
        return
    parser = commands.add_parser("verify", help="compare losses, logits and gradients of every backend with numpy")
    verify.add_verify_arguments(parser)
    parser.set_defaults(func=verify.run_verify_command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = args.func(args)
        sys.stdout.flush()  # inside the try, so a closed pipe raises here and not at exit
        return status
    except BrokenPipeError:
        # The reader of our output (`nnparity list | head`) exited: point stdout at /dev/null so that the
        # flush at exit does not raise again, and end quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as error:
        print(f"nnparity: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nnparity: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, ValueError) as error:
        print(f"nnparity: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except PermissionError as error:
        print(f"nnparity: error: {error.filename}: permission denied; make it writable, or copy the results "
              "to a directory where you can write", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
