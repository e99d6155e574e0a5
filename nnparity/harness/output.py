"""The output directory of a suite: checking it, and moving an earlier suite's results into its history.

A new suite appends to ``runs.jsonl`` and rewrites the reports, so results
already in the directory would be mixed into or replaced by the new ones.
``archive_previous`` moves them, whole, to ``<out>/history/<UTC time>/``
before the new suite starts, so every earlier suite stays readable with
``nnparity report <out>/history/<UTC time>``.
"""

from __future__ import annotations

import datetime
import glob
import logging
import os

log = logging.getLogger("nnparity")

HISTORY_DIR = "history"
# Everything a suite writes. The shared inputs (.inputs/) move too, because a report of a run made from a
# spec file reads that spec from there.
RESULT_FILES = (
    "runs.jsonl", "runs.previous.jsonl", "summary.csv", "report.md", "report.html", "environment.json",
    "verify.json",
)
RESULT_DIRS = ("params", ".jobs", ".inputs")
RESULT_PATTERNS = ("*.png",)


class OutputDirError(ValueError):
    """An output directory that is a file, or that cannot be created or written."""


def prepare_out_dir(path: str, option: str = "--out") -> str:
    """Create ``path`` if needed and return it; raise OutputDirError naming ``option`` and the fix.

    Every ancestor is checked, so a path below a regular file reads as such
    instead of as the operating system's "Not a directory".
    """
    absolute = os.path.abspath(path)
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise OutputDirError(f"invalid {option} {path!r}: it is a file, not a directory; choose another path")
    parent = os.path.dirname(absolute)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise OutputDirError(f"invalid {option} {path!r}: {parent} is a file, not a directory; choose another path")
    try:
        os.makedirs(absolute, exist_ok=True)
    except OSError as error:
        raise OutputDirError(
            f"invalid {option} {path!r}: the directory cannot be created ({error.strerror or error}); "
            "choose a path where you can write"
        ) from None
    if not os.access(absolute, os.W_OK | os.X_OK):
        raise OutputDirError(f"invalid {option} {path!r}: the directory is not writable; choose a path where you can write")
    return path


def previous_results(out_dir: str) -> list[str]:
    """List the names in ``out_dir`` that an earlier suite wrote, in a stable order."""
    names = [name for name in RESULT_FILES + RESULT_DIRS if os.path.exists(os.path.join(out_dir, name))]
    for pattern in RESULT_PATTERNS:
        names += sorted(os.path.basename(path) for path in glob.glob(os.path.join(out_dir, pattern)))
    return names


def archive_previous(out_dir: str, now: datetime.datetime | None = None) -> str | None:
    """Move an earlier suite's results to ``<out_dir>/history/<UTC time>/``; return that directory, or None.

    Returns None, and moves nothing, when ``out_dir`` contains no results.
    Two suites started in the same second get ``-1``, ``-2``, ... suffixes.
    """
    names = previous_results(out_dir)
    if not names:
        return None
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    target = os.path.join(out_dir, HISTORY_DIR, stamp)
    suffix = 0
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(out_dir, HISTORY_DIR, f"{stamp}-{suffix}")
    os.makedirs(target)
    for name in names:
        os.replace(os.path.join(out_dir, name), os.path.join(target, name))
    log.warning("moved the earlier suite's results in %s (%d files and folders) to %s; `nnparity report %s` "
                "rebuilds its report", out_dir, len(names), target, target)
    return target
