"""Many model directories in one run: parallel workers, a results journal, resume, a summary.

A migration pipeline runs ``scan``, ``repair`` or ``fix`` over thousands of legacy model
directories, unattended. This package is the library under ``--model_dirs=GLOB|@list.txt``,
``--manifest=jobs.jsonl``, ``--workers``, ``--results`` and ``--resume``:

- ``dirs``: ``expand_model_dirs`` and ``jobs_for_dirs`` turn a glob or a list file into jobs;
- ``manifest``: ``read_manifest`` turns a JSON-lines manifest into jobs and bad lines;
- ``work``: ``run_job`` does one directory's work and never raises, so that a worker process,
  this package's pool or an Apache Beam ``DoFn`` can call it alike;
- ``result``: its ``JobResult`` (``RESULT_SCHEMA``, every field documented on ``run_job``);
- ``journal``: the results file, appended to as each result completes, read back by
  ``--resume``;
- ``pool``: ``spawn``-ed worker processes (never ``fork`` after TensorFlow was imported) that
  survive a worker that dies;
- ``run``: ``prepare`` (refusals before anything runs) and ``run_fleet``;
- ``summary``: ``FleetSummary`` and the one-line form of a failure.

One directory never stops the others: a missing or unreadable directory, a file, a checkpoint
that cannot be read, a manifest line that is not JSON, a SPEC that names nothing, user code
that raises, even a worker process that dies: each is that directory's failed result.

Retrying is safe: a repair of a repaired directory is a no-op (``repaired: false``), an
interrupted repair is cleaned up or adopted by the next (see ``repair``), and ``--resume``
skips directories whose last result for the same command says ``done``. A ``fix`` that is
retried after it exported, but before its result reached the journal, exports once more
(a second SavedModel version in its export base); it never repairs twice.

Workers import TensorFlow lazily, at most once each: a ``scan`` of V2 checkpoints never imports
it (only V1-format checkpoints and ``gs://``-style paths need it).
"""

from estimator_fix.fleet.dirs import expand_model_dirs, jobs_for_dirs
from estimator_fix.fleet.journal import read_results, to_line
from estimator_fix.fleet.manifest import BadLine, read_manifest
from estimator_fix.fleet.pool import default_workers
from estimator_fix.fleet.result import (
    RESULT_SCHEMA,
    STATUS_DONE,
    STATUS_FAILED,
    WORKER_CRASH,
    ErrorInfo,
    JobResult,
)
from estimator_fix.fleet.run import Prepared, ProgressFn, prepare, run_fleet
from estimator_fix.fleet.summary import FleetSummary, failure_line, fleet_exit_code
from estimator_fix.fleet.work import run_job

__all__ = [
    "RESULT_SCHEMA",
    "STATUS_DONE",
    "STATUS_FAILED",
    "WORKER_CRASH",
    "BadLine",
    "ErrorInfo",
    "FleetSummary",
    "JobResult",
    "Prepared",
    "ProgressFn",
    "default_workers",
    "expand_model_dirs",
    "failure_line",
    "fleet_exit_code",
    "jobs_for_dirs",
    "prepare",
    "read_manifest",
    "read_results",
    "run_fleet",
    "run_job",
    "to_line",
]
