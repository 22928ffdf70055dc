"""The fleet's per-directory work as an Apache Beam pipeline (``pip install estimator-fix[beam]``).

The same work as ``fleet.run_fleet``, for runs that outgrow one machine: the runner is chosen by
Beam's standard pipeline options (``--runner=DirectRunner`` locally, ``DataflowRunner``,
``FlinkRunner``, ``SparkRunner``). ``tools/beam_fleet.py`` is the command line; this module is
the library under it and under the tests.

The pipeline (``build_pipeline``)::

    Create(jobs as dicts) -> Reshuffle -> ParDo(RunJobFn) -done---> <prefix>-done.jsonl
                                                          -failed-> <prefix>-failed.jsonl
              (bad manifest lines, duplicate directories) -failed-^   (the dead letters)
    done + failed -> CombineGlobally(SummaryFn) --------------------> <prefix>-summary.json

- ``RunJobFn`` calls ``fleet.run_job`` (which never raises) and routes each result by its
  ``status``: ``done`` to the main output, ``failed`` to the dead-letter output. Every result has
  the fleet's ``RESULT_SCHEMA``; the two files together hold exactly what the fleet's results
  journal holds for the same jobs, in no particular order.
- ``Reshuffle`` breaks fusion with ``Create``, so that a runner spreads the directories over its
  workers instead of running them in the one bundle that created them.
- ``SummaryFn`` counts the results as ``fleet.FleetSummary`` does; ``fleet_summary`` turns the
  written summary back into one, whose ``exit_code`` is the fleet's (9 if any directory failed;
  for ``scan`` 4/3 by the worst verdict; else 0).

Output files. By default each output is one file (``num_shards=1``): fine for results of a few
hundred bytes per directory, even for 100,000 directories, and it gives fixed names. With
``num_shards=0`` the runner picks the sharding and the names get Beam's
``-SSSSS-of-NNNNN`` before the suffix (``<prefix>-done-00000-of-00004.jsonl``); ``read_results``
reads either. Paths are Beam file system paths: local, or ``gs://`` with ``apache-beam[gcp]``.

Retries. Beam re-runs a whole bundle when any part of it fails (a worker lost, killed by the
out-of-memory killer, preempted), including the elements it had already processed, and keeps
the outputs of one successful attempt only. Without more, a retried ``repair`` is still safe:
``run_job`` on a directory that an earlier attempt repaired finds it healthy and changes
nothing, so a directory is never repaired twice; but its result then says ``repaired: false``,
and a retried ``fix`` exports a second SavedModel version. So ``RunJobFn``, given an
``attempts_dir``, records each result that may have changed something (every ``repair`` and
``fix`` that is not a dry run) before emitting it, at ``<attempts_dir>/<attempt_key>.json``
(written atomically), and a later attempt of the same job replays that record instead of doing
the work again: a retried directory gives the identical result and does no second repair and
no second export. The key is ``Job.attempt_key``, a digest of the job's options (the same for
every attempt; no time, randomness or worker identity in it); ``attempts_dir`` is chosen once
per pipeline run at launch (``new_attempts_dir``) and is part of the pickled DoFn, so every
attempt of a run sees the same one, and a new run (a deliberate re-run) does the work again,
finding repaired directories healthy (``repaired: false``). Only a worker lost between the end
of the work and the record's write leaves nothing to replay: that retry re-runs the job, which
for ``repair`` reports ``repaired: false`` and for ``fix`` exports once more (never repairs
twice). ``scan`` and dry runs change nothing and are simply re-run. Two attempts running at the
same time (a worker that was presumed lost but is still working) meet at the directory's repair
lock: the second reports ``LockedError`` (exit code 6) and the directory is repaired once.

The DirectRunner's ``--direct_runner_bundle_repeat=1`` runs every bundle once more before the
attempt whose outputs it keeps: tests/test_beam.py retries every bundle that way.

Running it: ``new_pipeline(args)`` over Beam's standard options, ``build_pipeline``, then
``run().wait_until_finish()``. The jobs travel inside the pipeline graph (``Create``): about
18 bytes per job compressed (10,000 jobs: 0.18 MB; Dataflow accepts graphs up to 10 MB).
Workers import TensorFlow at most once each: in ``RunJobFn.setup`` when the command needs it
(``repair``, ``fix``), else only if a job needs it (a V1-format checkpoint, a ``gs://`` path).
On a remote runner they need ``estimator_fix`` installed (``tools/beam_fleet.py --help``).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import secrets
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from estimator_fix import errors, fleet
from estimator_fix.storage import atomic, fs

DONE_TAG = "done"
FAILED_TAG = "failed"
SUMMARY_SCHEMA = "estimator-fix.beam-summary/1"
MAX_SUMMARY_FAILURES = 100  # failure lines kept in the summary; the dead-letter file has all
_METRICS_NAMESPACE = "estimator_fix"


# --- outputs ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where a pipeline writes; ``outputs_for(prefix)`` gives the standard names."""

    done: str  # file prefix of the main output; the file is done + shard + ".jsonl"
    failed: str  # the dead-letter output, same form
    summary: str  # the summary file prefix; the file is summary + ".json", always one shard
    num_shards: int = 1  # 1: exactly <done>.jsonl; 0: the runner decides (-SSSSS-of-NNNNN)

    @property
    def done_file(self) -> str:
        """The main output's file name when ``num_shards`` is 1. Does not perform I/O."""
        return self.done + ".jsonl"

    @property
    def failed_file(self) -> str:
        """The dead-letter file name when ``num_shards`` is 1. Does not perform I/O."""
        return self.failed + ".jsonl"

    @property
    def summary_file(self) -> str:
        """Does not perform I/O."""
        return self.summary + ".json"


