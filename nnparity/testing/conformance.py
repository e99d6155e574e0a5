"""The adapter conformance kit: every check on every backend, in the scikit-learn ``check_estimator`` spirit.

A case is (backend, spec, check): the check ids name the tiny spec they
build (``layer:conv-stride2``, ``optimizer:adam-uncorrected``; the list is in
``nnparity.testing.checks`` and ``contract_checks``). ``cases(backends)``
yields them with readable ids, ``run_check`` runs one and returns a
``CheckResult``, and ``parametrize_with_checks(backends)`` turns them into
one pytest test per case::

    from nnparity.testing.conformance import parametrize_with_checks

    @parametrize_with_checks(["numpy", "my-backend"])
    def test_adapter_conforms(backend, check):
        check(backend)

Outcomes:

- ``passed``;
- ``failed``, with a message naming the check, the quantity and the layer;
- ``skipped``, when the backend is not installed or raises
  ``UnsupportedSpec`` or ``BackendUnavailable``;
- ``xfailed``, when the adapter class declares the check in
  ``conformance_gaps = {"check-id": "reason"}`` (a group name such as
  ``"optimizer"`` covers all its checks);
- ``xpassed``, when a declared gap passes after all.

A backend that raises ``UnsupportedSpec`` for float64 runs each check in
float32 instead, and the result's message says so.

Backends whose framework must be imported in a process of its own (a
``BackendInfo`` with ``environment`` overrides or its own ``interpreter``:
the Keras backends and the legacy Theano environment) run all their checks
in one subprocess, ``python -m nnparity.testing.conformance --json
BACKEND``, whose results are cached for the rest of the session.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass

from nnparity.backends.base import BackendUnavailable, RunOptions, UnsupportedSpec
from nnparity.backends.registry import BackendInfo, get_backend, load_adapter
from nnparity.testing import contract_checks  # noqa: F401  (registers the contract checks)
from nnparity.testing.checks import (
    CHECKS, FLOAT32_TOLERANCE, LAYER_SPECS, TOLERANCE, CheckFailed, tiny_data,
)

REFERENCE = "numpy"
SUBPROCESS_TIMEOUT_S = 900.0
STATUSES = ("passed", "failed", "skipped", "xfailed", "xpassed")


@dataclass
class CheckResult:
    backend: str
    check: str
    status: str
    message: str = ""


@dataclass(frozen=True)
class Case:
    """One (backend, check) pair; ``id`` is ``backend-group:variant``, as pytest shows it."""

    backend: str
    check: str

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.check}"


class Context:
    """The builders a check receives: one for the backend's adapter, one for the NumPy reference.

    ``dtype`` is the default for both, with ``tolerance`` to match: float64
    normally, float32 for a backend that rejects float64.
    """

    def __init__(self, info: BackendInfo, adapter_class, reference_class, dtype: str = "float64"):
        self.info = info
        self.name = info.name
        self.adapter_class = adapter_class
        self.reference_class = reference_class
        self.dtype = dtype
        self.tolerance = TOLERANCE if dtype == "float64" else FLOAT32_TOLERANCE
        # Dtypes the init checks load parameters in: both, unless float64 is rejected
        # or the process may use only one (see BackendInfo.one_dtype_per_process).
        self.dtypes = ("float64", "float32") if dtype == "float64" else ("float32",)
        only = os.environ.get(ONLY_DTYPE_VARIABLE)
        if only:
            self.dtypes = tuple(d for d in self.dtypes if d == only)

    def make(self, spec, params=None, dtype=None, **options):
        return self._build(self.adapter_class, spec, params, dtype or self.dtype, options)

    def reference(self, spec, params=None, dtype=None, **options):
        return self._build(self.reference_class, spec, params, dtype or self.dtype, options)

    def data(self, spec, seed: int = 3):
        """Return ``tiny_data`` with inputs, and float targets, cast to ``dtype``."""
        x, y = tiny_data(spec, seed)
        return x.astype(self.dtype), (y.astype(self.dtype) if y.dtype.kind == "f" else y)

    @staticmethod
    def _build(adapter_class, spec, params, dtype, options):
        if spec.dtype != dtype:
            # A deep copy, not spec.replace, because replace round-trips through a dict
            # that accepts only the built-in layer kinds, not the unsupported-layer check's.
            spec = copy.deepcopy(spec)
            spec.dtype = dtype
            spec.validate()
        adapter = adapter_class(spec, RunOptions(dtype=dtype, threads=1, **options))
        adapter.build(spec.initial_params() if params is None else params)
        return adapter


def check_ids() -> list[str]:
    return list(CHECKS)


def cases(backends, checks=None):
    """Yield every (backend, check) ``Case``; ``checks`` limits the check ids (default: all)."""
    for backend in backends:
        name = backend.name if isinstance(backend, BackendInfo) else backend
        for check in checks or CHECKS:
            yield Case(name, check)


def declared_gap(adapter_class, check: str) -> str | None:
    """Return the reason the adapter declares for a known gap in ``check`` (by id or by group), or None."""
    gaps = getattr(adapter_class, "conformance_gaps", None) or {}
    return gaps.get(check) or gaps.get(check.split(":")[0])


def _resolve(backend) -> BackendInfo:
    return backend if isinstance(backend, BackendInfo) else get_backend(backend)


def needs_subprocess(info: BackendInfo) -> bool:
    return bool(info.environment) or info.interpreter is not None


def run_check_here(info: BackendInfo, check: str) -> CheckResult:
    """Run one check in this process."""
    if check not in CHECKS:
        raise KeyError(f"unknown conformance check {check!r}; known checks: {', '.join(CHECKS)}")
    availability = info.availability()
    if not availability.available:
        return CheckResult(info.name, check, "skipped", availability.reason)
    try:
        adapter_class = load_adapter(info)
        reference_class = load_adapter(get_backend(REFERENCE))
    except ImportError as error:
        return CheckResult(info.name, check, "skipped", f"adapter {info.adapter!r} failed to import: {error}")

    gap = declared_gap(adapter_class, check)
    note = ""
    try:
        try:
            CHECKS[check].run(Context(info, adapter_class, reference_class))
        except UnsupportedSpec as error:
            if check == "dtype:float64" or not _rejects_float64(adapter_class, info):
                raise
            note = f"ran in float32, because float64 is not supported: {error}"
            CHECKS[check].run(Context(info, adapter_class, reference_class, dtype="float32"))
    except (UnsupportedSpec, BackendUnavailable) as error:
        return CheckResult(info.name, check, "skipped", f"{type(error).__name__}: {error}")
    except CheckFailed as error:
        message = f"{error} ({note})" if note else str(error)
        return CheckResult(info.name, check, "xfailed" if gap else "failed", gap or message)
    except Exception as error:  # any crash inside the adapter is that check's failure
        tail = "".join(traceback.format_exc().splitlines(keepends=True)[-6:])
        message = f"{check}: {type(error).__name__}: {error}{f' ({note})' if note else ''}\n{tail}"
        return CheckResult(info.name, check, "xfailed" if gap else "failed", gap or message)
    if gap:
        return CheckResult(info.name, check, "xpassed", f"declared gap passes now, remove it: {gap}")
    return CheckResult(info.name, check, "passed", note)


def _rejects_float64(adapter_class, info: BackendInfo) -> bool:
    """Return whether the adapter raises UnsupportedSpec for float64 on a spec that it accepts in float32."""
    spec = LAYER_SPECS["dense-linear"]()
    for dtype in ("float64", "float32"):
        try:
            Context(info, adapter_class, adapter_class, dtype).make(spec)
        except UnsupportedSpec:
            if dtype == "float32":
                return False
            continue
        return dtype == "float32"
    return False


_SUBPROCESS_RESULTS: dict[tuple, dict[str, CheckResult]] = {}
ONLY_DTYPE_VARIABLE = "NNPARITY_CONFORMANCE_DTYPE"


def run_checks_in_subprocess(
    info: BackendInfo, checks: list[str], python_path=None, only_dtype: str | None = None
) -> dict[str, CheckResult]:
    """Run ``checks`` for ``info`` in one worker process with the backend's environment and interpreter.

    ``only_dtype`` limits the process to one float type, for frameworks that fix it at import.
    """
    env = dict(os.environ)
    if only_dtype:
        env[ONLY_DTYPE_VARIABLE] = only_dtype
    env.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    env.update(info.environment)
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join([*python_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    interpreter = (info.interpreter() if info.interpreter else None) or sys.executable
    command = [interpreter, "-m", "nnparity.testing.conformance", "--json", "--name", info.name,
               "--adapter", info.adapter, "--here", *[arg for check in checks for arg in ("--check", check)]]
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        reason = f"conformance subprocess timed out after {SUBPROCESS_TIMEOUT_S:g} s"
        return {check: CheckResult(info.name, check, "failed", reason) for check in checks}
    try:
        payload = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join(completed.stderr.strip().splitlines()[-8:])
        reason = f"conformance subprocess exited with code {completed.returncode}: {tail}"
        return {check: CheckResult(info.name, check, "failed", reason) for check in checks}
    return {item["check"]: CheckResult(**item) for item in payload}


def run_check(backend, check: str, python_path=None, batch=None) -> CheckResult:
    """Run one check on ``backend`` (a name or a BackendInfo), in a subprocess when the backend needs one.

    A subprocess runs the whole ``batch`` of check ids (default: every
    check) and caches the results, so that each framework is imported once.
    """
    info = _resolve(backend)
    if not needs_subprocess(info) and not python_path:
        return run_check_here(info, check)
    only_dtype = None
    if info.one_dtype_per_process:
        only_dtype = "float32" if check == "dtype:float32" else "float64"
    cached = _SUBPROCESS_RESULTS.setdefault((info.name, info.adapter, tuple(python_path or ()), only_dtype), {})
    if check not in cached:
        availability = info.availability()
        if not availability.available:
            return CheckResult(info.name, check, "skipped", availability.reason)
        pending = [c for c in (batch or CHECKS) if c not in cached]
        if only_dtype == "float32":
            pending = ["dtype:float32"]
        elif only_dtype == "float64":
            pending = [c for c in pending if c != "dtype:float32"]
        cached.update(run_checks_in_subprocess(info, pending if check in pending else [check, *pending],
                                               python_path, only_dtype))
    return cached[check]


def run_checks(backend, checks=None, python_path=None) -> list[CheckResult]:
    checks = list(checks or CHECKS)
    return [run_check(backend, check, python_path, batch=checks) for check in checks]


def checks_for_spec(spec) -> list[str]:
    """Layer and loss checks that exercise only what ``spec`` uses: its layer kinds, loss and L2 term.

    ``nnparity verify`` runs these when a model differs, so that the message
    can name the layer kind (or loss) behind the difference.
    """
    kinds = {layer.kind for layer in spec.layers}
    selected = []
    for name, factory in LAYER_SPECS.items():
        tiny = factory()
        if not {layer.kind for layer in tiny.layers} <= kinds:
            continue
        if name.startswith("loss-"):
            if tiny.regularization is not None and spec.regularization is None:
                continue
            if tiny.regularization is None and tiny.loss.kind != spec.loss.kind:
                continue
        selected.append(f"loss:{name[5:]}" if name.startswith("loss-") else f"layer:{name}")
    if {"conv2d", "maxpool2d"} <= kinds:
        selected.append("layer:maxpool-tied")
    return selected


def diagnose(backend, spec, python_path=None) -> list[CheckResult]:
    """Run ``checks_for_spec(spec)`` on ``backend`` in a subprocess; return the failed results."""
    info = _resolve(backend)
    results = run_checks_in_subprocess(info, checks_for_spec(spec), python_path)
    return [result for result in results.values() if result.status == "failed"]


def parametrize_with_checks(backends, checks=None):
    """A pytest decorator running every check on every backend; see ``nnparity.testing.pytest_plugin``."""
    from nnparity.testing.pytest_plugin import parametrize_with_checks as decorator

    return decorator(backends, checks)


# Command line and subprocess driver ------------------------------------------


def format_results(results: list[CheckResult]) -> str:
    width = max([len(r.check) for r in results] + [5])
    lines = [f"{r.check.ljust(width)}  {r.status:8}  {r.message.splitlines()[0] if r.message else ''}".rstrip()
             for r in results]
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items() if n))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnparity.testing.conformance",
                                     description="Run the adapter conformance checks on one backend.")
    parser.add_argument("backend", nargs="?", help="registered backend name (or the name for --adapter)")
    parser.add_argument("--name", help="backend name when --adapter is given")
    parser.add_argument("--adapter", help="adapter class as module:Class, instead of a registered backend")
    parser.add_argument("--check", action="append", default=[], help="check id to run (repeatable; default: all)")
    parser.add_argument("--list", action="store_true", help="list the check ids and exit")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument("--here", action="store_true", help="run in this process even if the backend needs its own")
    args = parser.parse_args(argv)

    if args.list:
        try:
            for check in CHECKS.values():
                print(f"{check.id}  {check.description}")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader (`--list | head`) exited early. Point stdout at /dev/null so the flush at exit
            # does not raise the same error again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    name = args.name or args.backend
    if not name:
        parser.error("name a backend, or pass --name with --adapter")
    info = BackendInfo(name, args.adapter) if args.adapter else get_backend(name)
    unknown = [check for check in args.check if check not in CHECKS]
    if unknown:
        parser.error(f"unknown check ids {unknown}; see --list")
    checks = args.check or list(CHECKS)
    results = ([run_check_here(info, check) for check in checks] if args.here
               else run_checks(info, checks))
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    else:
        print(format_results(results))
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
