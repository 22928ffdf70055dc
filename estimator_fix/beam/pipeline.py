"""The pipeline itself: Beam's options with local defaults, the runner, and ``build_pipeline``.

Create(jobs as dicts) -> Reshuffle -> ParDo(RunJobFn) -done---> <prefix>-done.jsonl
                                                      -failed-> <prefix>-failed.jsonl
          (bad manifest lines, duplicate directories) -failed-^   (the dead letters)
done + failed -> CombineGlobally(SummaryFn) --------------------> <prefix>-summary.json
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam

from estimator_fix import fleet
from estimator_fix.beam.dofn import DONE_TAG, FAILED_TAG, RunJobFn
from estimator_fix.beam.outputs import Outputs
from estimator_fix.beam.summary import SummaryFn
from estimator_fix.options import Job

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
    jobs: Sequence[Job | fleet.BadLine],
    outputs: Outputs,
    *,
    attempts_dir: str | None,
) -> dict[str, Any]:
    """Adds the fleet's work over ``jobs`` to ``pipeline``; run it with ``pipeline.run()``.

    Args:
      pipeline: a ``beam.Pipeline`` with its options (the runner among them).
      jobs: from ``fleet.jobs_for_dirs`` or ``fleet.read_manifest``; bad lines and duplicate
        directories become failed results at launch (``fleet.prepare``).
      outputs: where the results go (``outputs_for``); files there are replaced.
      attempts_dir: ``new_attempts_dir(prefix)`` for this run, so that retried bundles replay
        results instead of redoing them; None to do without (see the package docstring).

    Returns:
      The PCollections by name: ``done`` and ``failed`` (result dicts), ``summary`` (one
      summary dict).
    """
    prepared = fleet.prepare(jobs)
    needs_tf = any(j.command != "scan" and not j.dry_run for j in prepared.to_run)
    results = (
        pipeline
        # Typed, so that Beam does not infer a type from every element (seconds for 100,000).
        | "Jobs"
        >> beam.Create([j.to_dict() for j in prepared.to_run], reshuffle=False).with_output_types(
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
    if prepared.rejected:
        rejected = pipeline | "Rejected" >> beam.Create(
            [r.to_dict() for r in prepared.rejected], reshuffle=False
        ).with_output_types(dict[str, Any])
        failed = (failed, rejected) | "AllFailed" >> beam.Flatten()
    _ = (
        done
        | "DoneJson" >> beam.Map(fleet.to_line)
        | _write_lines("WriteDone", outputs.done, outputs.num_shards)
    )
    _ = (
        failed
        | "FailedJson" >> beam.Map(fleet.to_line)
        | _write_lines("WriteFailed", outputs.failed, outputs.num_shards)
    )
    summary = (
        (done, failed)
        | "All" >> beam.Flatten()
        | "Summarize" >> beam.CombineGlobally(SummaryFn(prepared.command))
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