def outputs_for(prefix: str, *, num_shards: int = 1) -> Outputs:
    """``<prefix>-done.jsonl``, ``<prefix>-failed.jsonl``, ``<prefix>-summary.json``.

    Does not perform I/O.

    Raises:
      errors.UsageError: an empty prefix, or ``num_shards`` < 0.
    """
    if not prefix or prefix.endswith("/"):
        raise errors.UsageError(
            f"--results={prefix!r}: needs a file name prefix, e.g. /out/run1 (writes "
            "/out/run1-done.jsonl, /out/run1-failed.jsonl, /out/run1-summary.json)"
        )
    if num_shards < 0:
        raise errors.UsageError(f"num_shards={num_shards}: must be 0 (runner decides) or more")
    return Outputs(
        done=f"{prefix}-done",
        failed=f"{prefix}-failed",
        summary=f"{prefix}-summary",
        num_shards=num_shards,
    )


def new_attempts_dir(prefix: str) -> str:
    """A fresh directory name for one pipeline run's attempt records, next to the results.

    Called once per run, at launch: the name (UTC time, process id and random letters) is then
    fixed in the pipeline, so every retry within the run sees the same directory. Does not
    perform I/O.
    """
    run = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(4)}"
    return f"{prefix}-attempts/{run}"


def _matching(pattern: str) -> list[str]:
    if fs.has_scheme(pattern):
        import tensorflow as tf

        return sorted(tf.io.gfile.glob(pattern))
    return sorted(glob.glob(pattern))


def _output_files(file_prefix: str, num_shards: int) -> list[str]:
    if num_shards == 1:
        return [file_prefix + ".jsonl"]
    return _matching(f"{glob.escape(file_prefix)}-[0-9]*-of-[0-9]*.jsonl")


def read_results(outputs: Outputs) -> list[dict[str, Any]]:
    """Every result the pipeline wrote: the main output's, then the dead-letter output's.

    Raises:
      errors.Error: a result file cannot be read (``PathNotFoundError`` if it is missing).
    """
    out: list[dict[str, Any]] = []
    for prefix in (outputs.done, outputs.failed):
        for path in _output_files(prefix, outputs.num_shards):
            for raw in fs.read_text(path).splitlines():
                if raw.strip():
                    out.append(json.loads(raw))
    return out


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


# --- the per-directory work -------------------------------------------------------------------


def _quiet_worker() -> None:
    """Quiets TensorFlow in a worker, as ``cli.run`` does in the CLI's process."""
    import logging as std_logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow).*")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*is deprecated")


def _has_side_effects(job: fleet.Job) -> bool:
    """Whether a retry of ``job`` must replay its first result. Does not perform I/O."""
    return job.command != "scan" and not job.dry_run


def _replayable(record: Any, job: fleet.Job) -> bool:
    return (
        isinstance(record, dict)
        and record.get("schema") == fleet.RESULT_SCHEMA
        and record.get("attempt_key") == job.attempt_key
        and record.get("status") in (fleet.STATUS_DONE, fleet.STATUS_FAILED)
    )


