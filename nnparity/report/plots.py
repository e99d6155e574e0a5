"""PNG plots for the report: loss curves, step times, accuracy against training time, decision boundaries.

Matplotlib runs with the Agg backend (no display). Each plot function
returns the file names it wrote, relative to the output directory.
"""

from __future__ import annotations

import logging
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from nnparity.harness.results import RunRecord  # noqa: E402
from nnparity.report import tables  # noqa: E402

log = logging.getLogger("nnparity")


def backend_colors(records: list[RunRecord]) -> dict[str, tuple]:
    """Map each backend to one colour, the same in every plot of a report.

    Registered backends come first in registry order, so a backend keeps its
    colour across reports of different suites; others follow by name.
    """
    from nnparity.backends.registry import all_backends

    present = {r.backend for r in records}
    order = [name for name in all_backends() if name in present]
    order += sorted(present - set(order))
    return {name: plt.cm.tab10(index % 10) for index, name in enumerate(order)}


# A second dtype or repeat of the same backend keeps its colour and changes the line style.
DTYPE_LINESTYLES = {"float32": "-", "float64": "--"}


def run_label(record: RunRecord) -> str:
    label = f"{record.backend} {record.dtype}"
    return f"{label} #{record.repeat}" if record.repeat else label


def _save(figure, out_dir: str, name: str) -> str:
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(figure)
    return name


def loss_curves(out_dir: str, model: str, records: list[RunRecord]) -> list[str]:
    """Plot the loss curves of every run of ``model`` and, below them, each run's relative difference to NumPy."""
    runs = [r for r in records if r.model == model and r.loss_curve.get("steps")]
    if not runs:
        return []
    compared = [(r, tables.find_reference(r, records)) for r in runs if r.backend != tables.REFERENCE_BACKEND]
    compared = [(r, ref) for r, ref in compared if ref is not None]
    panels = 2 if compared else 1
    figure, axes = plt.subplots(panels, 1, figsize=(7, 3.2 * panels + 0.6), squeeze=False, sharex=True)

    axis = axes[0, 0]
    positive = True
    palette = backend_colors(records)
    colors = {}
    for record in runs:
        colors[record.run_id] = palette[record.backend]
        axis.plot(record.loss_curve["steps"], record.loss_curve["loss"], label=run_label(record), linewidth=1,
                  color=colors[record.run_id], linestyle=DTYPE_LINESTYLES.get(record.dtype, ":"))
        positive &= all(v > 0 for v in record.loss_curve["loss"] if v == v)
    if positive:
        axis.set_yscale("log")
    axis.set(ylabel="training loss per sample", title=f"{model}: loss curves")
    axis.legend(fontsize="small")

    if compared:
        axis = axes[1, 0]
        for record, reference in compared:
            steps, differences = relative_differences(record.loss_curve, reference.loss_curve)
            # The floor keeps exact agreement (difference 0) visible on the log axis.
            axis.plot(steps, np.maximum(differences, 1e-17), color=colors[record.run_id], linewidth=1,
                      linestyle=DTYPE_LINESTYLES.get(record.dtype, ":"))
        axis.set_yscale("log")
        axis.set(ylabel="relative difference to numpy")
    axes[-1, 0].set_xlabel("step")
    return [_save(figure, out_dir, f"loss_curves_{model}.png")]


def relative_differences(curve: dict, reference: dict) -> tuple[list[int], np.ndarray]:
    """Per shared step, ``|a - b| / max(|a|, |b|)`` between a loss curve and the reference curve."""
    theirs = dict(zip(reference["steps"], reference["loss"]))
    steps = [s for s in curve["steps"] if s in theirs]
    ours = dict(zip(curve["steps"], curve["loss"]))
    a = np.array([ours[s] for s in steps], dtype=np.float64)
    b = np.array([theirs[s] for s in steps], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return steps, np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-12)


def step_times(out_dir: str, records: list[RunRecord]) -> list[str]:
    models = [m for m in tables.models_in_order(records)
              if any(r.model == m and r.timings.get("step_samples") for r in records)]
    if not models:
        return []
    figure, axes = plt.subplots(len(models), 1, figsize=(7, 1.2 + 1.6 * len(models)), squeeze=False)
    palette = backend_colors(records)
    for axis, model in zip(axes[:, 0], models):
        runs = [r for r in records if r.model == model and r.timings.get("step_samples")]
        samples = [[s * 1e3 for s in r.timings["step_samples"]] for r in runs]
        boxes = axis.boxplot(samples, orientation="horizontal", showfliers=False, patch_artist=True)
        for box, record in zip(boxes["boxes"], runs):
            box.set_facecolor(palette[record.backend])
            box.set_alpha(0.6)
        axis.set_yticks(range(1, len(runs) + 1), [run_label(r) for r in runs], fontsize="small")
        axis.set_xscale("log")
        axis.set(xlabel="step time (ms)", title=model)
    return [_save(figure, out_dir, "step_time.png")]


def accuracy_vs_time(out_dir: str, records: list[RunRecord]) -> list[str]:
    """Plot test accuracy against training time, a panel per model, a colour per backend and a marker per dtype."""
    runs = [r for r in records if r.test_accuracy is not None and r.timings.get("train_total_s")]
    if not runs:
        return []
    models = tables.models_in_order(runs)
    columns = min(3, len(models))
    rows = -(-len(models) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    colors = backend_colors(records)
    markers = {"float32": "o", "float64": "s"}

    for axis, model in zip(axes.flat, models):
        for record in (r for r in runs if r.model == model):
            axis.scatter(record.timings["train_total_s"], record.test_accuracy, color=colors[record.backend],
                         marker=markers.get(record.dtype, "^"), label=f"{record.backend} {record.dtype}")
        axis.set_xscale("log")
        axis.set(xlabel="training time (s)", ylabel="test accuracy", title=model)
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        axis.legend(unique.values(), unique.keys(), fontsize="x-small")
    for axis in list(axes.flat)[len(models):]:
        axis.set_visible(False)
    return [_save(figure, out_dir, "accuracy_vs_time.png")]


def write_plots(out_dir: str, records: list[RunRecord]) -> dict[str, list[str]]:
    """Write every plot; return file names by section (a model name, or ``"suite"``)."""
    from nnparity.report.boundary import decision_boundaries

    sections: dict[str, list[str]] = {}
    for model in tables.models_in_order(records):
        sections[model] = loss_curves(out_dir, model, records)
    for model, name in decision_boundaries(out_dir, records).items():
        sections.setdefault(model, []).append(name)
    sections["suite"] = step_times(out_dir, records) + accuracy_vs_time(out_dir, records)
    return sections
