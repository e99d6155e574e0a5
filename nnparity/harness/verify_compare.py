"""Comparison of one backend's verify outputs with the reference's, and the tolerances.

Each quantity is compared with the reference backend (``numpy``) by
``max |a - b| / max(|a|, |b|, floor)`` over its elements, where
``floor = SCALE_FLOOR * max(|reference|)`` over the whole tensor (at least
``ABS_FLOOR``). Without the floor, an element that cancels to almost zero,
such as a bias gradient summed over many positions, would turn a last-bit
rounding difference into a large relative one. With it, such an element is
compared against a thousandth of its tensor's scale instead of its own size.

Tolerances (``TOLERANCES``), by dtype, for step 0 (logits, loss@0,
gradients), the loss curve and the final parameters:

- float64: 1e-9, 1e-6, 1e-6. Backends that compute the same formulas
  differ only in summation order, a few ulp (about 1e-16) per operation. On
  the MNIST CNN, PyTorch, TensorFlow, JAX and NumPy agreed to 3e-14 on the
  loss over 200 Adam steps and to 5e-13 on the final parameters. Every real
  mistake measured so far was far above these bounds (a flatten in the wrong
  order: 8e-3 at step 0; a different Adam epsilon placement: 8e-7 at step
  1). The post-training bounds are looser because rounding differences grow
  with each update.
- float32: 1e-3, 1e-3, 1e-4, the last by norm (``FINAL_BY_NORM``):
  ``||a - b|| / ||reference||`` per parameter tensor. Measured with
  ``nnparity verify --dtype float32 --steps 10 --backends
  torch,jax,keras-torch,tensorflow`` on the four default models: step 0
  differed by up to 4.3e-4 (the MNIST CNN's gradients), the loss curve by up
  to 2.1e-6 and the final parameters, by norm, by up to 2.4e-6. Element by
  element, the float32 verification of keras-torch in ``nnparity run
  --verify`` found 0.14 on the MNIST CNN's final parameters. Adam divides
  each gradient element by its own running magnitude, so rounding noise in
  a near-zero float32 gradient becomes a whole learning-rate step. A float32
  verify is still a smoke test; check correctness in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALE_FLOOR = 1e-3
ABS_FLOOR = 1e-30
TOLERANCES = {
    "float64": {"step0": 1e-9, "curve": 1e-6, "final": 1e-6},
    "float32": {"step0": 1e-3, "curve": 1e-3, "final": 1e-4},
}
# Dtypes whose final parameters are compared by the norm of the difference per tensor, not element by element.
FINAL_BY_NORM = ("float32",)


@dataclass
class Row:
    """One line of the verify table: one quantity of one backend on one model."""

    model: str
    backend: str
    quantity: str
    max_rel: float | None = None
    max_abs: float | None = None
    tolerance: float | None = None
    status: str = "pass"
    message: str = ""


def _difference(reference, candidate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return both arrays as float64 and ``|reference - candidate|``; raise ValueError when the shapes differ."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shape {candidate.shape} differs from the reference's {reference.shape}")
    return reference, candidate, np.abs(reference - candidate)


def compare(reference, candidate) -> tuple[float, float]:
    """Return (max relative, max absolute) difference of two same-shaped arrays (see module docstring)."""
    reference, candidate, difference = _difference(reference, candidate)
    if reference.size == 0:
        return 0.0, 0.0
    floor = max(SCALE_FLOOR * float(np.max(np.abs(reference))), ABS_FLOOR)
    scale = np.maximum(np.maximum(np.abs(reference), np.abs(candidate)), floor)
    relative = np.atleast_1d(difference / scale)
    # NaN or inf in either array is a difference, not a silent pass.
    relative[~np.isfinite(relative)] = np.inf
    return float(np.max(relative)), float(np.max(difference))


def compare_backend(model: str, backend: str, reference: dict, candidate: dict, dtype: str,
                    param_keys: list[str], steps: int) -> list[Row]:
    """Rows for every quantity of ``candidate`` against ``reference``, with failure messages."""
    tolerance = TOLERANCES[dtype]
    rows = []

    def row(quantity, ref, cand, bound):
        try:
            rel, abs_ = compare(ref, cand)
        except ValueError as error:
            return Row(model, backend, quantity, None, None, bound, "FAIL", f"{quantity}: {error}")
        status = "pass" if rel <= bound else "FAIL"
        return Row(model, backend, quantity, rel, abs_, bound, status)

    rows.append(row("logits", reference["logits"], candidate["logits"], tolerance["step0"]))
    rows.append(row("loss@0", reference["loss0"], candidate["loss0"], tolerance["step0"]))
    for key in param_keys:
        name = f"grad/{key}"
        if name not in candidate:
            rows.append(Row(model, backend, f"grad:{key}", tolerance=tolerance["step0"], status="FAIL",
                            message=f"grad:{key} is missing from the backend's loss_and_grads output"))
            continue
        rows.append(row(f"grad:{key}", reference[name], candidate[name], tolerance["step0"]))
    rows.append(row("loss curve", reference["curve"], candidate["curve"], tolerance["curve"]))
    rows.append(_final_row(model, backend, reference, candidate, param_keys, tolerance["final"],
                           dtype in FINAL_BY_NORM))
    _explain(rows, reference, candidate, steps, dtype in FINAL_BY_NORM)
    return rows


def compare_norm(reference, candidate) -> tuple[float, float]:
    """Return (``||a - b|| / ||reference||``, max absolute difference) of two same-shaped arrays."""
    reference, _, difference = _difference(reference, candidate)
    if reference.size == 0:
        return 0.0, 0.0
    relative = float(np.linalg.norm(difference) / max(float(np.linalg.norm(reference)), ABS_FLOOR))
    return (relative if np.isfinite(relative) else float("inf")), float(np.max(difference))


def _final_row(model, backend, reference, candidate, param_keys, bound, by_norm=False) -> Row:
    worst = None
    for key in param_keys:
        name = f"final/{key}"
        if name not in candidate:
            return Row(model, backend, f"final:{key}", tolerance=bound, status="FAIL",
                       message=f"final:{key} is missing from the backend's get_params output")
        try:
            rel, abs_ = (compare_norm if by_norm else compare)(reference[name], candidate[name])
        except ValueError as error:
            return Row(model, backend, f"final:{key}", tolerance=bound, status="FAIL", message=f"final:{key}: {error}")
        if worst is None or rel > worst[1]:
            worst = (key, rel, abs_)
    if worst is None:
        return Row(model, backend, "final:(no parameters)", 0.0, 0.0, bound)
    key, rel, abs_ = worst
    return Row(model, backend, f"final:{key}", rel, abs_, bound, "pass" if rel <= bound else "FAIL")


def _explain(rows: list[Row], reference: dict, candidate: dict, steps: int, by_norm: bool = False) -> None:
    """Write a message on every failing row: what differs and where to look."""
    by_quantity = {r.quantity: r for r in rows}
    logits_differ = by_quantity["logits"].status == "FAIL"
    first_grad = next((r for r in rows if r.quantity.startswith("grad:") and r.status == "FAIL"), None)
    for r in rows:
        if r.status != "FAIL" or r.message:
            continue
        head = f"{r.quantity} differs by {r.max_rel:.1e} (tolerance {r.tolerance:.0e})"
        if r.quantity == "logits":
            where = f", first at {first_grad.quantity}" if first_grad else ""
            r.message = f"{head}: the forward pass differs before any update; the gradients differ too{where}"
        elif r.quantity == "loss@0":
            r.message = head + (": follows from the logits" if logits_differ else
                                ": the logits agree, so the loss or the L2 term differs")
        elif r is first_grad:
            r.message = f"{head}: first layer whose gradient differs"
        elif r.quantity.startswith("grad:"):
            r.message = f"{head}: gradient differs"
        elif r.quantity == "loss curve":
            r.message = f"{head}: {_first_divergent_step(reference['curve'], candidate['curve'], r.tolerance)}"
        elif r.quantity.startswith("final:"):
            r.message = f"{head}: worst parameter after {steps} steps" + (" (by norm per tensor)" if by_norm else "")


def _first_divergent_step(reference, candidate, bound) -> str:
    for step, (a, b) in enumerate(zip(np.asarray(reference), np.asarray(candidate))):
        rel, _ = compare(a, b)
        if rel > bound:
            return f"first differs at step {step} (loss {float(b):.17g}, reference {float(a):.17g})"
    return "differs in length"
