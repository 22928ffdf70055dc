"""The fleet's progress display: a bar on a terminal, periodic log lines otherwise.

Part of the CLI layer (it writes to stderr and the log): ``progress_for(sys.stderr)`` is the
callback ``fleet.run_fleet`` calls after each result, with the result's JSON document.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

from absl import logging

from estimator_fix.fleet import STATUS_DONE, ProgressFn, failure_line


def _duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: an ETA short enough for a progress line."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _Rate:
    """Failures so far and directories per second since the display started."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.failed = 0

    def describe(self, done: int, total: int) -> str:
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
        return f"{self.failed} failed, {rate:.1f}/s{eta}"


class TerminalProgress:
    """A one-line progress bar redrawn on a terminal (stderr); failures printed above it."""

    def __init__(self, stream: TextIO, *, width: int = 30, min_interval: float = 0.1) -> None:
        self._stream = stream
        self._width = width
        self._min_interval = min_interval
        self._last = 0.0
        self._rate = _Rate()

    def __call__(self, done: int, total: int, result: Mapping[str, Any]) -> None:
        if result.get("status") != STATUS_DONE:
            self._rate.failed += 1
            self._stream.write(f"\r\x1b[Kfailed: {failure_line(result)}\n")
        now = time.monotonic()
        if done < total and now - self._last < self._min_interval:
            return
        self._last = now
        filled = self._width * done // total if total else self._width
        bar = "#" * filled + "." * (self._width - filled)
        pct = 100 * done // total if total else 100
        self._stream.write(
            f"\r\x1b[K[{bar}] {done}/{total} {pct}% {self._rate.describe(done, total)}"
        )
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


class LogProgress:
    """Periodic ``absl.logging`` lines for logs that are not a terminal; one per failure.

    A progress line every ``percent_step`` percent or every ``interval_seconds``, whichever
    comes first, and one at the end.
    """

    def __init__(self, *, interval_seconds: float = 30.0, percent_step: float = 5.0) -> None:
        self._interval = interval_seconds
        self._step = percent_step
        self._next_pct = percent_step
        self._last = time.monotonic()
        self._rate = _Rate()

    def __call__(self, done: int, total: int, result: Mapping[str, Any]) -> None:
        if result.get("status") != STATUS_DONE:
            self._rate.failed += 1
            logging.warning("fleet: failed: %s", failure_line(result))
        pct = 100.0 * done / total if total else 100.0
        now = time.monotonic()
        if done < total and pct < self._next_pct and now - self._last < self._interval:
            return
        while self._next_pct <= pct:
            self._next_pct += self._step
        self._last = now
        logging.info(
            "fleet: %d/%d directories (%.0f%%), %s",
            done,
            total,
            pct,
            self._rate.describe(done, total),
        )


def progress_for(stream: TextIO) -> ProgressFn:
    """A ``TerminalProgress`` on ``stream`` if it is a terminal, else a ``LogProgress``."""
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return TerminalProgress(stream)
    return LogProgress()
