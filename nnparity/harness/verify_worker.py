"""One backend's side of ``nnparity verify``: ``python -m nnparity.harness.verify_worker JOB_JSON``.

The parent writes the shared inputs (initial parameters and the batches of
the first k steps, all float64) to an ``.npz`` and a job JSON naming the
backend, dtype and files. The parent also sets the thread and backend
environment variables before this process starts, because most frameworks
read them once, at import.

This worker builds the adapter from the shared parameters and records, in
order: ``predict`` on the first batch, ``loss_and_grads`` on the first batch
with the step-0 dropout masks, k ``train_step`` losses and the final
parameters. Arrays go to the job's ``arrays`` file (``.npz``); the status
(``ok``, ``skipped`` or ``failed``) and the reason go to its ``result``
file (JSON). It imports only NumPy and nnparity's specs, backends and
harness modules, so it also runs in the legacy Theano environment.
"""

from __future__ import annotations

import json
import sys
import traceback


def _float64(value):
    import numpy as np

    return np.asarray(value, dtype=np.float64)


def compute(job: dict) -> tuple[dict, dict]:
    """Run the verification steps of ``job``; return (arrays, details)."""
    import numpy as np

    from nnparity.backends.base import RunOptions
    from nnparity.backends.registry import BackendInfo, load_adapter
    from nnparity.harness.schedule import dropout_masks
    from nnparity.specs import ModelSpec

    spec = ModelSpec.from_dict(job["spec"]).validate()
    dtype = job["dtype"]
    with np.load(job["inputs"]) as data:
        stored = {name: data[name] for name in data.files}
    params = {key[len("param/"):]: value for key, value in stored.items() if key.startswith("param/")}
    steps = int(job["steps"])
    batches = [(stored[f"x/{step}"], stored[f"y/{step}"]) for step in range(steps)]

    info = BackendInfo(job["backend"], job["adapter"])
    adapter_class = load_adapter(info)
    options = RunOptions(dtype=dtype, device=job.get("device", "cpu"), threads=int(job.get("threads", 1)),
                         dropout_mode="exact")
    adapter = adapter_class(spec, options)
    adapter.build(params)

    def cast(x):
        return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x

    x0, y0 = batches[0]
    arrays = {"logits": _float64(adapter.predict(cast(x0)))}

    # Step-0 masks serve both the gradient check and the first training step,
    # so loss@0 and the first point of the curve measure the same objective.
    loss, grads = adapter.loss_and_grads(cast(x0), cast(y0), dropout_masks(spec, 0, len(x0), dtype))
    arrays["loss0"] = _float64(loss)
    for key, value in grads.items():
        arrays[f"grad/{key}"] = _float64(value)

    curve = []
    for step, (x, y) in enumerate(batches):
        masks = dropout_masks(spec, step, len(x), dtype)
        curve.append(adapter.to_float(adapter.train_step(cast(x), cast(y), masks)))
    adapter.sync()
    arrays["curve"] = _float64(curve)
    for key, value in adapter.get_params().items():
        arrays[f"final/{key}"] = _float64(value)

    details = {"device_used": adapter.device_name(), "backend_settings": adapter.describe()}
    return arrays, details


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python -m nnparity.harness.verify_worker JOB_JSON\n")
        return 2
    with open(argv[0]) as handle:
        job = json.load(handle)

    result = {"status": "failed", "reason": ""}
    try:
        from nnparity.backends.base import BackendUnavailable, UnsupportedSpec

        try:
            arrays, details = compute(job)
        except (UnsupportedSpec, BackendUnavailable) as error:
            result.update(status="skipped", reason=f"{type(error).__name__}: {error}")
        else:
            import numpy as np

            np.savez(job["arrays"], **arrays)
            result.update(status="ok", **details)
    except Exception as error:  # recorded as a failed row; the parent goes on with the other backends
        tail = "".join(traceback.format_exc().splitlines(keepends=True)[-12:])
        result.update(reason=f"{type(error).__name__}: {error}", traceback=tail)

    with open(job["result"], "w") as handle:
        json.dump(result, handle, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
