"""Theano 1.0.5 + Lasagne 0.1 backend, run in its own virtual environment.

Theano 1.0.5 needs numpy 1.23.5, so it cannot share the main environment:
the harness runs this backend's worker with the interpreter of
``.venv-theano-lasagne`` (created by ``scripts/make_legacy_env.sh``). Two
backends are registered: ``theano-lasagne`` replaces Lasagne's max-pooling
layer and ``rectify`` with variants whose gradients match the other
frameworks, and ``theano-lasagne-stock`` uses the stock layers, so that
``verify`` shows how far stock Lasagne's gradients differ. This module imports
no framework.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from nnparity.backends.registry import Availability, BackendInfo, register

ENV_DIR_NAME = ".venv-theano-lasagne"
CREATE_COMMAND = "bash scripts/make_legacy_env.sh"


def legacy_env_dir() -> Path:
    """Return the legacy environment: ``NNPARITY_THEANO_LASAGNE_ENV``, else ``.venv-theano-lasagne`` in the checkout."""
    override = os.environ.get("NNPARITY_THEANO_LASAGNE_ENV")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[3] / ENV_DIR_NAME


def legacy_python() -> str | None:
    """Return the legacy environment's Python executable, or None when the environment is missing."""
    python = legacy_env_dir() / "bin" / "python"
    return str(python) if python.exists() else None


def probe() -> Availability:
    """Report the legacy environment's Theano and Lasagne versions without starting its interpreter."""
    if legacy_python() is None:
        return Availability(False, {}, f"legacy environment missing; create it with: {CREATE_COMMAND}")
    site_packages = sorted(legacy_env_dir().glob("lib/python*/site-packages"))
    versions = {}
    for dist in importlib.metadata.distributions(path=[str(p) for p in site_packages]):
        name = dist.metadata["Name"]
        if name and name.lower() in ("theano", "lasagne", "numpy", "scipy"):
            versions[name] = dist.version
    missing = [name for name in ("Theano", "Lasagne") if name not in versions]
    if missing:
        return Availability(
            False, versions,
            f"{', '.join(missing)} missing from {legacy_env_dir()}; recreate it with: FORCE=1 {CREATE_COMMAND}",
        )
    return Availability(True, versions)


register(BackendInfo(
    "theano-lasagne", "nnparity.backends.theano_lasagne.adapter:LasagneAdapter", ("Theano", "Lasagne"),
    "Theano 1.0.5 + Lasagne 0.1 with first-maximum pooling and switch ReLU (legacy environment)",
    install_hint=CREATE_COMMAND, interpreter=legacy_python, probe=probe,
    one_dtype_per_process=True,
))
register(BackendInfo(
    "theano-lasagne-stock", "nnparity.backends.theano_lasagne.adapter:LasagneStockAdapter", ("Theano", "Lasagne"),
    "Theano 1.0.5 + Lasagne 0.1 stock layers: tied maxima share the pooling gradient, rectify'(0) = 0.5",
    variant="stock", install_hint=CREATE_COMMAND, interpreter=legacy_python, probe=probe, default=False,
    one_dtype_per_process=True,
))
