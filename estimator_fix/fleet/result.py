"""One directory's result in a fleet: ``JobResult``, the ``estimator-fix.result/1`` document.

``run_job``, the worker pool (a worker that died), ``prepare`` (a job refused before running)
and the Beam pipeline all produce this one type; ``to_dict()`` is the line the results journal
and Beam's output files hold, every field documented on ``run_job``.
"""

from __future__ import annotations

import dataclasses
import os
import time

from estimator_fix.options import Job
from estimator_fix.serialize import Serializable

RESULT_SCHEMA = "estimator-fix.result/1"
STATUS_DONE = "done"
STATUS_FAILED = "failed"
WORKER_CRASH = "WorkerCrashError"


@dataclasses.dataclass(frozen=True)
class ErrorInfo(Serializable):
    """Why a directory failed: the error's class name, its one-line message, the file at fault."""

    type: str
    message: str
    path: str | None


@dataclasses.dataclass(frozen=True)
class JobResult(Serializable):
    """What one directory's work gave; the fields are documented on ``run_job``.

    Plain data, so that it crosses a process boundary (a pool worker's result) unchanged.
    """

    schema: str
    command: str
    model_dir: str | None
    line: int | None
    status: str
    exit_code: int
    verdict: str | None
    problems: tuple[str, ...]
    repaired: bool
    step: int | None
    changed: tuple[str, ...]
    export_path: str | None
    dry_run: bool
    error: ErrorInfo | None
    seconds: float
    attempt_key: str
    worker_pid: int
    finished_at: str


def now() -> str:
    """The current UTC time, ISO 8601, to the second, as ``finished_at`` holds it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def failed_result(
    job: Job,
    model_dir: str | None,
    error: ErrorInfo,
    exit_code: int,
) -> JobResult:
    """A failed result for ``job`` when its work did not run (or did not come back).

    Args:
      job: the job.
      model_dir: its normalised model directory, or None when it has none.
      error: why it failed.
      exit_code: the single-directory CLI's exit code for that failure.
    """
    return JobResult(
        schema=RESULT_SCHEMA,
        command=job.command,
        model_dir=model_dir,
        line=job.line,
        status=STATUS_FAILED,
        exit_code=exit_code,
        verdict=None,
        problems=(),
        repaired=False,
        step=None,
        changed=(),
        export_path=None,
        dry_run=job.dry_run,
        error=error,
        seconds=0.0,
        attempt_key=job.attempt_key,
        worker_pid=os.getpid(),
        finished_at=now(),
    )
