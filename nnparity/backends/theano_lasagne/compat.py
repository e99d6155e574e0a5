"""Import Theano 1.0.5 and Lasagne 0.1 with the settings and the shim they need.

Theano reads ``THEANO_FLAGS`` once, at import: its BLAS auto-detection fails
on numpy 1.23.5, so ``blas.ldflags`` (dotted, unlike PyTensor's double
underscore) is set explicitly, with ``floatX`` and a compile directory of its
own. Lasagne 0.1 imports ``theano.tensor.signal.downsample``, a module that
Theano 1.0 removed; ``install_downsample_shim`` provides its ``max_pool_2d``
on top of ``theano.tensor.signal.pool.pool_2d``. This module itself imports
no framework at module level.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from pathlib import Path

log = logging.getLogger("nnparity")

_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def compile_dir() -> Path:
    """Theano's base compile directory; ``NNPARITY_THEANO_CACHE`` overrides it."""
    override = os.environ.get("NNPARITY_THEANO_CACHE")
    if override:
        return Path(override).expanduser()
    return Path("~/.cache/nnparity/theano").expanduser() / (Path(sys.prefix).resolve().name or "python")


def default_flags(dtype: str) -> dict[str, str]:
    flags = {"floatX": dtype, "base_compiledir": str(compile_dir())}
    if any(os.path.exists(os.path.join(d, "libopenblas.so")) for d in _LIBRARY_DIRS):
        flags["blas.ldflags"] = "-lopenblas"
    else:
        # An empty ldflags makes Theano use its NumPy-based BLAS fallback instead of failing.
        flags["blas.ldflags"] = ""
        log.warning("libopenblas.so not found; Theano runs without a C BLAS (install libopenblas-dev)")
    return flags


def merged_flags(existing: str, defaults: dict[str, str]) -> str:
    """Add ``defaults`` to a ``THEANO_FLAGS`` string, keeping every key already in it."""
    present = {item.split("=", 1)[0].strip() for item in existing.split(",") if "=" in item}
    added = [f"{key}={value}" for key, value in defaults.items() if key not in present]
    return ",".join(part for part in [existing.strip(","), *added] if part)


def import_theano(dtype: str = "float64", threads: int = 1):
    """Set ``THEANO_FLAGS`` and thread counts, then import and return ``theano``."""
    if "theano" in sys.modules:
        theano = sys.modules["theano"]
        if theano.config.floatX != dtype:
            raise RuntimeError(
                f"theano was already imported with floatX={theano.config.floatX}, but this run needs {dtype}; "
                "run each dtype in its own process"
            )
        return theano

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(threads))
    defaults = default_flags(dtype)
    Path(defaults["base_compiledir"]).mkdir(parents=True, exist_ok=True)
    os.environ["THEANO_FLAGS"] = merged_flags(os.environ.get("THEANO_FLAGS", ""), defaults)
    log.debug("THEANO_FLAGS=%s", os.environ["THEANO_FLAGS"])

    import theano

    return theano


def install_downsample_shim() -> None:
    """Provide ``theano.tensor.signal.downsample.max_pool_2d`` (absent from Theano 1.0.5) for Lasagne 0.1."""
    import theano.tensor.signal as signal
    from theano.tensor.signal.pool import pool_2d

    if "theano.tensor.signal.downsample" in sys.modules:
        return

    def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0), mode="max"):
        return pool_2d(input, ws=ds, ignore_border=ignore_border, stride=st, pad=padding, mode=mode)

    module = types.ModuleType("theano.tensor.signal.downsample")
    module.__doc__ = "Compatibility shim: Lasagne 0.1's view of the pooling API of Theano before 0.9."
    module.max_pool_2d = max_pool_2d
    sys.modules[module.__name__] = module
    signal.downsample = module


def import_lasagne(dtype: str = "float64", threads: int = 1):
    """Import Theano (configured), install the shim, then import and return ``lasagne``."""
    import_theano(dtype, threads)
    install_downsample_shim()
    import lasagne

    return lasagne
