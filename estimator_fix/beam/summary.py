"""The pipeline's summary: ``SummaryFn`` counts the results; ``fleet_summary`` reads them back.

The counts are the local fleet's (``fleet.FleetSummary``), and so is the exit code
(``fleet.fleet_exit_code``): a Beam run exits as a local run over the same jobs would.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam

from estimator_fix import errors, fleet
from estimator_fix.beam.outputs import Outputs
from estimator_fix.storage import fs

SUMMARY_SCHEMA = "estimator-fix.beam-summary/1"
MAX_SUMMARY_FAILURES = 100  # failure lines kept in the summary; the dead-letter file has all


class SummaryFn(beam.CombineFn):
    """Counts results as ``fleet.run_fleet`` does: done, failed, by verdict, by exit code.

    The accumulator is plain data; merging is order-independent (the failure lines kept are the
    ``MAX_SUMMARY_FAILURES`` smallest, sorted), so any runner gives the same summary.
    """

    def __init__(self, command: str) -> None:
        super().__init__()
        self._command = command

    def create_accumulator(self) -> dict[str, Any]:
        return {
            "done": 0,
            "failed": 0,
            "by_verdict": {},
            "by_exit_code": {},
            "failures": [],
            "work_seconds": 0.0,
        }

    def add_input(self, acc: dict[str, Any], result: Any) -> dict[str, Any]:
        if result.get("status") == fleet.STATUS_DONE:
            acc["done"] += 1
        else:
            acc["failed"] += 1
            acc["failures"] = _smallest([*acc["failures"], fleet.failure_line(result)])
        if result.get("verdict"):
            key = str(result["verdict"])
            acc["by_verdict"][key] = acc["by_verdict"].get(key, 0) + 1
        code = str(int(result["exit_code"]))
        acc["by_exit_code"][code] = acc["by_exit_code"].get(code, 0) + 1
        acc["work_seconds"] += float(result.get("seconds") or 0.0)
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict[str, Any]]) -> dict[str, Any]:
        out = self.create_accumulator()
        verdicts: collections.Counter[str] = collections.Counter()
        codes: collections.Counter[str] = collections.Counter()
        for acc in accumulators:
            out["done"] += acc["done"]
            out["failed"] += acc["failed"]
            out["failures"] = _smallest([*out["failures"], *acc["failures"]])
            out["work_seconds"] += acc["work_seconds"]
            verdicts.update(acc["by_verdict"])
            codes.update(acc["by_exit_code"])
        out["by_verdict"] = dict(verdicts)
        out["by_exit_code"] = dict(codes)
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        doc = {
            "schema": SUMMARY_SCHEMA,
            "command": self._command,
            "total": acc["done"] + acc["failed"],
            "done": acc["done"],
            "failed": acc["failed"],
            "by_verdict": dict(sorted(acc["by_verdict"].items())),
            "by_exit_code": dict(sorted(acc["by_exit_code"].items(), key=lambda kv: int(kv[0]))),
            "failures": list(acc["failures"]),
            "work_seconds": round(acc["work_seconds"], 3),
        }
        doc["exit_code"] = fleet.fleet_exit_code(self._command, acc["failed"], acc["by_verdict"])
        return doc


def _smallest(lines: list[str]) -> list[str]:
    """Does not perform I/O."""
    return sorted(lines)[:MAX_SUMMARY_FAILURES]


def read_summary(outputs: Outputs) -> dict[str, Any]:
    """The summary document the pipeline wrote (``SUMMARY_SCHEMA``).

    Raises:
      errors.Error: the file cannot be read, or does not hold one summary.
    """
    text = fs.read_text(outputs.summary_file)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.InputError(
            f"{outputs.summary_file}: not a summary ({e.msg}); did the pipeline finish?",
            path=outputs.summary_file,
        ) from e
    if not isinstance(doc, dict) or doc.get("schema") != SUMMARY_SCHEMA:
        raise errors.InputError(
            f"{outputs.summary_file}: not an {SUMMARY_SCHEMA} document",
            path=outputs.summary_file,
        )
    return doc


def fleet_summary(doc: Mapping[str, Any], *, seconds: float, workers: int) -> fleet.FleetSummary:
    """A summary document (``SummaryFn``'s output) as a ``fleet.FleetSummary``.

    Args:
      doc: from ``read_summary``.
      seconds: the pipeline's wall time, measured by whoever waited for it.
      workers: the workers it ran on, as far as the launcher knows (0: the runner decided).

    Does not perform I/O.
    """
    completed = int(doc["done"]) + int(doc["failed"])
    return fleet.FleetSummary(
        command=str(doc["command"]),
        total=int(doc["total"]),
        done=int(doc["done"]),
        failed=int(doc["failed"]),
        skipped=0,
        by_verdict={str(k): int(v) for k, v in doc["by_verdict"].items()},
        by_exit_code={int(k): int(v) for k, v in sorted(doc["by_exit_code"].items())},
        seconds=round(seconds, 3),
        dirs_per_second=round(completed / seconds, 2) if seconds > 0 else 0.0,
        workers=workers,
        worker_restarts=0,
        failures=tuple(doc["failures"]),
    )
