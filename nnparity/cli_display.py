"""Console output of the ``nnparity`` command: progress bars and the results table."""

from __future__ import annotations


class ProgressDisplay:
    """Two tqdm bars: runs of the suite, and steps of the current run."""

    def __init__(self, count: int, enabled: bool = True):
        self.count, self.enabled = count, enabled
        self.runs = self.steps = None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.tqdm = tqdm
            self.runs = tqdm(total=self.count, desc="runs", unit="run", position=0)
        return self

    def handle(self, event) -> None:
        if not self.enabled:
            return
        if event.kind == "start":
            self.runs.set_postfix_str(event.job.run_id.rsplit(".", 1)[0])
            self.steps = self.tqdm(total=0, desc="train", unit="step", position=1, leave=False)
        elif event.kind == "progress" and self.steps is not None:
            if event.phase != self.steps.desc:
                # Evaluation counts samples, not steps: restart the bar under its own label.
                self.steps.reset(total=event.total)
                self.steps.set_description_str(event.phase)
                self.steps.unit = "sample" if event.phase == "eval" else "step"
            self.steps.total = event.total
            self.steps.update(event.step - self.steps.n)
        elif event.kind == "end":
            if self.steps is not None:
                self.steps.close()
                self.steps = None
            self.runs.update(1)

    def __exit__(self, *exc):
        for bar in (self.steps, self.runs):
            if bar is not None:
                bar.close()
        return False


def print_results(records, verification=None) -> None:
    """Print a short table per model, with the verification column when the directory has a verification."""
    from nnparity.report import tables

    columns = ("backend", "dtype", "status", "test acc", "final loss", "step median [q1-q3]", "train total",
               "max rel. loss diff vs numpy")
    if verification is not None and verification.documents:
        columns += ("verification",)
    picks = [tables.COLUMNS.index(c) for c in columns]
    for model in tables.models_in_order(records):
        rows = [[row[i] for i in picks] for row in tables.model_rows(model, records, verification)]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        print(f"\n{model}")
        print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for row in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    for record in tables.problem_runs(records):
        print(f"{record.status}: {record.run_id}: {tables.short_reason(record.reason)}")
    warning = tables.load_warning(records)
    if warning:
        print(warning)


class FetchProgress:
    """A byte progress bar for ``nnparity data fetch``, drawn only once the first bytes arrive.

    Creating the bar lazily keeps a download that fails before any data (a
    refused connection) from printing an empty ``0.00B`` bar around its error.
    """

    def __init__(self, name: str, enabled: bool = True):
        self.name, self.enabled = name, enabled
        self.bar = None

    def update(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.name, unit="B", unit_scale=True)
        if done < self.bar.n:  # the next file started
            self.bar.reset()
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
