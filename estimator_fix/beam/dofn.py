"""``RunJobFn``: the fleet's ``run_job`` as a Beam ``DoFn``, with attempt records for retries.

Results travel through the pipeline as their JSON documents (``JobResult.to_dict()``), the
form the output files hold. A job with side effects (a ``repair`` or ``fix`` that is not a dry
run) is recorded at ``<attempts_dir>/<attempt_key>.json`` before its result is emitted, and a
retried bundle replays that record instead of doing the work again (see the package
docstring).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from estimator_fix import fleet, tfenv
from estimator_fix.options import Job
from estimator_fix.storage import atomic, fs

DONE_TAG = "done"
FAILED_TAG = "failed"
_METRICS_NAMESPACE = "estimator_fix"


def new_attempts_dir(prefix: str) -> str:
    """A fresh directory name for one pipeline run's attempt records, next to the results.

    Called once per run, at launch: the name (UTC time, process id and random letters) is then
    fixed in the pipeline, so every retry within the run sees the same directory. Does not
    perform I/O.
    """
    run = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(4)}"
    return f"{prefix}-attempts/{run}"


def _has_side_effects(job: Job) -> bool:
    """Whether a retry of ``job`` must replay its first result. Does not perform I/O."""
    return job.command != "scan" and not job.dry_run


def _replayable(record: Any, job: Job) -> bool:
    return (
        isinstance(record, dict)
        and record.get("schema") == fleet.RESULT_SCHEMA
        and record.get("attempt_key") == job.attempt_key
        and record.get("status") in (fleet.STATUS_DONE, fleet.STATUS_FAILED)
    )


class RunJobFn(beam.DoFn):
    """``fleet.run_job`` on each job dict; ``done`` result documents to the main output,
    ``failed`` ones to the ``FAILED_TAG`` output. Never raises for a directory's problem.

    Deterministic: a result depends only on the job and the directory's contents (and, with an
    ``attempts_dir``, on an earlier attempt's record); retries are described in the package
    docstring.
    """

    def __init__(self, *, attempts_dir: str | None, preload_tensorflow: bool = False) -> None:
        """
        Args:
          attempts_dir: where results of jobs with side effects are recorded for retries to
            replay; one per pipeline run (``new_attempts_dir``). None: no records (a retried
            repair then reports ``repaired: false``; a retried fix exports again).
          preload_tensorflow: import TensorFlow in ``setup``, once per worker, so that the
            import is not counted in the first directory's ``seconds``.
        """
        super().__init__()
        self._attempts_dir = attempts_dir
        self._preload_tensorflow = preload_tensorflow
        self._done = Metrics.counter(_METRICS_NAMESPACE, "done")
        self._failed = Metrics.counter(_METRICS_NAMESPACE, "failed")
        self._replayed = Metrics.counter(_METRICS_NAMESPACE, "replayed")

    def setup(self) -> None:
        tfenv.quiet_tensorflow()
        if self._preload_tensorflow:
            import tensorflow  # noqa: F401  (once per worker process)

    def process(self, element: Any) -> Iterator[Any]:
        job = Job(**element)
        record = self._record_path(job)
        result = self._replay(record, job) if record else None
        if result is not None:
            self._replayed.inc()
        else:
            result = fleet.run_job(job).to_dict()
            if record:
                self._write_record(record, result)
        if result["status"] == fleet.STATUS_DONE:
            self._done.inc()
            yield result
        else:
            self._failed.inc()
            yield pvalue.TaggedOutput(FAILED_TAG, result)

    def _record_path(self, job: Job) -> str | None:
        """Does not perform I/O."""
        if self._attempts_dir is None or not _has_side_effects(job):
            return None
        return fs.join(self._attempts_dir, f"{job.attempt_key}.json")

    @staticmethod
    def _replay(path: str, job: Job) -> dict[str, Any] | None:
        """An earlier attempt's result for ``job``, or None (then the job runs).

        Raises (so that the runner retries the bundle) when the record cannot be read: running
        the job without knowing whether an attempt already did it could export twice.
        """
        if not fs.exists(path):
            return None
        try:
            record = json.loads(fs.read_text(path))
        except json.JSONDecodeError:
            return None  # written atomically, so this is not ours: do the work
        return record if _replayable(record, job) else None

    @staticmethod
    def _write_record(path: str, result: Mapping[str, Any]) -> None:
        """Records ``result`` before it is emitted; raises if it cannot (the bundle is retried,
        and the retry, finding no record, runs the job again: safe, see the package docstring)."""
        fs.makedirs(fs.dirname(path))
        atomic.write_bytes(path, fleet.to_line(result).encode())
