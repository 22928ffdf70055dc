"""One directory's work: ``run_job`` (scan, then repair or fix), which never raises.

A plain top-level function over a frozen ``Job`` returning a frozen ``JobResult``, so that a
pool worker, the fleet's own process (``--workers=1``) and a Beam ``DoFn`` call it alike.
Stage modules are imported inside it: a worker imports TensorFlow only when a job needs it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

from estimator_fix import errors
from estimator_fix.checkpoint.state_file import STATE_FILENAME
from estimator_fix.fleet.result import (
    RESULT_SCHEMA,
    STATUS_DONE,
    STATUS_FAILED,
    ErrorInfo,
    JobResult,
    now,
)
from estimator_fix.options import FLEET_COMMANDS, Job
from estimator_fix.storage import fs, names
from estimator_fix.types import ScanReport


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """The part of a result the command decides; the rest comes from the job and the scan."""

    status: str
    exit_code: int
    repaired: bool = False
    step: int | None = None
    changed: tuple[str, ...] = ()
    export_path: str | None = None
    error: ErrorInfo | None = None


def _failed(exit_code: int, type_name: str, message: str, path: str | None) -> _Outcome:
    return _Outcome(STATUS_FAILED, exit_code, error=ErrorInfo(type_name, message, path))


def _check_job(job: Job) -> None:
    """A fleet runs only ``scan``, ``repair`` and ``fix``; the rest is ``Job.validate``."""
    if job.command not in FLEET_COMMANDS:
        raise errors.UsageError(
            f"unknown command {job.command!r}; one of {', '.join(FLEET_COMMANDS)}"
        )
    job.validate()


class _Listing:
    """Names in the directories a job may write, to report what a failed job left behind."""

    def __init__(self, job: Job) -> None:
        self._dirs = [fs.normalize(d) for d in (job.model_dir, job.output_dir) if d]
        self._before = {d: self._names(d) for d in self._dirs}

    @staticmethod
    def _names(directory: str) -> set[str]:
        try:
            return set(fs.listdir(directory)) if fs.isdir(directory) else set()
        except Exception:  # best effort: the job itself reports an unreadable directory
            return set()

    def added(self) -> tuple[str, ...]:
        out: list[str] = []
        for d in self._dirs:
            new = {
                n
                for n in self._names(d) - self._before[d]
                if n != names.LOCK_NAME and not names.is_temporary(n)
            }
            if any(names.is_backup(n) for n in new):
                new.add(STATE_FILENAME)  # backed up, so replaced
            out += [fs.join(d, n) for n in sorted(new)]
        return tuple(out)


def _repair_outcome(job: Job, report: ScanReport) -> _Outcome:
    from estimator_fix import repair as repair_lib

    the_plan = repair_lib.prepare(report, job)
    if job.dry_run or the_plan.is_noop:
        return _Outcome(STATUS_DONE, errors.EXIT_OK, step=the_plan.step)
    result = repair_lib.repair(the_plan)
    return _Outcome(
        STATUS_DONE,
        errors.EXIT_OK,
        repaired=True,
        step=result.step,
        changed=tuple(result.files_added),
    )


def _fix_outcome(job: Job, report: ScanReport) -> _Outcome:
    from estimator_fix import fix as fix_lib

    result = fix_lib.fix(job, report=report)
    repaired = result.repair
    done = _Outcome(
        STATUS_DONE,
        errors.EXIT_OK,
        repaired=repaired is not None,
        step=repaired.step if repaired else result.plan.step,
        changed=tuple(repaired.files_added) if repaired else (),
        export_path=result.export_path,
    )
    if result.ok or job.dry_run:
        return done
    # fix raises ParityError when verification fails; this is the belt to those braces.
    return dataclasses.replace(
        done,
        status=STATUS_FAILED,
        exit_code=errors.EXIT_EXPORT_FAILED,
        error=ErrorInfo("ExportError", f"{job.model_dir}: the export was not verified", None),
    )


def run_job(job: Job) -> JobResult:
    """Does one directory's work; never raises (one bad directory must not stop the others).

    Safe to retry: the same job on the same directory gives the same result, and a repaired
    directory is never repaired twice (its retry reports ``repaired: false``).

    Args:
      job: the directory and the command's options.

    Returns:
      A ``JobResult``; its ``to_dict()`` is the JSON document ``estimator-fix.result/1``:

      - ``schema``: ``"estimator-fix.result/1"``.
      - ``command``: ``scan``, ``repair`` or ``fix``.
      - ``model_dir``: the absolute model directory (null for a manifest line without one).
      - ``line``: the manifest line number, or null.
      - ``status``: ``done`` or ``failed``. ``scan``: done whenever the directory could be
        read, whatever its verdict; ``repair``: done when the directory is healthy afterwards
        (a healthy directory's no-op and ``dry_run`` included); ``fix``: done iff the
        SavedModel was exported and verified (or, with ``dry_run``, the plan was made).
      - ``exit_code``: what the single-directory CLI would exit with: ``scan`` 0/3/4 by
        verdict; otherwise 0, or the error's code (1 bad input, 2 usage, 4 unrepairable,
        5 step evidence, 6 locked, 7 write failed, 8 export or verification failed); 1 for an
        unexpected exception or a worker process that died.
      - ``verdict``: the scan's verdict *before* any change (``healthy``, ``repairable``,
        ``unrepairable``), or null when the directory could not be scanned.
      - ``problems``: the scan's problem codes (every severity), in report order.
      - ``repaired``: true iff this run committed a repair.
      - ``step``: the ``global_step`` value the repair wrote (or, for a dry run, would write);
        null when the checkpoint needs no new step.
      - ``changed``: full paths of the files this run added or replaced in the model directory
        (or ``output_dir``): the repaired checkpoint, the state file and its backup. For a
        failed run: the new files it left behind (e.g. a repair committed before a failed
        export). The SavedModel is ``export_path``.
      - ``export_path``: the verified SavedModel (``fix``), or null.
      - ``dry_run``: the job was a dry run (``--resume`` ignores these results).
      - ``error``: null, or ``{"type", "message", "path"}``: the error class name
        (``NotAModelDirError``, ``StepEvidenceError``, ..., ``WorkerCrashError``), its one-line
        message, the file at fault or null. Never a traceback.
      - ``seconds``: wall time of this directory's work.
      - ``attempt_key``: a digest of the job's options; equal for retries of the same job.
      - ``worker_pid``: the process that did the work.
      - ``finished_at``: UTC, ISO 8601.
    """
    start = time.monotonic()
    try:
        model_dir: str | None = fs.normalize(job.model_dir)
    except Exception:
        model_dir = None
    listing: _Listing | None = None
    report: ScanReport | None = None
    try:
        _check_job(job)
        if job.command != "scan" and not job.dry_run:
            listing = _Listing(job)
        from estimator_fix.scan import scan

        # fix scans deep (every tensor's checksum before the first write): one scan serves both.
        deep = job.deep or job.command == "fix"
        report = scan(job.model_dir, checkpoint=job.checkpoint, deep=deep)
        if job.command == "scan":
            outcome = _Outcome(STATUS_DONE, report.verdict.exit_code)
        elif job.command == "repair":
            outcome = _repair_outcome(job, report)
        else:
            outcome = _fix_outcome(job, report)
    except errors.Error as e:
        outcome = _failed(e.exit_code, type(e).__name__, str(e), e.path)
    except Exception as e:  # a bug of ours or TensorFlow's: still one line, never a traceback
        message = f"{job.model_dir}: {errors.one_line(e)}"
        outcome = _failed(errors.EXIT_BAD_INPUT, type(e).__name__, message, None)
    except SystemExit as e:  # user code calling sys.exit() must not end the whole fleet
        message = f"{job.model_dir}: the user's code called sys.exit({e.code!r})"
        outcome = _failed(errors.EXIT_BAD_INPUT, "SystemExit", message, None)
    changed = outcome.changed
    if outcome.status == STATUS_FAILED and listing is not None:
        changed = listing.added()
    return JobResult(
        schema=RESULT_SCHEMA,
        command=job.command,
        model_dir=model_dir,
        line=job.line,
        status=outcome.status,
        exit_code=outcome.exit_code,
        verdict=report.verdict.value if report is not None else None,
        problems=tuple(p.code for p in report.problems) if report is not None else (),
        repaired=outcome.repaired,
        step=outcome.step,
        changed=changed,
        export_path=outcome.export_path,
        dry_run=job.dry_run,
        error=outcome.error,
        seconds=round(time.monotonic() - start, 3),
        attempt_key=job.attempt_key,
        worker_pid=os.getpid(),
        finished_at=now(),
    )


def run_jobs(jobs: Sequence[Job]) -> list[JobResult]:
    """``run_job`` over a batch, in order (one round trip to a worker for many quick scans)."""
    return [run_job(job) for job in jobs]
