"""``report.html``: the Markdown report's content as one self-contained page, plots embedded as data URIs."""

from __future__ import annotations

import base64
import html
import os

from nnparity.harness.results import RunRecord
from nnparity.report import tables
from nnparity.report.markdown import NO_RUNS, dropout_line, header_lines, shortened_line
from nnparity.report.verification import EXPLANATION, Verification, header_lines as verification_lines

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
tr.failed td { background: #fde2e2; }
tr.skipped td { color: #888; }
img { max-width: 100%; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
p.warning { background: #fff3cd; padding: 0.5em; }
"""


def embed_png(out_dir: str, name: str) -> str:
    with open(os.path.join(out_dir, name), "rb") as handle:
        data = base64.b64encode(handle.read()).decode("ascii")
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def table_html(records: list[RunRecord], model: str, verification: Verification | None = None) -> str:
    mine = [r for r in records if r.model == model]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in tables.COLUMNS)
    body = []
    for record, row in zip(mine, tables.model_rows(model, records, verification)):
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        body.append(f'<tr class="{record.status}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render(records: list[RunRecord], environment: dict, plots: dict[str, list[str]], out_dir: str,
           verification: Verification | None = None) -> str:
    verification = verification or Verification()
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>nnparity report</title>",
             f"<style>{STYLE}</style></head><body>", "<h1>nnparity report</h1>", "<ul>"]
    for label, value in header_lines(environment, records) if records or environment else []:
        parts.append(f"<li><b>{html.escape(label)}:</b> {html.escape(value.strip('`'))}</li>")
    if not records:
        parts += ["</ul>", f"<p>{html.escape(NO_RUNS)}</p>", "</body></html>"]
        return "\n".join(parts)
    parts += ["</ul>", f"<p>{html.escape(dropout_line(records))}</p>"]
    if tables.load_warning(records):
        parts.append(f'<p class="warning"><b>{html.escape(tables.load_warning(records))}</b></p>')
    if shortened_line(records):
        parts.append(f"<p>{html.escape(shortened_line(records))}</p>")
    parts.append(
        "<p>The last column is the largest relative difference of the per-sample training loss to the NumPy "
        "run of the same model, dtype and dropout mode, over the steps both recorded.</p>"
    )
    parts.append(f"<p>{html.escape(EXPLANATION)}</p><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in verification_lines(verification)]
    parts.append("</ul>")

    for model in tables.models_in_order(records):
        parts += [f"<h2>{html.escape(model)}</h2>", table_html(records, model, verification)]
        parts += [embed_png(out_dir, name) for name in plots.get(model, [])]

    if plots.get("suite"):
        parts.append("<h2>Plots</h2>")
        parts += [embed_png(out_dir, name) for name in plots["suite"]]

    parts.append("<h2>Failed and skipped runs</h2>")
    problems = tables.problem_runs(records)
    if not problems:
        parts.append("<p>None.</p>")
    else:
        parts.append("<ul>")
        for record in problems:
            parts.append(
                f"<li><code>{html.escape(record.run_id)}</code> <b>{record.status}</b>: "
                f"<pre>{html.escape(record.reason.strip())}</pre></li>"
            )
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
