"""Run a few training steps of a backend from an ``.npz`` file and write the results to another.

Tests use it to drive the legacy-environment adapters from the main
environment: the parent writes the spec, the initial parameters and the
batches, runs this module with the legacy interpreter, and compares the
results with the NumPy reference in-process.

Input ``.npz``: ``spec`` (JSON), ``backend``, ``dtype``, ``dropout_mode``,
``steps``, ``param/<key>`` (canonical layout), ``x/<step>``, ``y/<step>`` and
``mask<j>/<step>`` per Dropout layer. Output ``.npz``: ``losses``,
``step_s``, ``param/<key>`` after training, ``grad_loss`` and ``grad/<key>``
(gradient on the first batch, before training), ``predict`` (first batch,
before training) and ``describe`` (JSON).

Usage: ``python -m nnparity.backends.theano_lasagne.driver IN.npz OUT.npz``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from nnparity.backends.base import RunOptions
from nnparity.backends.registry import get_backend, load_adapter
from nnparity.specs import ModelSpec


def write_job(path: str, spec: ModelSpec, backend: str, dtype: str, params: dict, batches: list,
              dropout_mode: str = "exact") -> None:
    """Write an input file; ``batches`` is a list of ``(x, y, masks or None)``."""
    arrays = {
        "spec": np.asarray(spec.to_json()), "backend": np.asarray(backend), "dtype": np.asarray(dtype),
        "dropout_mode": np.asarray(dropout_mode), "steps": np.asarray(len(batches)),
    }
    arrays.update({f"param/{key}": np.asarray(value) for key, value in params.items()})
    for i, (x, y, masks) in enumerate(batches):
        arrays[f"x/{i}"], arrays[f"y/{i}"] = np.asarray(x), np.asarray(y)
        for j, mask in enumerate(masks or []):
            arrays[f"mask{j}/{i}"] = np.asarray(mask)
    np.savez(path, **arrays)


def read_job(path: str) -> dict:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    steps = int(arrays["steps"])
    spec = ModelSpec.from_json(str(arrays["spec"])).validate()
    n_masks = len(spec.dropout_layers())
    return {
        "spec": spec,
        "backend": str(arrays["backend"]),
        "options": RunOptions(dtype=str(arrays["dtype"]), dropout_mode=str(arrays["dropout_mode"])),
        "params": {key[len("param/"):]: value for key, value in arrays.items() if key.startswith("param/")},
        "batches": [
            (arrays[f"x/{i}"], arrays[f"y/{i}"], [arrays[f"mask{j}/{i}"] for j in range(n_masks)] or None)
            for i in range(steps)
        ],
    }


def run_job(job: dict) -> dict[str, np.ndarray]:
    adapter_class = load_adapter(get_backend(job["backend"]))
    adapter = adapter_class(job["spec"], job["options"])
    adapter.build(job["params"])

    x0, y0, masks0 = job["batches"][0]
    grad_loss, grads = adapter.loss_and_grads(x0, y0, masks0)
    out = {"grad_loss": np.asarray(grad_loss), "predict": adapter.predict(x0)}
    out.update({f"grad/{key}": value for key, value in grads.items()})

    losses, step_s = [], []
    exact = job["options"].dropout_mode == "exact"
    for x, y, masks in job["batches"]:
        start = time.perf_counter()
        loss = adapter.train_step(x, y, masks if exact else None)
        losses.append(adapter.to_float(loss))
        step_s.append(time.perf_counter() - start)

    out.update({f"param/{key}": value for key, value in adapter.get_params().items()})
    out["losses"] = np.asarray(losses)
    out["step_s"] = np.asarray(step_s)
    out["describe"] = np.asarray(json.dumps(adapter.describe()))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run training steps of one backend from an .npz job file.")
    parser.add_argument("job", help="input .npz (spec, parameters, batches)")
    parser.add_argument("out", help="output .npz (losses, parameters, first-batch gradients)")
    args = parser.parse_args(argv)
    np.savez(args.out, **run_job(read_job(args.job)))


if __name__ == "__main__":
    main()
