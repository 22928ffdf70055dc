"""The results journal (``--results=FILE``): one JSON line per directory, the resume record.

``Journal`` appends each result as it completes (through ``atomic.LineLog``); ``read_results``
reads a journal back, skipping torn and foreign lines; ``done_keys`` is what ``--resume`` skips.
``to_line`` is the one formatting of a result line, shared with Beam's output files.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Mapping
from typing import Any

from estimator_fix import errors
from estimator_fix.fleet.result import RESULT_SCHEMA, STATUS_DONE
from estimator_fix.storage import atomic, fs


def to_line(doc: Mapping[str, Any]) -> str:
    """One compact JSON line, without its newline. Does not perform I/O."""
    return json.dumps(doc, separators=(",", ":"))


class Journal:
    """The results file, appended to and flushed per result; no file when ``path`` is None.

    A line cut short by a crash is ended before the next is appended, so it costs only itself.
    """

    def __init__(self, path: str | None) -> None:
        """Opens the journal before anything runs, so that an unwritable path stops the run.

        Raises:
          errors.UsageError: the file cannot be read or opened for appending.
        """
        self._path = path
        self._log: atomic.LineLog | None = None
        if path is None:
            return
        try:
            self._log = atomic.LineLog(path)
        except OSError as e:
            raise errors.UsageError(
                f"--results={path}: cannot open for appending ({e.strerror}); pass a writable path"
            ) from e

    def write(self, doc: Mapping[str, Any]) -> None:
        """Appends one result document.

        Raises:
          errors.WriteError: the append failed (the run stops: without its journal a resume
            would redo work).
        """
        if self._log is None:
            return
        try:
            self._log.append(to_line(doc))
        except OSError as e:
            raise errors.WriteError(
                f"--results={self._path}: write failed ({e.strerror}); the directories done so "
                "far are recorded, free space and run again with --resume",
                path=self._path,
            ) from e

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def read_results(path: str) -> list[dict[str, Any]]:
    """Every result in a results file, in file order; torn or foreign lines are skipped.

    Raises:
      OSError: the file cannot be read (``FileNotFoundError`` if it does not exist).
    """
    out = []
    if fs.has_scheme(path):
        try:
            lines = fs.read_text(path).splitlines()
        except errors.PathNotFoundError as e:
            raise FileNotFoundError(errno.ENOENT, str(e), path) from e
        except errors.Error as e:
            raise OSError(errno.EIO, str(e), path) from e
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    for raw in lines:
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("schema") == RESULT_SCHEMA:
            out.append(doc)
    return out


def done_keys(path: str) -> set[tuple[str, str]]:
    """(command, model_dir) whose last non-dry-run result in the journal says done.

    Raises:
      errors.UsageError: the journal exists but cannot be read.
    """
    try:
        results = read_results(path)
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise errors.UsageError(f"--results={path}: cannot read ({e.strerror})") from e
    last: dict[tuple[str, str], str] = {}
    for r in results:
        if r.get("dry_run") or not r.get("model_dir"):
            continue
        last[(str(r.get("command")), str(r["model_dir"]))] = str(r.get("status"))
    return {k for k, status in last.items() if status == STATUS_DONE}
