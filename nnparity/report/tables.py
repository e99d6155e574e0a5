"""Report tables: per-model rows of formatted numbers, and the parity column against NumPy.

The parity column compares loss curves step by step: for each run, the
largest relative difference to the NumPy run of the same model, dtype and
dropout mode over the steps both recorded. NumPy is the reference, so its own
row reads ``ref``; without a NumPy run the column reads ``-``.
"""

from __future__ import annotations

import math

import numpy as np

from nnparity.harness.results import RunRecord
from nnparity.report.verification import Verification, verification_cell

REFERENCE_BACKEND = "numpy"
# Beyond these relative differences the parity cell also names the first step that exceeded them. Correct
# float64 adapters agree to about 1e-14 while the dynamics are stable; float32 ones drift after a few steps.
DIVERGENCE_THRESHOLDS = {"float64": 1e-9, "float32": 1e-4}
COLUMNS = (
    "backend", "device used", "dtype", "status", "train acc", "test acc", "final loss", "build",
    "first step (compile)", "step median [q1-q3]", "train total", "samples/s", "peak memory", "max rel. loss diff vs numpy",
    "verification",
)


def fmt_number(value, unit: str = "") -> str:
    """Four significant digits, or ``-`` for a missing or non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None else str(value)
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def fmt_ms(seconds) -> str:
    return "-" if seconds is None else fmt_number(seconds * 1e3, "ms")


def fmt_s(seconds) -> str:
    return fmt_number(seconds, "s")


def fmt_step(timings: dict) -> str:
    median = timings.get("step_median_s")
    if median is None:
        return "-"
    q1, q3 = timings.get("step_q1_s"), timings.get("step_q3_s")
    return f"{median * 1e3:.4g} ms [{q1 * 1e3:.4g}-{q3 * 1e3:.4g}]"


def fmt_memory(record: RunRecord) -> str:
    host = fmt_number(record.peak_memory_mb, "MB")
    if record.peak_device_memory_mb is None:
        return host
    return f"{host} (device {fmt_number(record.peak_device_memory_mb, 'MB')})"


def _shared_losses(curve: dict, reference: dict):
    ours = dict(zip(curve.get("steps", []), curve.get("loss", [])))
    theirs = dict(zip(reference.get("steps", []), reference.get("loss", [])))
    shared = sorted(set(ours) & set(theirs))
    a = np.array([ours[s] for s in shared], dtype=np.float64)
    b = np.array([theirs[s] for s in shared], dtype=np.float64)
    return shared, a, b


def first_divergence(curve: dict, reference: dict, threshold: float, floor: float = 1e-12) -> int | None:
    """Return the first shared step whose relative difference exceeds ``threshold`` (or is not finite)."""
    steps, a, b = _shared_losses(curve, reference)
    with np.errstate(invalid="ignore"):
        differences = np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    beyond = ~(differences <= threshold)
    return steps[int(np.argmax(beyond))] if beyond.any() else None


def curve_difference(curve: dict, reference: dict, floor: float = 1e-12) -> float | None:
    """Largest ``|a - b| / max(|a|, |b|, floor)`` over the steps both curves recorded; None if none shared."""
    shared, a, b = _shared_losses(curve, reference)
    if not shared:
        return None
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        # One run diverged where the other did not (or both did): no parity to quote.
        return float("nan")
    return float(np.max(np.abs(a - b) / scale))


def find_reference(record: RunRecord, records: list[RunRecord]) -> RunRecord | None:
    """Find the NumPy run matching ``record``'s model, dtype and dropout mode; the same repeat when there is one."""
    candidates = [
        r for r in records
        if r.backend == REFERENCE_BACKEND and r.model == record.model and r.dtype == record.dtype
        and r.dropout_mode == record.dropout_mode and r.loss_curve.get("steps")
    ]
    same_repeat = [r for r in candidates if r.repeat == record.repeat]
    return (same_repeat or candidates or [None])[0]


def parity_cell(record: RunRecord, records: list[RunRecord]) -> str:
    if record.backend == REFERENCE_BACKEND:
        return "ref"
    reference = find_reference(record, records)
    if reference is None or not record.loss_curve.get("steps"):
        return "-"
    difference = curve_difference(record.loss_curve, reference.loss_curve)
    if difference is None:
        return "-"
    threshold = DIVERGENCE_THRESHOLDS.get(record.dtype)
    if threshold is None or difference <= threshold:
        return f"{difference:.3g}"
    step = first_divergence(record.loss_curve, reference.loss_curve, threshold)
    return f"{difference:.3g} (> {threshold:g} from step {step})"


