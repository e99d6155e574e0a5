"""The backend registry: which adapters exist, which can run here, and why not.

Probing a backend never imports its framework: it looks the distributions up
with ``importlib.metadata``, so ``nnparity list`` stays fast and a broken
framework cannot take the listing down. Only the worker process imports an
adapter module (``load_adapter``).

Third-party packages add backends through the ``nnparity.backends`` entry
point group; each entry point names a ``BackendInfo`` object or a callable
that returns one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("nnparity")

ENTRY_POINT_GROUP = "nnparity.backends"


@dataclass(frozen=True)
class Availability:
    available: bool
    versions: dict[str, str]
    reason: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """How to find, probe and load one backend.

    ``adapter`` is ``"module:Class"``; the module may import its framework at
    top level, because only worker processes import it. ``requires`` lists
    the distributions that must be installed (their versions are recorded).
    ``environment`` overrides are set in the worker before the import (for
    example ``KERAS_BACKEND``). ``interpreter`` returns the Python executable
    to run the worker with, or None for the current one. ``probe`` may replace
    the default distribution check.
    """

    name: str
    adapter: str
    requires: tuple[str, ...] = ()
    summary: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    variant: str = ""
    install_hint: str = ""
    interpreter: Callable[[], str | None] | None = None
    probe: Callable[[], Availability] | None = None
    default: bool = True
    plugin: str = ""
    one_dtype_per_process: bool = False

    def availability(self) -> Availability:
        if self.probe is not None:
            return self.probe()
        return probe_distributions(self.requires, self.install_hint)


def probe_distributions(requires, install_hint: str = "") -> Availability:
    versions, missing = {}, []
    for dist in requires:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        hint = install_hint or f"pip install {' '.join(missing)}"
        return Availability(False, versions, f"{', '.join(missing)} not installed; install with: {hint}")
    return Availability(True, versions)


_BUILTIN: dict[str, BackendInfo] = {}


def register(info: BackendInfo) -> BackendInfo:
    _BUILTIN[info.name] = info
    return info


def _extras_hint(extra: str) -> str:
    return f"pip install -c constraints.txt -e '.[{extra}]' (or make venv)"


register(BackendInfo(
    "numpy", "nnparity.backends.numpy.adapter:NumpyAdapter", ("numpy",),
    "hand-written forward and backward passes; the reference",
))
register(BackendInfo(
    "torch", "nnparity.backends.torch.adapter:TorchAdapter", ("torch",),
    "PyTorch eager", install_hint=_extras_hint("torch"),
))


def builtin_backends() -> dict[str, BackendInfo]:
    _import_builtin_modules()
    return dict(_BUILTIN)


def _import_builtin_modules() -> None:
    """Let built-in backend packages register their variants (their ``__init__`` imports no framework)."""
    package_dir = os.path.dirname(__file__)
    for entry in sorted(os.listdir(package_dir)):
        if os.path.isfile(os.path.join(package_dir, entry, "__init__.py")):
            importlib.import_module(f"nnparity.backends.{entry}")


def plugin_backends() -> dict[str, BackendInfo]:
    found = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = entry_point.load()
            info = obj() if callable(obj) and not isinstance(obj, BackendInfo) else obj
            if not isinstance(info, BackendInfo):
                raise TypeError(f"expected a BackendInfo, got {type(info).__name__}")
        except Exception as error:  # a broken plugin must not hide the other backends
            log.warning("backend plugin %r (%s) failed to load: %s", entry_point.name, entry_point.value, error)
            continue
        found[info.name] = BackendInfo(**{**info.__dict__, "plugin": entry_point.value})
    return found


def all_backends() -> dict[str, BackendInfo]:
    backends = builtin_backends()
    for name, info in plugin_backends().items():
        if name in backends:
            log.warning("backend plugin %r is ignored: a built-in backend has that name", name)
            continue
        backends[name] = info
    return backends


def get_backend(name: str) -> BackendInfo:
    backends = all_backends()
    if name not in backends:
        raise KeyError(f"unknown backend {name!r}; known backends: {', '.join(backends)}")
    return backends[name]


def load_adapter(info: BackendInfo):
    """Import the adapter class (and with it the framework). Call only inside a worker."""
    module_name, _, class_name = info.adapter.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)
