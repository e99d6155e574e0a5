"""Time each nnparity adapter's mnist-cnn training step against a hand-written loop in the same framework.

For every backend, one fresh subprocess builds the adapter (driven as the
harness worker drives it: ``train_step(x, y, masks)``, timed between two
``sync()`` calls) and an idiomatic loop from ``benchmarks/idiomatic/`` that
uses no nnparity code. Both start from the spec's initial weights and see
the same real MNIST batches (the harness's batch order) and the same exact
dropout masks, in float32 with batch 50. After the warm-up steps of each,
timed blocks of steps alternate between the two, and the order of the pair
flips every block, so that a change in machine load hits both alike.

The idiomatic loops get their images in their own layout (NHWC for
TensorFlow and Keras), converted once before timing, as a program that
stores its data that way would. The adapters receive canonical NCHW arrays,
so any per-step conversion counts as adapter overhead.

    python benchmarks/adapter_overhead.py [--backends torch,jax] [--threads 2]
        [--steps 20] [--blocks 5] [--warmup 10] [--out overhead.json]

Prints the median step time of each side and the ratio adapter / idiomatic;
the target is a ratio of at most 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_RATIO = 1.05
EXCLUDED_BY_DEFAULT = ("numpy", "theano-lasagne")
# From the same weights, batches and masks, the losses of the first steps agree
# to float32 rounding (about 1e-6 here) when both sides train the same model.
# A wrong layout changes the first loss, and a wrong optimizer rule the second.
LOSS_CHECK_STEPS = 3
LOSS_TOLERANCE = 1e-4
CHILD_TIMEOUT_S = 600

# Backend -> (idiomatic module, build options).
IDIOMATIC = {
    "torch": ("torch_loop", {"compiled": False}),
    "torch-compile": ("torch_loop", {"compiled": True}),
    "tensorflow": ("tensorflow_loop", {"xla": False}),
    "tensorflow-xla": ("tensorflow_loop", {"xla": True}),
    "keras-tensorflow": ("keras_loop", {}),
    "keras-torch": ("keras_loop", {}),
    "keras-jax": ("keras_loop", {}),
    "jax": ("jax_loop", {}),
    "theano": ("pytensor_loop", {"mode": "CVM"}),
    "theano-numba": ("pytensor_loop", {"mode": "NUMBA"}),
    "theano-jax": ("pytensor_loop", {"mode": "JAX", "batch": 50}),
}


# Parent ------------------------------------------------------------------------


def default_backends() -> list[str]:
    from nnparity.backends.registry import all_backends

    names = []
    for name, info in all_backends().items():
        if info.default and name not in EXCLUDED_BY_DEFAULT and info.availability().available:
            names.append(name)
    return names


def child_environment(backend: str, threads: int) -> dict[str, str]:
    """Build the child's environment: the worker's thread variables and the backend's own (``KERAS_BACKEND``)."""
    from nnparity.backends.registry import get_backend
    from nnparity.harness.worker import THREAD_VARIABLES

    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update(get_backend(backend).environment)
    return env


def run_backend(backend: str, args) -> dict:
    """Run one backend's pair in a fresh subprocess and return its result dict."""
    with tempfile.TemporaryDirectory() as directory:
        result_path = os.path.join(directory, "result.json")
        command = [
            sys.executable, os.path.abspath(__file__), "--child", backend, "--result", result_path,
            "--threads", str(args.threads), "--steps", str(args.steps), "--blocks", str(args.blocks),
            "--warmup", str(args.warmup),
        ]
        started = time.perf_counter()
        try:
            process = subprocess.run(
                command, env=child_environment(backend, args.threads), capture_output=True, text=True,
                timeout=CHILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return {"backend": backend, "status": "failed", "reason": f"timed out after {CHILD_TIMEOUT_S} s"}
        wall = time.perf_counter() - started
        if process.returncode != 0 or not os.path.exists(result_path):
            tail = "\n".join(process.stderr.strip().splitlines()[-8:])
            return {"backend": backend, "status": "failed", "reason": f"exit code {process.returncode}: {tail}"}
        with open(result_path, encoding="utf-8") as handle:
            result = json.load(handle)
    result["process_wall_s"] = round(wall, 1)
    return result


def format_table(results: list[dict]) -> str:
    lines = [
        f"{'backend':<17} {'adapter ms':>10} {'idiomatic ms':>12} {'ratio':>6}  {'loss diff':>9}  note",
        "-" * 72,
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"{r['backend']:<17} {r['status']}: {r['reason'].splitlines()[0][:100]}")
            continue
        notes = []
        if r["ratio"] > TARGET_RATIO:
            notes.append(f"above {TARGET_RATIO}")
        if r["loss_max_relative_difference"] > LOSS_TOLERANCE:
            notes.append("losses differ: not the same computation")
        lines.append(
            f"{r['backend']:<17} {1000 * r['adapter']['median_s']:>10.2f} {1000 * r['idiomatic']['median_s']:>12.2f} "
            f"{r['ratio']:>6.3f}  {r['loss_max_relative_difference']:>9.1e}  {', '.join(notes)}"
        )
    return "\n".join(lines)


def parent_main(args) -> int:
    backends = args.backends.split(",") if args.backends else default_backends()
    unknown = [b for b in backends if b not in IDIOMATIC]
    if unknown:
        print(
            f"no idiomatic reference loop for {', '.join(unknown)}; choose from {', '.join(IDIOMATIC)}",
            file=sys.stderr,
        )
        return 2
    print(
        f"mnist-cnn, float32, batch 50, exact dropout masks, {args.threads} threads; per backend "
        f"{args.warmup} warm-up steps, then {args.blocks} alternating blocks of {args.steps} steps",
        flush=True,
    )
    results = []
    for backend in backends:
        result = run_backend(backend, args)
        results.append(result)
        progress = f"{result['ratio']:.3f}" if result["status"] == "ok" else result["status"]
        print(f"  {backend}: {progress} ({result.get('process_wall_s', '-')} s)", file=sys.stderr, flush=True)
    print(format_table(results))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(args), "target_ratio": TARGET_RATIO, "results": results}, handle, indent=1)
    return 0


