"""Comparing two result directories, in the manner of ``asv compare``.

Each (model, backend, dtype) found in either directory gets the ratio
new/old of the median step time (over repeats, the median of their medians)
and the change in test accuracy. Its mark is ``+`` when faster by more than
the threshold or newly working, ``-`` when slower by more than the threshold,
``!`` when newly failed, and blank otherwise. An accuracy change between runs
of different lengths (``--max-steps``, ``--schedule``) names both step
counts, because it then measures the schedule as much as the backend.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from nnparity.harness.results import RunRecord, read_records
from nnparity.report.tables import fmt_ms


@dataclass
class Comparison:
    model: str
    backend: str
    dtype: str
    old_step_s: float | None
    new_step_s: float | None
    ratio: float | None
    old_accuracy: float | None
    new_accuracy: float | None
    old_status: str
    new_status: str
    mark: str
    old_steps: int | None = None
    new_steps: int | None = None


def _summarise(records: list[RunRecord]) -> dict[tuple, dict]:
    """Per key: the median step time and mean test accuracy of the ok runs, and an overall status."""
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.model, record.backend, record.dtype), []).append(record)
    summary = {}
    for key, runs in groups.items():
        ok = [r for r in runs if r.status == "ok"]
        steps = [r.timings.get("step_median_s") for r in ok if r.timings.get("step_median_s") is not None]
        accuracies = [r.test_accuracy for r in ok if r.test_accuracy is not None]
        if ok:
            status = "ok"
        elif any(r.status == "failed" for r in runs):
            status = "failed"
        else:
            status = "skipped"
        summary[key] = {
            "steps": max((r.steps for r in ok if r.steps is not None), default=None),
            "step": statistics.median(steps) if steps else None,
            "accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
            "status": status,
        }
    return summary


def compare_records(old: list[RunRecord], new: list[RunRecord], threshold: float = 1.1) -> list[Comparison]:
    if threshold <= 1.0:
        raise ValueError(f"threshold must be above 1 (a ratio such as 1.1), got {threshold}")
    before, after = _summarise(old), _summarise(new)
    rows = []
    for key in list(before) + [k for k in after if k not in before]:
        absent = {"step": None, "accuracy": None, "status": "absent", "steps": None}
        a, b = before.get(key, absent), after.get(key, absent)
        ratio = b["step"] / a["step"] if a["step"] and b["step"] is not None else None
        if a["status"] == "ok" and b["status"] == "failed":
            mark = "!"
        elif a["status"] == "failed" and b["status"] == "ok":
            mark = "+"
        elif ratio is not None and ratio > threshold:
            mark = "-"
        elif ratio is not None and ratio < 1.0 / threshold:
            mark = "+"
        else:
            mark = " "
        rows.append(Comparison(*key, a["step"], b["step"], ratio, a["accuracy"], b["accuracy"],
                               a["status"], b["status"], mark, a["steps"], b["steps"]))
    return rows


def compare_dirs(old_dir: str, new_dir: str, threshold: float = 1.1) -> list[Comparison]:
    return compare_records(read_records(old_dir), read_records(new_dir), threshold)


def _accuracy_change(row: Comparison) -> str:
    if row.old_accuracy is None or row.new_accuracy is None:
        return "-"
    change = f"{row.new_accuracy - row.old_accuracy:+.4f}"
    if row.old_steps != row.new_steps:
        change += f" (steps {row.old_steps} -> {row.new_steps})"
    return change


def format_comparison(rows: list[Comparison]) -> str:
    header = ("mark", "old step", "new step", "ratio", "test acc change", "status old -> new", "model / backend / dtype")
    lines = []
    for row in rows:
        lines.append((
            row.mark, fmt_ms(row.old_step_s), fmt_ms(row.new_step_s),
            "-" if row.ratio is None else f"{row.ratio:.3f}", _accuracy_change(row),
            f"{row.old_status} -> {row.new_status}", f"{row.model} / {row.backend} / {row.dtype}",
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    text += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(text)
