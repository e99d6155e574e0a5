"""Reports written from ``runs.jsonl``: ``summary.csv``, ``report.md``, ``report.html`` and PNG plots."""

from __future__ import annotations

import json
import logging
import os

from nnparity.harness.results import RunRecord, read_records, write_summary

log = logging.getLogger("nnparity")

ENVIRONMENT_FILE = "environment.json"


def load_environment(out_dir: str, records: list[RunRecord]) -> dict:
    """Read the suite's environment: ``environment.json`` if present, else the first record's copy."""
    path = os.path.join(out_dir, ENVIRONMENT_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    return dict(records[0].environment) if records else {}


def write_report(out_dir: str, plots: bool = True, records: list[RunRecord] | None = None) -> dict[str, str]:
    """Regenerate every report file in ``out_dir`` from its ``runs.jsonl``; return their paths by kind.

    ``records`` saves reading ``runs.jsonl`` again where the caller already has them.
    """
    from nnparity.report import html, markdown, verification as verified

    if records is None:
        records = read_records(out_dir)
    environment = load_environment(out_dir, records)
    verification = verified.load(out_dir)
    cells = {r.run_id: {"verification": verified.verification_cell(r, verification)} for r in records}
    written = {"summary": write_summary(out_dir, records, cells)}

    figures: dict[str, list[str]] = {}
    if plots and records:
        from nnparity.report import plots as plotting

        try:
            figures = plotting.write_plots(out_dir, records)
        except Exception as error:  # a plotting bug must not cost the tables
            log.warning("plots were not written: %s: %s", type(error).__name__, error)

    written["markdown"] = _write(out_dir, "report.md", markdown.render(records, environment, figures, verification))
    written["html"] = _write(out_dir, "report.html",
                             html.render(records, environment, figures, out_dir, verification))
    return written


def _write(out_dir: str, name: str, text: str) -> str:
    path = os.path.join(out_dir, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path
