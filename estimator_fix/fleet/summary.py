"""The counts over one fleet run (``FleetSummary``) and the one-line form of a failed result.

Shared by the local fleet and the Beam pipeline: ``fleet_exit_code`` is the one rule that
turns a run's counts into its exit code, and ``failure_line`` the one way a failure is named
in a summary, a progress display and Beam's summary file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from estimator_fix import errors
from estimator_fix.serialize import Serializable
from estimator_fix.types import Verdict


def fleet_exit_code(command: str, failed: int, by_verdict: Mapping[str, int]) -> int:
    """The exit code of a run over many directories.

    ``EXIT_FLEET_FAILED`` (9) if any directory failed (bad manifest lines included). Else, for
    ``scan``: 4 if any directory is unrepairable, else 3 if any is repairable, else 0 (the
    single-directory codes, worst first). Else 0. Does not perform I/O.
    """
    if failed:
        return errors.EXIT_FLEET_FAILED
    if command == "scan":
        return Verdict.worst_exit_code(by_verdict)
    return errors.EXIT_OK


@dataclasses.dataclass(frozen=True)
class FleetSummary(Serializable):
    """Counts over one ``run_fleet``; ``table()`` for people, ``to_dict()`` for pipelines."""

    JSON_PROPERTIES: ClassVar[tuple[str, ...]] = ("exit_code",)

    command: str  # the jobs' command ("mixed" if they differ)
    total: int  # jobs given: run + skipped + bad manifest lines
    done: int
    failed: int
    skipped: int  # already done according to the results file (--resume)
    by_verdict: dict[str, int]  # the scan verdict before any change, over the results of this run
    by_exit_code: dict[int, int]  # JSON: the codes as strings
    seconds: float
    dirs_per_second: float  # results of this run per second of wall time
    workers: int
    worker_restarts: int  # process pools replaced after a worker died
    failures: tuple[str, ...] = ()  # one line each, naming the directory (or manifest line)

    @property
    def exit_code(self) -> int:
        """The fleet's exit code (``fleet_exit_code``); skipped directories do not count."""
        return fleet_exit_code(self.command, self.failed, self.by_verdict)

    def table(self, *, max_failures: int = 10) -> str:
        """A small fixed-width summary; the first ``max_failures`` failures listed under it."""
        rows = [
            f"estimator-fix {self.command}: {self.total} directories in {self.seconds:.1f} s "
            f"({self.dirs_per_second:.1f}/s, {self.workers} worker"
            f"{'s' if self.workers != 1 else ''}"
            + (f", {self.worker_restarts} restarted" if self.worker_restarts else "")
            + ")",
            f"  {'status':<16}{'count':>8}",
            f"  {'done':<16}{self.done:>8}",
            f"  {'failed':<16}{self.failed:>8}",
            f"  {'skipped':<16}{self.skipped:>8}",
        ]
        if self.by_verdict:
            rows.append(f"  {'verdict':<16}{'count':>8}")
            order = ["healthy", "repairable", "unrepairable"]
            order += sorted(set(self.by_verdict) - set(order))
            rows += [f"  {v:<16}{self.by_verdict[v]:>8}" for v in order if v in self.by_verdict]
        if self.by_exit_code:
            rows.append(f"  {'exit code':<16}{'count':>8}")
            for code in sorted(self.by_exit_code):
                rows.append(f"  {code:<16}{self.by_exit_code[code]:>8}")
        if self.failures:
            rows.append("failed:")
            rows += [f"  {line}" for line in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                rows.append(
                    f"  ... and {len(self.failures) - max_failures} more (see the results file)"
                )
        rows.append(f"exit code {self.exit_code}")
        return "\n".join(rows)


def _where(result: Mapping[str, Any]) -> str:
    """The model directory of a result, or its manifest line. Does not perform I/O."""
    if result.get("model_dir"):
        return str(result["model_dir"])
    return f"manifest line {result.get('line')}"


def failure_line(result: Mapping[str, Any]) -> str:
    """``<model_dir>: <message>`` for a failed result, the directory named once.

    Over the result's JSON document (``JobResult.to_dict()``, a journal line, a Beam element),
    the form every consumer of results holds. Does not perform I/O.
    """
    error = result.get("error") or {}
    message = str(error.get("message") or result.get("status"))
    place = _where(result)
    if message.startswith(place) or error.get("type") == "ManifestError":
        return message  # it names the directory, or the manifest file and line, already
    return f"{place}: {message}"
