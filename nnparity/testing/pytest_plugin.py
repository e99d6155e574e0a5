"""pytest support for the conformance kit: one test per (backend, check), with pytest outcomes.

Use the decorator in a test module::

    from nnparity.testing.pytest_plugin import parametrize_with_checks

    @parametrize_with_checks(["my-backend"])
    def test_my_backend_conforms(backend, check):
        check(backend)

``check`` is a ``ConformanceCheck``. Calling it runs the check and turns a
skipped result into ``pytest.skip`` and a declared gap into ``pytest.xfail``.
A failure fails the test with a message naming the check, the quantity and
the layer. Load this module as a plugin (``-p
nnparity.testing.pytest_plugin`` or ``pytest_plugins`` in a conftest) to
get ``--nnparity-backends a,b``, which keeps only those backends' cases.
"""

from __future__ import annotations

import warnings

import pytest

from nnparity.backends.registry import BackendInfo
from nnparity.testing import conformance


class ConformanceCheck:
    """A check id that runs on the backend passed to it, raising pytest outcomes."""

    def __init__(self, check: str, python_path: list[str] | None = None, batch: list[str] | None = None):
        self.check = check
        self.python_path = python_path
        # The checks likely to run in the same session (same slow marker), for one subprocess per backend.
        self.batch = batch

    def __call__(self, backend) -> conformance.CheckResult:
        result = conformance.run_check(backend, self.check, self.python_path, self.batch)
        if result.status == "skipped":
            pytest.skip(result.message)
        if result.status == "xfailed":
            pytest.xfail(result.message)
        if result.status == "xpassed":
            warnings.warn(f"{result.backend}: {self.check}: {result.message}", stacklevel=2)
        if result.status == "failed":
            pytest.fail(f"{result.backend}: {result.message}", pytrace=False)
        return result

    def __repr__(self) -> str:
        return self.check


def parametrize_with_checks(backends, checks=None, slow=None, python_path=None):
    """Parametrize a test over (backend, check) for every check on every backend.

    ``backends`` are registry names or ``BackendInfo`` objects, and
    ``checks`` limits the check ids. A case gets the ``slow`` marker when
    ``slow(backend, check)`` returns true. ``python_path`` entries are added
    to the subprocess that backends with their own environment run in.
    """
    all_cases = list(conformance.cases(backends, checks))
    is_slow = {case: slow is not None and bool(slow(case.backend, case.check)) for case in all_cases}
    batches: dict[tuple[str, bool], list[str]] = {}
    for case in all_cases:
        batches.setdefault((case.backend, is_slow[case]), []).append(case.check)

    params = []
    for case in all_cases:
        backend = next(b for b in backends if (b.name if isinstance(b, BackendInfo) else b) == case.backend)
        marks = [pytest.mark.slow] if is_slow[case] else []
        check = ConformanceCheck(case.check, python_path, batches[(case.backend, is_slow[case])])
        params.append(pytest.param(backend, check, id=case.id, marks=marks))
    return pytest.mark.parametrize(("backend", "check"), params)


def pytest_addoption(parser) -> None:
    parser.addoption("--nnparity-backends", default="",
                     help="comma-separated backends whose conformance cases run (default: all)")


def pytest_collection_modifyitems(config, items) -> None:
    chosen = {name.strip() for name in config.getoption("--nnparity-backends").split(",") if name.strip()}
    if not chosen:
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec else None
        if isinstance(backend, BackendInfo):
            backend = backend.name
        (drop if isinstance(backend, str) and backend not in chosen else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
