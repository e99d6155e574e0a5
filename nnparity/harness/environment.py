"""Environment capture: what machine and software produced a set of runs.

Captured once per suite in the parent process, stored in every record and in
``<out>/environment.json``. Nothing here imports a deep-learning framework;
framework versions come from the registry's distribution probe.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys

import nnparity
from nnparity.harness.worker import THREAD_VARIABLES

log = logging.getLogger("nnparity")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def blas_info() -> list[dict]:
    """List the BLAS and OpenMP libraries loaded in this process, as threadpoolctl reports them."""
    try:
        import numpy  # noqa: F401  (loads NumPy's BLAS so threadpoolctl can see it)
        from threadpoolctl import threadpool_info
    except ImportError as error:
        return [{"error": f"threadpoolctl unavailable: {error}"}]
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer", "architecture")
    return [{key: info.get(key) for key in keep if key in info} for info in threadpool_info()]


def gpu_info() -> list[str] | str:
    """Describe each GPU in one line from ``nvidia-smi``, or return ``"none"`` when it is absent or fails."""
    if shutil.which("nvidia-smi") is None:
        return "none"
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        output = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("nvidia-smi failed, recording GPU as none: %s", error)
        return "none"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines or "none"


def git_commit() -> str:
    """Return the commit of the nnparity working tree (``-dirty`` when it has changes), or ``unknown`` outside git."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(nnparity.__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit or "unknown"


def capture(threads: int, backends: dict | None = None, command: str = "") -> dict:
    """Capture the environment of this suite. ``backends`` maps names to ``BackendInfo`` whose versions are probed."""
    versions = {}
    for name, info in (backends or {}).items():
        availability = info.availability()
        versions[name] = dict(availability.versions)
    return {
        "command": command,
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        # At the suite's start; each record replaces it with the value at its own run's start.
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "threads_per_run": threads,
        # The worker sets each of these to threads_per_run before importing NumPy or a framework.
        "thread_variables": {name: str(threads) for name in THREAD_VARIABLES},
        "blas": blas_info(),
        "framework_versions": versions,
        "gpu": gpu_info(),
        "git_commit": git_commit(),
        "nnparity_version": nnparity.__version__,
    }