class RunJobFn(beam.DoFn):
    """``fleet.run_job`` on each job dict; ``done`` results to the main output, ``failed`` ones
    to the ``FAILED_TAG`` output. Never raises for a directory's problem.

    Deterministic: a result depends only on the job and the directory's contents (and, with an
    ``attempts_dir``, on an earlier attempt's record); retries are described in the module
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
        _quiet_worker()
        if self._preload_tensorflow:
            import tensorflow  # noqa: F401  (once per worker process)

    def process(self, element: Any) -> Iterator[Any]:
        job = fleet.Job(**element)
        record = self._record_path(job)
        result = self._replay(record, job) if record else None
        if result is not None:
            self._replayed.inc()
        else:
            result = fleet.run_job(job)
            if record:
                self._write_record(record, result)
        if result["status"] == fleet.STATUS_DONE:
            self._done.inc()
            yield result
        else:
            self._failed.inc()
            yield pvalue.TaggedOutput(FAILED_TAG, result)

    def _record_path(self, job: fleet.Job) -> str | None:
        """Does not perform I/O."""
        if self._attempts_dir is None or not _has_side_effects(job):
            return None
        return fs.join(self._attempts_dir, f"{job.attempt_key}.json")

    @staticmethod
    def _replay(path: str, job: fleet.Job) -> dict[str, Any] | None:
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
        and the retry, finding no record, runs the job again: safe, see the module docstring)."""
        fs.makedirs(fs.dirname(path))
        atomic.write_bytes(path, json.dumps(result, separators=(",", ":")).encode())


# --- the summary ------------------------------------------------------------------------------


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
        doc["exit_code"] = fleet_summary(doc, seconds=0.0, workers=0).exit_code
        return doc


def _smallest(lines: list[str]) -> list[str]:
    """Does not perform I/O."""
    return sorted(lines)[:MAX_SUMMARY_FAILURES]


# --- the pipeline -----------------------------------------------------------------------------

_DIRECT_RUNNERS = frozenset({"directrunner", "direct", "switchingdirectrunner"})


def _option_names(args: Sequence[str]) -> set[str]:
    """Does not perform I/O."""
    return {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}


def with_local_defaults(args: Sequence[str], *, workers: int, command: str = "") -> list[str]:
    """``args`` plus, when they name no runner: the DirectRunner in ``multi_processing`` mode on
    ``workers`` processes, their logs at WARNING. A scan runs ``in_memory`` instead: it never
    imports TensorFlow and costs about half a millisecond a directory, less than starting the
    worker processes (about 4 s). Does not perform I/O."""
    names = _option_names(args)
    out = list(args)
    if "runner" in names:
        return out
    out.append("--runner=DirectRunner")
    light = command == "scan" and "direct_running_mode" not in names
    if "direct_running_mode" not in names:
        out.append("--direct_running_mode=" + ("in_memory" if light else "multi_processing"))
    if "direct_num_workers" not in names:
        out.append(f"--direct_num_workers={1 if light else workers}")
    if "default_sdk_harness_log_level" not in names:
        out.append("--default_sdk_harness_log_level=WARNING")
    return out


def new_pipeline(args: Sequence[str]) -> beam.Pipeline:
    """A pipeline over Beam's standard pipeline options ``args`` (``--runner=...`` and the rest).

    The DirectRunner runs as its FnApiRunner, which honours ``--direct_running_mode`` and
    ``--direct_num_workers``. (Since Beam 2.6x the DirectRunner first tries Prism, a Go binary
    it downloads from GitHub and runs with the Python work in the launching process, so
    ``multi_processing`` would be ignored; offline it falls back to the FnApiRunner after a
    failed download. This pipeline is batch-only, which the FnApiRunner runs in full.)
    Other runners are Beam's.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(list(args))
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if runner.rsplit(".", 1)[-1].lower() in _DIRECT_RUNNERS:
        return beam.Pipeline(runner=_fn_api_runner(options), options=options)
    return beam.Pipeline(options=options)


def _fn_api_runner(options: Any) -> Any:
    """The FnApiRunner as the DirectRunner builds it: its workers get the pipeline options."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
    )


def workers_of(options: Any) -> int:
    """The workers a launcher knows of: the DirectRunner's ``direct_num_workers``, else
    ``--num_workers`` or ``--max_num_workers``; 0 when the runner decides. Does not perform I/O.
    """
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, WorkerOptions

    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if runner.rsplit(".", 1)[-1].lower() in _DIRECT_RUNNERS | {"fnapirunner"}:
        return int(options.view_as(DirectOptions).direct_num_workers or 1)
    worker = options.view_as(WorkerOptions)
    return int(worker.num_workers or worker.max_num_workers or 0)


