"""The verification column: how each run's model and backend fared in ``nnparity verify``.

``verify.json`` in a results directory is written by ``nnparity run --verify``
or by ``nnparity verify --out DIR``. It contains the newest verification at its
top level and, under ``earlier``, older ones that cover a model, backend or
dtype the newest does not.

A verification only counts for a run made from the same computation and the
same framework version. The run's ``step_hash`` (``ModelSpec.step_hash``: the
spec without dtype and schedule length) must equal the verified one, and the
backend's framework versions must match. Otherwise the cell reads ``other spec
verified`` or ``other version verified``.

Of the newest matching verification in each dtype, the cell shows the most
telling outcome and names its dtype. A FAIL or an error comes first, then a
float64 pass (the strict check), then a float32 pass, then a skip.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger("nnparity")

VERIFY_FILE = "verify.json"
REFERENCE_BACKEND = "numpy"
NOT_VERIFIED = "not verified"
# Earlier verifications kept in verify.json besides the newest; older ones are dropped.
MAX_EARLIER = 20
QUANTITY_NAMES = {"step0": "step 0", "curve": "loss curve", "final": "final parameters"}


@dataclass
class Verification:
    """The verifications recorded in one results directory, newest first."""

    documents: list[dict] = field(default_factory=list)
    problem: str = ""

    def find(self, model: str, backend: str) -> list[tuple[dict, list[dict]]]:
        """Return (document, rows) of every verification of ``model`` on ``backend``, newest first."""
        found = []
        for document in self.documents:
            rows = [r for r in document["rows"] if r.get("model") == model and r.get("backend") == backend]
            if rows:
                found.append((document, rows))
        return found


def load(out_dir: str, warn: bool = True) -> Verification:
    """Read ``<out_dir>/verify.json``; an absent file gives no documents, an unreadable one a ``problem``.

    ``warn`` logs a warning about an unreadable file; a second read of the same file passes False.
    """
    path = os.path.join(out_dir, VERIFY_FILE)
    if not os.path.exists(path):
        return Verification()
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
            raise ValueError("it contains no list of rows")
    except (OSError, ValueError) as error:
        if warn:
            log.warning("%s was not read, so the report shows no verification: %s", path, error)
        return Verification(problem=f"{path} could not be read ({error}); rerun `nnparity verify --out {out_dir}`")
    earlier = document.pop("earlier", [])
    documents, problems = [], []
    for position, item in enumerate([document, *(earlier if isinstance(earlier, list) else [])]):
        where = "the newest verification" if position == 0 else f"earlier verification {position}"
        problem = _shape_problem(item)
        if problem:
            problems.append(f"{where} {problem}")
        else:
            documents.append(_clean(item))
    if problems:
        # A damaged file speaks for none of the runs, since the part left out may be the one that failed.
        message = f"{path} is damaged: {'; '.join(problems)}; rerun `nnparity verify --out {out_dir}`"
        if warn:
            log.warning("%s", message)
        return Verification(problem=message)
    return Verification(documents)


def _shape_problem(document) -> str:
    """Return why a verification in ``verify.json`` cannot be used, or an empty string when it can."""
    if not isinstance(document, dict):
        return "is not an object"
    if not isinstance(document.get("rows"), list) or not all(isinstance(r, dict) for r in document["rows"]):
        return "has rows that are not a list of objects"
    if document.get("dtype") not in ("float32", "float64"):
        return f"has dtype {document.get('dtype')!r}, not float32 or float64"
    if not isinstance(document.get("models"), dict) or not isinstance(document.get("backends"), dict):
        return "has no models and backends to match runs against"
    return ""


def _clean(document: dict) -> dict:
    """Return a copy of ``document`` whose tolerances are only numbers, so the header can format them."""
    tolerances = document.get("tolerances")
    tolerances = tolerances if isinstance(tolerances, dict) else {}
    return {**document, "tolerances": {k: v for k, v in tolerances.items() if isinstance(v, (int, float))}}


def merge(new: dict, out_dir: str) -> dict:
    """Return ``new`` with the verifications already in ``out_dir`` that it does not replace under ``earlier``.

    The new verification replaces an earlier one only when it covers every
    (model, backend, dtype) the earlier one covered. Verifying one model
    after another in the same directory therefore loses none of them.
    """
    covered = _coverage(new)
    uncovered = [d for d in load(out_dir).documents if not _coverage(d) <= covered]
    return {**new, "earlier": uncovered[:MAX_EARLIER]}


def _coverage(document: dict) -> set[tuple[str, str, str]]:
    return {(r.get("model"), r.get("backend"), document.get("dtype")) for r in document.get("rows", [])}


def verification_cell(record, verification: Verification | None) -> str:
    """Return the verification cell of one run: the outcome, with the dtype it was verified in."""
    if record.spec_hash.startswith("baseline-"):
        return "-"
    if record.backend == REFERENCE_BACKEND:
        return "reference"
    if verification is not None and verification.problem:
        return "unknown: verify.json unreadable"
    found = verification.find(record.model, record.backend) if verification is not None else []
    if not found:
        return NOT_VERIFIED
    # The newest verification in each dtype that speaks for this run (same spec, same versions).
    applicable, dtypes = [], set()
    for document, rows in found:
        if not _mismatch(record, document) and document["dtype"] not in dtypes:
            dtypes.add(document["dtype"])
            applicable.append((document, rows))
    if not applicable:
        return _mismatch(record, found[0][0])
    document, rows = min(applicable, key=lambda item: _rank(outcome(item[1]), item[0].get("dtype")))
    where = document.get("dtype", "?")
    if document.get("device", "cpu") != record.device:
        where += f" on {document.get('device', 'cpu')}"
    return f"{outcome(rows)} ({where})"


def _rank(text: str, dtype) -> int:
    """Order outcomes from the most to the least telling: FAIL, error, float64 pass, float32 pass, skipped."""
    if text.startswith("FAIL"):
        return 0
    if text == "pass":
        return 2 if dtype == "float64" else 3
    return 4 if text.startswith("skipped") else 1


def outcome(rows: list[dict]) -> str:
    """Summarise one (model, backend)'s verify rows: pass, FAIL <worst quantity>, error or skipped."""
    for status, label in (("failed", "error"), ("skipped", "skipped")):
        row = next((r for r in rows if r.get("status") == status), None)
        if row is not None:
            return f"{label}: {_first_line(row.get('message', ''), 60)}"
    failing = [r for r in rows if r.get("status") == "FAIL"]
    if failing:
        first = failing[0]
        if not isinstance(first.get("max_rel"), (int, float)):
            return f"FAIL {first.get('quantity')}: {_first_line(first.get('message', ''), 60)}"
        return f"FAIL {first.get('quantity')} ({_number(first.get('max_rel'))} > {_number(first.get('tolerance'))})"
    for row in rows:
        if row.get("status") != "pass":
            return f"error: unknown status {row.get('status')!r} in verify.json"
    return "pass"


