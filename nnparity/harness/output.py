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
    A ``verify.json`` without ``runs.jsonl`` stays: it verified the backends
    for the suite about to run. Two suites started in the same second get
    ``-1``, ``-2``, ... suffixes. When a name cannot be moved, the ones
    already moved go back and OutputDirError names the one that failed.
    """
    names = previous_results(out_dir)
    if "runs.jsonl" not in names:
        names = [name for name in names if name != "verify.json"]
    if not names:
        return None
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    target = os.path.join(out_dir, HISTORY_DIR, stamp)
    suffix = 0
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(out_dir, HISTORY_DIR, f"{stamp}-{suffix}")
    os.makedirs(target)
    moved = []
    try:
        for name in names:
            os.replace(os.path.join(out_dir, name), os.path.join(target, name))
            moved.append(name)
    except OSError as error:
        _move_back(out_dir, target, moved)
        raise OutputDirError(
            f"the earlier results in {out_dir} could not be moved to {target}: {name}: "
            f"{error.strerror or error}; nothing was moved. Make {name} movable, or choose another --out"
        ) from None
    hint = f"; `nnparity report {target}` rebuilds its report" if "runs.jsonl" in names else ""
    count = f"{len(names)} file or folder" if len(names) == 1 else f"{len(names)} files and folders"
    log.warning("moved the earlier suite's results in %s (%s) to %s%s", out_dir, count, target, hint)
    return target


def _move_back(out_dir: str, target: str, moved: list[str]) -> None:
    for name in reversed(moved):
        try:
            os.replace(os.path.join(target, name), os.path.join(out_dir, name))
        except OSError as error:
            log.error("%s could not be moved back to %s: %s", os.path.join(target, name), out_dir, error)
    try:
        os.rmdir(target)
        os.rmdir(os.path.dirname(target))
    except OSError:
        pass  # not empty: an earlier history, or a name that could not be moved back