@dataclasses.dataclass(frozen=True)
class Launch:
    """What ``prepare`` decided at launch: the jobs to run and the results already known."""

    command: str  # the jobs' command, "mixed" if they differ
    to_run: tuple[fleet.Job, ...]
    rejected: tuple[dict[str, Any], ...]  # failed results: bad manifest lines, duplicates


def prepare(jobs: Sequence[fleet.Job | fleet.BadLine]) -> Launch:
    """Rejects at launch what ``fleet.run_fleet`` rejects before running: a ``BadLine``
    (``ManifestError``, exit code 2) and a job that names a directory an earlier job names
    (``UsageError``, exit code 2). Does not perform I/O.
    """
    prepared = fleet.prepare(jobs)
    return Launch(command=prepared.command, to_run=prepared.to_run, rejected=prepared.rejected)


def _to_json(result: Mapping[str, Any]) -> str:
    """One result line, formatted as the fleet's journal does. Does not perform I/O."""
    return json.dumps(result, separators=(",", ":"))


def _summary_json(doc: Mapping[str, Any]) -> str:
    """Does not perform I/O."""
    return json.dumps(doc, indent=2)


def _write_lines(label: str, path: str, num_shards: int) -> beam.PTransform:
    return label >> beam.io.WriteToText(
        path,
        file_name_suffix=".jsonl",
        num_shards=num_shards,
        shard_name_template="" if num_shards == 1 else None,
    )


def build_pipeline(
    pipeline: beam.Pipeline,
    jobs: Sequence[fleet.Job | fleet.BadLine],
    outputs: Outputs,
    *,
    attempts_dir: str | None,
) -> dict[str, Any]:
    """Adds the fleet's work over ``jobs`` to ``pipeline``; run it with ``pipeline.run()``.

    Args:
      pipeline: a ``beam.Pipeline`` with its options (the runner among them).
      jobs: from ``fleet.jobs_for_dirs`` or ``fleet.read_manifest``; bad lines and duplicate
        directories become failed results at launch (``prepare``).
      outputs: where the results go (``outputs_for``); files there are replaced.
      attempts_dir: ``new_attempts_dir(prefix)`` for this run, so that retried bundles replay
        results instead of redoing them; None to do without (see the module docstring).

    Returns:
      The PCollections by name: ``done`` and ``failed`` (result dicts), ``summary`` (one
      summary dict).
    """
    launch = prepare(jobs)
    needs_tf = any(j.command != "scan" and not j.dry_run for j in launch.to_run)
    results = (
        pipeline
        # Typed, so that Beam does not infer a type from every element (seconds for 100,000).
        | "Jobs"
        >> beam.Create([j.to_dict() for j in launch.to_run], reshuffle=False).with_output_types(
            dict[str, Any]
        )
        | "Spread" >> beam.Reshuffle()
        | "RunJob"
        >> beam.ParDo(
            RunJobFn(attempts_dir=attempts_dir, preload_tensorflow=needs_tf)
        ).with_outputs(FAILED_TAG, main=DONE_TAG)
    )
    done = results[DONE_TAG]
    failed = results[FAILED_TAG]
    if launch.rejected:
        rejected = pipeline | "Rejected" >> beam.Create(
            list(launch.rejected), reshuffle=False
        ).with_output_types(dict[str, Any])
        failed = (failed, rejected) | "AllFailed" >> beam.Flatten()
    _ = (
        done
        | "DoneJson" >> beam.Map(_to_json)
        | _write_lines("WriteDone", outputs.done, outputs.num_shards)
    )
    _ = (
        failed
        | "FailedJson" >> beam.Map(_to_json)
        | _write_lines("WriteFailed", outputs.failed, outputs.num_shards)
    )
    summary = (
        (done, failed)
        | "All" >> beam.Flatten()
        | "Summarize" >> beam.CombineGlobally(SummaryFn(launch.command))
    )
    _ = (
        summary
        | "SummaryJson" >> beam.Map(_summary_json)
        | "WriteSummary"
        >> beam.io.WriteToText(
            outputs.summary, file_name_suffix=".json", num_shards=1, shard_name_template=""
        )
    )
    return {DONE_TAG: done, FAILED_TAG: failed, "summary": summary}