def _mismatch(record, document: dict) -> str:
    # NOTE: the nnparity version is not compared, so a verification made before a change to an adapter
    # still counts for runs made after it.
    verified = document["models"].get(record.model)
    verified = verified.get("step_hash") if isinstance(verified, dict) else None
    if record.step_hash and not verified:
        return "spec not recorded in verify.json"
    if verified and record.step_hash and verified != record.step_hash:
        return "other spec verified"
    backend = document["backends"].get(record.backend)
    versions = backend.get("versions") if isinstance(backend, dict) else None
    versions = versions if isinstance(versions, dict) else {}
    differ = [f"{name} {version}" for name, version in versions.items()
              if name in (record.framework_versions or {}) and record.framework_versions[name] != version]
    if differ:
        return f"other version verified ({', '.join(differ)})"
    return ""


def header_lines(verification: Verification) -> list[str]:
    """Return a line per recorded verification: command, date, dtype, steps, tolerances and outcome counts."""
    if verification.problem:
        return [f"Verification: none shown: {verification.problem}."]
    if not verification.documents:
        return ["Verification: none. These runs were not checked against the NumPy reference; "
                "`nnparity run --verify`, or `nnparity verify --out` with this directory, records one."]
    lines = []
    for position, document in enumerate(verification.documents):
        label = "Verification" if position == 0 else "Earlier verification"
        tolerances = document.get("tolerances", {})
        bounds = ", ".join(f"{QUANTITY_NAMES[key]} {tolerances[key]:g}" for key in QUANTITY_NAMES if key in tolerances)
        if bounds and document.get("final_by_norm"):
            bounds += " (by norm per tensor)"
        counts = _pair_counts(document)
        tally = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
        steps = document.get("steps", "?")
        interrupted = "" if document.get("complete", True) else ", interrupted before its last model"
        lines.append(
            f"{label} ({document.get('date', 'date unknown')}, `{document.get('command', '?')}`{interrupted}): "
            f"{steps} {'step' if steps == 1 else 'steps'} in {document.get('dtype', '?')} on "
            f"{document.get('device', 'cpu')} "
            f"against {document.get('reference', REFERENCE_BACKEND)}, relative tolerances {bounds or 'not recorded'}; "
            f"(model, backend) pairs: {tally or 'none'}."
        )
    return lines


EXPLANATION = (
    "The verification column shows how `nnparity verify` found the run's model on the run's backend: the "
    "logits, loss and every gradient at step 0, the loss curve and the final parameters of the first steps, "
    "from the same weights and batches as NumPy. `pass` means every quantity was within the tolerance of its "
    "dtype (named in brackets; float64 is the strict check), `FAIL` names the first quantity that was not, "
    "and `other spec verified` or `other version verified` means the verification was of a different model "
    "definition or framework version than this run used, so it does not speak for it."
)


def _pair_counts(document: dict) -> dict[str, int]:
    pairs: dict[tuple, list[dict]] = {}
    for row in document.get("rows", []):
        pairs.setdefault((row.get("model"), row.get("backend")), []).append(row)
    counts = {"pass": 0, "FAIL": 0, "error": 0, "skipped": 0}
    for rows in pairs.values():
        counts[outcome(rows).split(":")[0].split(" ")[0]] += 1
    return counts


def _first_line(text, limit: int) -> str:
    text = str(text or "").strip()
    line = text.splitlines()[0] if text else "(no reason recorded)"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _number(value) -> str:
    return f"{value:.1e}" if isinstance(value, (int, float)) else "-"
