"""``run_fleet``: every job run, journaled and counted; ``prepare``: what is refused first.

``prepare`` (shared with the Beam pipeline) turns bad manifest lines and jobs that would write
a directory another job writes into failed results before anything runs. ``run_fleet`` skips
what ``--resume`` finds done, runs the rest (in this process or on the worker pool), journals
each result as it completes and returns the ``FleetSummary``.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging

from estimator_fix import errors
from estimator_fix.fleet.dirs import NAME_PLACEHOLDER
from estimator_fix.fleet.journal import Journal, done_keys
from estimator_fix.fleet.manifest import BadLine
from estimator_fix.fleet.pool import Runner
from estimator_fix.fleet.result import STATUS_DONE, ErrorInfo, JobResult, failed_result
from estimator_fix.fleet.summary import FleetSummary, failure_line
from estimator_fix.fleet.work import run_job
from estimator_fix.options import Job
from estimator_fix.storage import fs

# progress(completed, total, result document): called in this process after each result.
ProgressFn = Callable[[int, int, Mapping[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The jobs that may run, and the results of those refused before anything ran."""

    command: str  # the one command of the jobs, "mixed" or "none"
    to_run: tuple[Job, ...]
    rejected: tuple[JobResult, ...]


def _bad_line_result(bad: BadLine, command: str) -> JobResult:
    job = Job(command=bad.command or command, model_dir=bad.model_dir or "", line=bad.line)
    info = ErrorInfo("ManifestError", bad.message, None)
    return failed_result(job, bad.model_dir, info, errors.EXIT_USAGE)


def _claims_conflict(job: Job, claims: dict[tuple[str, str], Job]) -> str | None:
    """A message if ``job`` wants a directory an earlier job has; records its own claims."""
    wanted = [("model_dir", fs.normalize(job.model_dir))]
    if job.command != "scan" and not job.dry_run:
        wanted += [
            (flag, fs.normalize(value))
            for flag, value in (("export_dir", job.export_dir), ("output_dir", job.output_dir))
            if value
        ]
    for flag, path in wanted:
        other = claims.get((flag, path))
        if other is not None:
            by = f"line {other.line}" if other.line is not None else other.model_dir
            hint = (
                "remove the duplicate"
                if flag == "model_dir"
                else f"give each its own, e.g. with {NAME_PLACEHOLDER} in the {flag}"
            )
            return f"{job.model_dir}: {flag} {path} is already used by {by}; {hint}"
    for key in wanted:
        claims[key] = job
    return None


def prepare(jobs: Sequence[Job | BadLine]) -> Prepared:
    """Refuses, before anything runs, a ``BadLine`` (``ManifestError``, exit code 2) and a job
    that names a model, export or output directory an earlier job names (``UsageError``, exit
    code 2): two jobs must never write one directory. Shared by ``run_fleet`` and the Beam
    pipeline. Does not perform I/O.
    """
    commands = {j.command for j in jobs if isinstance(j, Job)} | {
        j.command for j in jobs if isinstance(j, BadLine) and j.command
    }
    command = commands.pop() if len(commands) == 1 else ("mixed" if commands else "none")
    rejected: list[JobResult] = []
    to_run: list[Job] = []
    claims: dict[tuple[str, str], Job] = {}
    for item in jobs:
        if isinstance(item, BadLine):
            rejected.append(_bad_line_result(item, command))
            continue
        conflict = _claims_conflict(item, claims)
        if conflict is not None:
            model_dir = fs.normalize(item.model_dir)
            info = ErrorInfo("UsageError", conflict, model_dir)
            rejected.append(failed_result(item, model_dir, info, errors.EXIT_USAGE))
        else:
            to_run.append(item)
    return Prepared(command=command, to_run=tuple(to_run), rejected=tuple(rejected))


def run_fleet(
    jobs: Sequence[Job | BadLine],
    *,
    workers: int,
    results_path: str | None,
    resume: bool,
    progress: ProgressFn | None = None,
) -> FleetSummary:
    """Runs every job, in parallel worker processes, and journals each result.

    Args:
      jobs: from ``jobs_for_dirs`` or ``read_manifest``. A ``BadLine`` becomes a failed result
        (``ManifestError``, exit code 2); a job that names a model, export or output directory
        an earlier job names becomes a failed result (``UsageError``, exit code 2): two jobs
        must never write one directory at the same time.
      workers: worker processes (``spawn``); each imports TensorFlow at most once, and only if
        its jobs need it. 1 runs every job in this process, without a pool (for tests and
        debugging; no protection from a job that kills the process).
      results_path: the results file (JSON lines, ``RESULT_SCHEMA``), appended to in completion
        order, flushed per line; a line cut short by a crash is skipped when read. None: no
        file.
      resume: skip jobs whose model directory's last result for the same command in
        ``results_path`` has status ``done`` (dry runs ignored).
      progress: called ``progress(completed, total, result)`` after each result, in this
        process, with the result's JSON document (``cli.progress.progress_for``).

    Returns:
      The counts; ``exit_code`` gives the CLI's exit code.

    Raises:
      errors.UsageError: ``workers`` < 1, or the results file cannot be read or opened.
      errors.WriteError: appending to the results file failed (the run stops: without its
        journal a resume would redo work).
    """
    if workers < 1:
        raise errors.UsageError(f"--workers={workers}: must be at least 1")
    start = time.monotonic()
    prepared = prepare(jobs)
    command = prepared.command
    done_before = done_keys(results_path) if resume and results_path else set()
    immediate: list[JobResult] = list(prepared.rejected)
    to_run: list[Job] = []
    skipped = 0
    for item in prepared.to_run:
        if not item.dry_run and (item.command, fs.normalize(item.model_dir)) in done_before:
            skipped += 1
        else:
            to_run.append(item)
    total = len(immediate) + len(to_run)
    pool_size = max(1, min(workers, len(to_run)))
    logging.info(
        "fleet: %s over %d directories: %d to run on %d worker%s, %d already done, "
        "%d rejected before running",
        command,
        len(jobs),
        len(to_run),
        pool_size,
        "" if pool_size == 1 else "s",
        skipped,
        len(immediate),
    )

    journal = Journal(results_path)
    completed = 0
    verdicts: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[int] = collections.Counter()
    failures: list[str] = []

    def record(result: JobResult) -> None:
        nonlocal completed
        doc = result.to_dict()
        journal.write(doc)
        completed += 1
        if result.verdict:
            verdicts[result.verdict] += 1
        codes[result.exit_code] += 1
        if result.status != STATUS_DONE:
            failures.append(failure_line(doc))
        if progress is not None:
            progress(completed, total, doc)

    runner = Runner(pool_size, record)
    try:
        for result in immediate:
            record(result)
        if workers == 1:
            for job in to_run:
                record(run_job(job))
        elif to_run:
            runner.run(to_run)
    finally:
        journal.close()
    seconds = time.monotonic() - start
    return FleetSummary(
        command=command,
        total=len(jobs),
        done=completed - len(failures),
        failed=len(failures),
        skipped=skipped,
        by_verdict=dict(verdicts),
        by_exit_code=dict(sorted(codes.items())),
        seconds=round(seconds, 3),
        dirs_per_second=round(completed / seconds, 2) if seconds > 0 else 0.0,
        workers=1 if workers == 1 else pool_size,
        worker_restarts=runner.restarts,
        failures=tuple(failures),
    )
