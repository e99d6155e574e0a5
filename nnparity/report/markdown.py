"""``report.md``: the header, one table per model, the dropout mode and the failed and skipped runs."""

from __future__ import annotations

from nnparity.harness.results import RunRecord
from nnparity.report import tables
from nnparity.report.verification import EXPLANATION, Verification, header_lines as verification_lines


def header_lines(environment: dict, records: list[RunRecord]) -> list[tuple[str, str]]:
    """(label, value) pairs describing how and where the runs were made."""
    versions = {}
    for record in records:
        for name, version in (record.framework_versions or {}).items():
            versions.setdefault(name, version)
    gpu = environment.get("gpu", "none")
    return [
        ("Command", f"`{environment.get('command') or '(not recorded)'}`"),
        ("Date (UTC)", environment.get("timestamp_utc", "unknown")),
        ("Machine", f"{environment.get('cpu', 'unknown CPU')}, {environment.get('cpu_count', '?')} cores, "
                    f"host {environment.get('hostname', '?')}"),
        ("Threads per run", str(environment.get("threads_per_run", "?"))),
        ("GPU", gpu if isinstance(gpu, str) else "; ".join(gpu)),
        ("Python", f"{environment.get('python', '?')} on {environment.get('os', '?')}"),
        ("Versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "-"),
        ("nnparity", f"{environment.get('nnparity_version', '?')} (commit {environment.get('git_commit', 'unknown')})"),
    ]


def dropout_line(records: list[RunRecord]) -> str:
    modes = sorted({r.dropout_mode for r in records if r.backend != "scikit-learn"})
    if not modes:
        return "Dropout: no network runs."
    text = {
        "exact": "exact (the harness supplies every dropout mask, so all backends drop the same units)",
        "native": "native (each framework draws its own masks, so curves of models with dropout differ by design)",
    }
    return "Dropout mode: " + "; ".join(text.get(mode, mode) for mode in modes) + "."


def shortened_line(records: list[RunRecord]) -> str:
    """Name the models whose schedule ``--max-steps`` cut, with the steps that ran; empty when none."""
    steps = {}
    for record in records:
        if record.schedule_shortened and record.steps is not None:
            steps.setdefault(record.model, record.steps)
    if not steps:
        return ""
    listed = ", ".join(f"{model} {count} steps" for model, count in steps.items())
    return f"Shortened schedules (--max-steps), so accuracies are not the tutorial's: {listed}."


def markdown_table(columns, rows) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        # Cells can hold text from verify.json or an error message: no table breaks, no raw HTML.
        lines.append("| " + " | ".join(cell.replace("|", "/").replace("<", "&lt;") for cell in row) + " |")
    return lines


NO_RUNS = ("No runs: runs.jsonl in this directory contains no records, so there is nothing to compare. "
           "A suite interrupted before its first run ended leaves it so; run `nnparity run --out` with this "
           "directory to add runs.")


def render(records: list[RunRecord], environment: dict, plots: dict[str, list[str]] | None = None,
           verification: Verification | None = None) -> str:
    """Render the whole report as Markdown. ``plots`` maps a section (a model, or ``"suite"``) to PNG file names."""
    plots = plots or {}
    verification = verification or Verification()
    lines = ["# nnparity report", ""]
    if not records:
        # Without an environment file the header would be all placeholders, so it is left out.
        if environment:
            lines += [f"- **{label}:** {value}" for label, value in header_lines(environment, records)] + [""]
        return "\n".join(lines + [NO_RUNS, ""])
    lines += [f"- **{label}:** {value}" for label, value in header_lines(environment, records)]
    lines += ["", dropout_line(records), ""]
    if tables.load_warning(records):
        lines += [f"**{tables.load_warning(records)}**", ""]
    if shortened_line(records):
        lines += [shortened_line(records), ""]
    counts = {status: sum(r.status == status for r in records) for status in ("ok", "failed", "skipped")}
    lines += [f"Runs: {len(records)} ({counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped).", ""]
    lines += [
        "The parity column is the largest relative difference of the per-sample training loss to the NumPy run "
        "of the same model, dtype and dropout mode, over the steps both recorded. Float64 runs of a correct "
        "adapter agree to about 1e-12 or better while training is stable, and float32 runs drift after a few "
        "steps, so judge those by their first steps and final accuracy. Where the difference passes "
        f"{tables.DIVERGENCE_THRESHOLDS['float64']:g} (float64) or {tables.DIVERGENCE_THRESHOLDS['float32']:g} "
        "(float32), the cell names the first step that did: an unstable phase of training (an oscillating "
        "loss) amplifies rounding differences, and an adapter error shows from step 0 or 1.", "",
        EXPLANATION, "",
    ]
    lines += [f"- {line}" for line in verification_lines(verification)] + [""]

    for model in tables.models_in_order(records):
        lines += [f"## {model}", ""]
        lines += markdown_table(tables.COLUMNS, tables.model_rows(model, records, verification))
        lines.append("")
        lines += [f"![{name}]({name})" for name in plots.get(model, [])]
        if plots.get(model):
            lines.append("")

    if plots.get("suite"):
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots["suite"]] + [""]

    problems = tables.problem_runs(records)
    lines += ["## Failed and skipped runs", ""]
    if not problems:
        lines.append("None.")
    for record in problems:
        lines.append(f"- `{record.run_id}` **{record.status}**: {tables.short_reason(record.reason)}")
    lines.append("")
    return "\n".join(lines)
