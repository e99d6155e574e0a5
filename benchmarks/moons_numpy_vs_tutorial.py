"""Time the NumPy adapter's 20000 float64 moons steps against the classic hand-written loop.

Both run in this one process, BLAS pinned to one thread, in alternating
repeats so that machine load hits both alike. The adapter is driven the way
the harness drives it: a plain loop over ``train_step``. Prints each
median and the ratio adapter / tutorial.

    python benchmarks/moons_numpy_vs_tutorial.py [--repeats 5] [--passes 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tutorial_moons import moons_problem, train_tutorial  # noqa: E402

from nnparity.backends.base import RunOptions  # noqa: E402
from nnparity.backends.numpy.adapter import NumpyAdapter  # noqa: E402
from nnparity.models import get_spec  # noqa: E402


def time_adapter(problem, passes: int) -> float:
    spec = get_spec("moons-mlp").replace(dtype="float64").validate()
    adapter = NumpyAdapter(spec, RunOptions(dtype="float64", threads=1))
    adapter.build(problem.initial)
    x, y = problem.x, problem.labels

    start = time.perf_counter()
    for _ in range(passes):
        adapter.train_step(x, y, None)
    elapsed = time.perf_counter() - start

    adapter.close()
    return elapsed


def time_tutorial(problem, passes: int) -> float:
    start = time.perf_counter()
    train_tutorial(problem, passes)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats of each loop (default 5)")
    parser.add_argument("--passes", type=int, default=20000, help="training passes per repeat (default 20000)")
    args = parser.parse_args(argv)

    problem = moons_problem(hidden=3)
    adapter_times, tutorial_times = [], []
    with threadpool_limits(limits=1):
        blas = [f"{info['internal_api']} {info['version']}" for info in threadpool_info() if info["user_api"] == "blas"]
        for _ in range(args.repeats):
            adapter_times.append(time_adapter(problem, args.passes))
            tutorial_times.append(time_tutorial(problem, args.passes))

    adapter_median = statistics.median(adapter_times)
    tutorial_median = statistics.median(tutorial_times)
    print(f"numpy {np.__version__}, BLAS {', '.join(blas) or 'unknown'}, 1 thread, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"{args.passes} passes, {args.repeats} alternating repeats")
    print(f"adapter  median {adapter_median:.3f} s  ({1e6 * adapter_median / args.passes:.1f} us/step)  "
          f"samples {', '.join(f'{t:.3f}' for t in adapter_times)}")
    print(f"tutorial median {tutorial_median:.3f} s  ({1e6 * tutorial_median / args.passes:.1f} us/step)  "
          f"samples {', '.join(f'{t:.3f}' for t in tutorial_times)}")
    print(f"ratio adapter/tutorial {adapter_median / tutorial_median:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
