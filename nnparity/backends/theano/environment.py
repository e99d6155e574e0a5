"""PyTensor settings that must be in place before ``import pytensor``.

PyTensor reads ``PYTENSOR_FLAGS`` once, at import, and BLAS reads its thread
count when the library loads. This module therefore sets the environment and
only then imports PyTensor. Flags the user already set in ``PYTENSOR_FLAGS``
win over the defaults chosen here.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("nnparity")

# Debian/Ubuntu multiarch and the usual prefixes; -lopenblas links only where the
# unversioned libopenblas.so (from libopenblas-dev) exists.
_LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
    "/usr/local/lib", "/opt/homebrew/opt/openblas/lib",
)


def compile_dir() -> Path:
    """Base compile directory, reused by every run and test in this environment.

    ``NNPARITY_PYTENSOR_CACHE`` overrides it. The default keys on the interpreter
    prefix, so two virtual environments never share compiled modules.
    """
    override = os.environ.get("NNPARITY_PYTENSOR_CACHE")
    if override:
        return Path(override).expanduser()
    tag = Path(sys.prefix).resolve().name or "python"
    return Path("~/.cache/nnparity/pytensor").expanduser() / tag


def openblas_ldflags() -> str | None:
    for directory in _LIBRARY_DIRS:
        for name in ("libopenblas.so", "libopenblas.dylib"):
            if os.path.exists(os.path.join(directory, name)):
                return "-lopenblas"
    return None


def default_flags() -> dict[str, str]:
    flags = {"base_compiledir": str(compile_dir())}
    ldflags = openblas_ldflags()
    if ldflags:
        # The double underscore matters: PyTensor ignores the dotted name blas.ldflags.
        flags["blas__ldflags"] = ldflags
    return flags


def merged_flags(existing: str, defaults: dict[str, str]) -> str:
    """Add ``defaults`` to a ``PYTENSOR_FLAGS`` string, keeping every key already in it."""
    present = {item.split("=", 1)[0].strip() for item in existing.split(",") if "=" in item}
    added = [f"{key}={value}" for key, value in defaults.items() if key not in present]
    return ",".join(part for part in [existing.strip(","), *added] if part)


def import_pytensor(threads: int):
    """Set flags and thread counts, then import and return ``pytensor``."""
    if "pytensor" in sys.modules:
        log.debug("pytensor was already imported; PYTENSOR_FLAGS and thread settings keep their first values")
        return sys.modules["pytensor"]

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(threads))
    defaults = default_flags()
    Path(defaults["base_compiledir"]).mkdir(parents=True, exist_ok=True)
    os.environ["PYTENSOR_FLAGS"] = merged_flags(os.environ.get("PYTENSOR_FLAGS", ""), defaults)
    log.debug("PYTENSOR_FLAGS=%s", os.environ["PYTENSOR_FLAGS"])

    import pytensor

    return pytensor