# Child -------------------------------------------------------------------------


def summarize(samples: list[float]) -> dict:
    import numpy as np

    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3), "samples_s": samples}


def timed_steps(step, sync, batches, first: int, count: int) -> tuple[list[float], list]:
    """Run steps ``first`` to ``first + count - 1``; return each step's time (between two syncs) and loss."""
    times, losses = [], []
    for index in range(first, first + count):
        sync()
        begin = time.perf_counter_ns()
        loss = step(*batches[index])
        sync()
        times.append((time.perf_counter_ns() - begin) * 1e-9)
        losses.append(loss)
    return times, losses


def child_main(args) -> int:
    import dataclasses
    import importlib

    import numpy as np

    sys.path.insert(0, HERE)
    from nnparity.backends.base import RunOptions
    from nnparity.backends.registry import get_backend, load_adapter
    from nnparity.datasets import load_dataset
    from nnparity.harness.schedule import batch_plan, dropout_masks
    from nnparity.models import get_spec

    backend = args.child
    spec = get_spec("mnist-cnn").replace(dtype="float32").validate()
    total = args.warmup + args.blocks * args.steps
    data = load_dataset(spec.dataset, spec.dataset_options)
    plan = batch_plan(dataclasses.replace(spec.schedule, steps=total), len(data.x_train))
    canonical = []
    for step, index in enumerate(plan):
        x = np.ascontiguousarray(data.x_train[index], dtype=np.float32)
        canonical.append((x, data.y_train[index].astype(np.int64), dropout_masks(spec, step, len(index), "float32")))

    started = time.perf_counter()
    info = get_backend(backend)
    adapter = load_adapter(info)(
        spec, RunOptions(dtype="float32", device="cpu", threads=args.threads, dropout_mode="exact",
                         variant=info.variant),
    )
    adapter.build(spec.initial_params())
    adapter.sync()
    adapter_build_s = time.perf_counter() - started

    module_name, options = IDIOMATIC[backend]
    started = time.perf_counter()
    loop = importlib.import_module(f"idiomatic.{module_name}").build(spec.initial_params(), args.threads, **options)
    idiomatic_build_s = time.perf_counter() - started
    native = []
    for x, y, masks in canonical:
        if loop.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        native.append((x, y, masks[0]))

    sides = {
        "adapter": (adapter.train_step, adapter.sync, adapter.to_float, canonical),
        "idiomatic": (loop.step, loop.sync, loop.to_float, native),
    }
    times = {name: [] for name in sides}
    warmup_losses, first_step_s = {}, {}
    for name, (step, sync, to_float, batches) in sides.items():
        warm_times, losses = timed_steps(step, sync, batches, 0, args.warmup)
        first_step_s[name] = warm_times[0]
        warmup_losses[name] = [to_float(loss) for loss in losses]

    for block in range(args.blocks):
        order = list(sides) if block % 2 == 0 else list(reversed(sides))
        for name in order:
            step, sync, _, batches = sides[name]
            block_times, _ = timed_steps(step, sync, batches, args.warmup + block * args.steps, args.steps)
            times[name].extend(block_times)

    checked = min(LOSS_CHECK_STEPS, args.warmup)
    a, b = np.array(warmup_losses["adapter"][:checked]), np.array(warmup_losses["idiomatic"][:checked])
    difference = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), np.abs(b)))) if checked else float("nan")
    adapter_stats, idiomatic_stats = summarize(times["adapter"]), summarize(times["idiomatic"])
    result = {
        "backend": backend, "status": "ok",
        "ratio": adapter_stats["median_s"] / idiomatic_stats["median_s"],
        "adapter": {**adapter_stats, "build_s": adapter_build_s, "first_step_s": first_step_s["adapter"],
                    "describe": adapter.describe()},
        "idiomatic": {**idiomatic_stats, "build_s": idiomatic_build_s, "first_step_s": first_step_s["idiomatic"],
                      "module": f"benchmarks/idiomatic/{module_name}.py", "options": options},
        "warmup_losses": warmup_losses,
        "loss_max_relative_difference": difference,
        "loss_checked_steps": checked,
    }
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(result, handle, default=str)
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", help="comma-separated backends (default: every available default backend "
                        f"except {' and '.join(EXCLUDED_BY_DEFAULT)})")
    parser.add_argument("--threads", type=int, default=2, help="threads per framework (default 2)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block and side (default 20)")
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks per side (default 5)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps per side (default 10)")
    parser.add_argument("--out", help="write every step time and setting to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("threads", "steps", "blocks"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 1:
        parser.error(f"--warmup must be at least 1 (the first step compiles), got {args.warmup}")
    return args


if __name__ == "__main__":
    parsed = parse_args()
    sys.exit(child_main(parsed) if parsed.child else parent_main(parsed))