def backend_label(record: RunRecord, repeated: bool) -> str:
    label = record.backend
    if record.variant and record.variant not in label:
        label += f" ({record.variant})"
    return f"{label} #{record.repeat}" if repeated else label


def model_rows(model: str, records: list[RunRecord], verification: Verification | None = None) -> list[list[str]]:
    """Format the rows of one model's table, in record order; ``verification`` fills the last column."""
    mine = [r for r in records if r.model == model]
    repeated = any(r.repeat > 0 for r in mine)
    rows = []
    for record in mine:
        timings = record.timings or {}
        rows.append([
            backend_label(record, repeated),
            record.device_used or record.device,
            record.dtype,
            record.status,
            fmt_number(record.train_accuracy),
            fmt_number(record.test_accuracy),
            fmt_number(record.final_loss),
            # Graph compilers that compile while building (PyTensor's C linker) show it here, the
            # others on their first step.
            fmt_s(timings.get("build_s")),
            fmt_s(timings.get("first_step_s")),
            fmt_step(timings),
            fmt_s(timings.get("train_total_s")),
            fmt_number(timings.get("samples_per_s")),
            fmt_memory(record),
            parity_cell(record, records),
            verification_cell(record, verification),
        ])
    return rows


def models_in_order(records: list[RunRecord]) -> list[str]:
    seen: list[str] = []
    for record in records:
        if record.model not in seen:
            seen.append(record.model)
    return seen


def problem_runs(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.status != "ok"]


def short_reason(reason: str, limit: int = 300) -> str:
    """Return the reason's first line, cut to ``limit`` characters (a failure's traceback follows that line)."""
    first = (reason or "").strip().splitlines()[0] if reason and reason.strip() else "(no reason recorded)"
    return first if len(first) <= limit else first[:limit - 3] + "..."


# Cores that other processes may use, on average, beyond those a run's threads left free, before the
# report warns that they competed with the run.
OTHER_CPU_MARGIN = 0.25


def contended_runs(records: list[RunRecord]) -> list[RunRecord]:
    """Return the runs whose CPU other processes took a share of.

    Records that measured ``other_cpu_cores`` (the cores other processes used
    during the run) are judged by it. Older records only have the 1-minute load
    average at the start, which also counts the suite's own previous run.
    """
    contended = []
    for record in records:
        environment = record.environment or {}
        cores = environment.get("cpu_count")
        if record.status != "ok" or not cores:
            continue
        spare = max(cores - record.threads, 0)
        other = environment.get("other_cpu_cores")
        load = environment.get("load_average_1m")
        if other is not None:
            if other > spare + OTHER_CPU_MARGIN:
                contended.append(record)
        elif load is not None and load > cores - record.threads:
            contended.append(record)
    return contended


def load_warning(records: list[RunRecord]) -> str:
    """Warn that step times may be inflated when runs shared the CPU; empty when none did."""
    contended = contended_runs(records)
    if not contended:
        return ""
    measured = [r for r in contended if r.environment.get("other_cpu_cores") is not None]
    if measured:
        worst = max(measured, key=lambda r: r.environment["other_cpu_cores"])
        cores, threads = worst.environment["cpu_count"], worst.threads
        return (
            f"Warning: during {len(measured)} of {sum(r.status == 'ok' for r in records)} runs, other processes "
            f"used on average up to {worst.environment['other_cpu_cores']:g} cores while the run's threads left "
            f"{max(cores - threads, 0)} free ({cores} cores - {threads} threads), so they competed for the CPU and "
            "those runs' timings may be inflated. Rerun them on a quiet machine, or with fewer --threads."
        )
    worst = max(contended, key=lambda r: r.environment["load_average_1m"])
    cores, threads = worst.environment["cpu_count"], worst.threads
    return (
        f"Warning: {len(contended)} of {sum(r.status == 'ok' for r in records)} runs started while the 1-minute "
        f"load average (up to {worst.environment['load_average_1m']:g}) was above the cores their threads left "
        f"free ({cores} cores - {threads} threads), so other processes competed for the CPU and their timings "
        "may be inflated. Rerun them on a quiet machine, or with fewer --threads."
    )
