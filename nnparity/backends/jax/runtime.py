"""Process-wide JAX settings, made before JAX is imported, and the imported modules.

Every module of this backend imports ``jax`` through this one, so the thread
settings below are in place when XLA creates its CPU client.

Threads: XLA's CPU client sizes its intra-op thread pool from the CPUs the
process may run on, and jaxlib 0.10.2 reads no thread-count setting. An
``intra_op_parallelism_threads=N`` word in ``XLA_FLAGS`` is silently ignored,
and ``--intra_op_parallelism_threads`` aborts the process as an unknown flag.
So, when ``NNPARITY_THREADS`` is set, this module restricts the process's
CPU affinity to that many CPUs, and for one thread also sets
``--xla_cpu_multi_thread_eigen=false``. Measured on the 2-core development
machine: a 2000x2000 float32 matmul took 182 ms with both CPUs and 321 ms
with the affinity set to one. The affinity applies to the whole process,
which suits a worker that runs one backend. When the variable is unset
nothing changes, so in-process tests keep all CPUs.

Float64: ``jax_enable_x64`` is switched on at import, before any array
exists, for every run; float32 runs cast every input and parameter
explicitly, so they stay float32.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("nnparity")

THREADS_VARIABLE = "NNPARITY_THREADS"
SINGLE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"


def _configure_threads() -> dict:
    """Apply ``NNPARITY_THREADS`` (flags and CPU affinity); return what was set."""
    raw = os.environ.get(THREADS_VARIABLE)
    settings: dict = {"requested_threads": None}
    if raw is None:
        return settings

    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(
            f"{THREADS_VARIABLE}={raw!r} is not a positive integer; "
            f"set it to the number of CPU threads the run may use, for example {THREADS_VARIABLE}=2"
        )
    settings["requested_threads"] = threads

    if "jax" in sys.modules:
        # XLA may already have created its CPU client with the full thread pool.
        log.warning(
            "jax was imported before nnparity.backends.jax; %s=%d may not limit XLA's threads",
            THREADS_VARIABLE, threads,
        )
        settings["imported_before_settings"] = True

    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {SINGLE_THREAD_FLAG}".strip()

    if hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        if threads < len(allowed):
            os.sched_setaffinity(0, allowed[:threads])
        settings["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    else:
        log.warning("this platform has no sched_setaffinity; XLA may use more than %d threads", threads)
    return settings


THREAD_SETTINGS = _configure_threads()

import jax  # noqa: E402  (must follow the settings above)
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

jax.config.update("jax_enable_x64", True)

THREAD_SETTINGS["xla_flags"] = os.environ.get("XLA_FLAGS", "")

__all__ = ["jax", "jnp", "optax", "THREAD_SETTINGS", "THREADS_VARIABLE"]
