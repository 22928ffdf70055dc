r"""estimator-fix over many model directories as an Apache Beam pipeline (estimator_fix.beam).

Needs the `beam` extra: pip install 'estimator-fix[beam]' (for gs:// results or Dataflow:
pip install 'apache-beam[gcp]==2.77.0' too).

Usage:
  tools/beam_fleet.py --command=scan|repair|fix
      (--model_dirs=GLOB|@list.txt | --manifest=jobs.jsonl) --results=PREFIX
      [per-directory flags] [--num_shards=N] [--json] [--keep_attempts] [Beam pipeline options]

  Per-directory flags (the defaults of every job; a manifest line overrides them), as for
  `estimator-fix <command>`: --checkpoint --step --output_dir --drop_renamed --dry_run
  --estimator --model_fn --params --serving_input_fn --serving_features --serving_format
  --export_dir --mode --as_text --assets_extra --inputs --tolerance. export_dir and output_dir
  may contain {name}, the model directory's basename.

  Every other --flag is a Beam pipeline option and is handed to PipelineOptions unchanged:
    locally (the default when no --runner is given: multi_processing on every core; a scan,
    which never imports TensorFlow, runs in_memory, cheaper than starting worker processes)
      --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=4
    The DirectRunner runs as its FnApiRunner, which honours those two options (Beam's
    DirectRunner would first try Prism, a binary it downloads, that runs the work in this
    process); --runner=PrismRunner asks for Prism.
    on Dataflow (workers need estimator-fix and its dependencies: --extra_package=a wheel of
    this project (`pip wheel --no-deps .`) plus --requirements_file, or --sdk_container_image)
      --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \
      --results=gs://B/runs/run1 --model_dirs='gs://B/models/*'
    on Flink or Spark: --runner=FlinkRunner --flink_master=HOST:PORT, --runner=SparkRunner ...
  A flag that is neither this tool's nor a Beam option is a usage error (exit code 2). This
  tool's --dry_run is the job's; Beam's own --dry_run option cannot be passed through.

Why absl: the flags are this project's absl flags, parsed with known_only=True; what absl does
not know is left, in order, for Beam's argparse-based PipelineOptions. The two sets of names
do not overlap except --dry_run (ours).

What it writes (PREFIX may be local or gs://; existing files of the same names are replaced):
  PREFIX-done.jsonl      one JSON line per directory whose status is done (estimator-fix.result/1,
                         the fields the fleet's --results journal has)
  PREFIX-failed.jsonl    the dead-letter output: one line per directory that failed (and per bad
                         manifest line or duplicate directory, rejected at launch)
  PREFIX-summary.json    counts by status, verdict and exit code (estimator-fix.beam-summary/1)
  PREFIX-attempts/<run>/ attempt records that make retried bundles replay instead of redoing
                         repair/fix work; removed when the pipeline succeeded
  With --num_shards=0 the runner picks the sharding: PREFIX-done-00000-of-00004.jsonl, ...
  The summary table (or with --json the summary document) goes to stdout.

Exit codes:
  0  every directory done; for scan: every directory healthy
  1  the pipeline itself failed (the runner's error on stderr), or its summary is unreadable
  2  usage error (a wrong, missing or unknown flag; a glob that matches nothing)
  3  scan: no directory failed, some are repairable
  4  scan: no directory failed, some are unrepairable
  9  some directory failed (see PREFIX-failed.jsonl)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging as std_logging
import os
import sys
import time
from collections.abc import Sequence

from absl import app, flags, logging

from estimator_fix import errors, fleet, tfenv
from estimator_fix.cli import jobflags
from estimator_fix.options import FLEET_COMMANDS, Job
from estimator_fix.storage import fs

PROG = "beam_fleet"

_COMMAND = flags.DEFINE_enum("command", None, list(FLEET_COMMANDS), "The work per directory.")
_RESULTS = flags.DEFINE_string(
    "results", None, "Output prefix: PREFIX-done.jsonl, PREFIX-failed.jsonl, PREFIX-summary.json."
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 1, "Files per results output; 0 lets the runner decide.", lower_bound=0
)
_KEEP_ATTEMPTS = flags.DEFINE_boolean(
    "keep_attempts", False, "Keep PREFIX-attempts/<run>/ after a successful run."
)

flags.mark_flag_as_required("command")
flags.mark_flag_as_required("results")
flags.mark_flags_as_mutual_exclusive(["model_dirs", "manifest"], required=True)


@dataclasses.dataclass(frozen=True)
class Options:
    """The flags, read once in ``main``."""

    template: Job  # the per-directory defaults; model_dir empty
    model_dirs: str | None
    manifest: str | None
    results: str
    num_shards: int
    json: bool
    keep_attempts: bool
    beam_args: tuple[str, ...]  # everything absl did not know, for PipelineOptions


def _options(beam_args: Sequence[str]) -> Options:
    command = str(_COMMAND.value)  # required
    every = set(jobflags.REPAIR_FLAGS + jobflags.EXPORT_FLAGS)
    for name in sorted(every - set(jobflags.FLEET_COMMAND_FLAGS[command])):
        if flags.FLAGS[name].present:
            raise errors.UsageError(f"--{name} is not a flag of `{command}`")
    template = jobflags.job_template(command)
    if jobflags.MANIFEST.value is None:  # else each line brings its own
        template.validate(template=True)
    return Options(
        template=template,
        model_dirs=jobflags.MODEL_DIRS.value,
        manifest=jobflags.MANIFEST.value,
        results=_results_prefix(str(_RESULTS.value)),
        num_shards=_NUM_SHARDS.value,
        json=jobflags.JSON.value,
        keep_attempts=_KEEP_ATTEMPTS.value,
        beam_args=tuple(beam_args),
    )


def _results_prefix(prefix: str) -> str:
    """Local prefixes made absolute: a runner's workers need not share our working directory."""
    if not prefix or prefix.endswith("/"):
        raise errors.UsageError(
            f"--results={prefix!r}: needs a file name prefix, e.g. /out/run1 (writes "
            "/out/run1-done.jsonl, /out/run1-failed.jsonl, /out/run1-summary.json)"
        )
    return fs.normalize(prefix)


# --- Beam's options ---------------------------------------------------------------------------


def _check_beam_args(args: Sequence[str]) -> None:
    """Rejects what Beam would silently drop: stray words and options it does not know."""
    from apache_beam.options.pipeline_options import PipelineOptions

    for i, arg in enumerate(args):
        takes_value = i > 0 and args[i - 1].startswith("--") and "=" not in args[i - 1]
        if not arg.startswith("-") and not takes_value:
            raise errors.UsageError(
                f"unexpected argument {arg!r}; flags take the form --name=value"
            )
    known = set(PipelineOptions([]).get_all_options())
    given = set(PipelineOptions(list(args)).get_all_options(retain_unknown_options=True))
    unknown = sorted(given - known)
    if unknown:
        raise errors.UsageError(
            f"unknown flag{'s' if len(unknown) > 1 else ''} "
            f"{', '.join('--' + u for u in unknown)}: neither this tool's nor a Beam pipeline "
            f"option (see `{PROG} --helpfull` and Beam's pipeline options)"
        )


# --- running ----------------------------------------------------------------------------------


def _jobs(opts: Options) -> list[Job | fleet.BadLine]:
    if opts.manifest is not None:
        return list(fleet.read_manifest(opts.manifest, opts.template))
    assert opts.model_dirs is not None
    return list(fleet.jobs_for_dirs(fleet.expand_model_dirs(opts.model_dirs), opts.template))


def _remove_attempts(attempts_dir: str) -> None:
    """Best effort: the records are useless once the pipeline succeeded."""
    try:
        if fs.exists(attempts_dir):
            fs.rmtree(attempts_dir)
        parent = fs.dirname(attempts_dir)
        if not fs.has_scheme(parent) and os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)
    except (errors.Error, OSError) as e:
        logging.warning("%s: could not remove %s (%s)", PROG, attempts_dir, e)


def run(opts: Options) -> int:
    """Builds and runs the pipeline, waits for it, prints the summary; returns the exit code.

    Raises:
      errors.UsageError: bad flags, a glob that matches nothing, an unreadable manifest.
      errors.Error: the summary cannot be read after the run.
      RuntimeError and the runner's own errors: the pipeline failed.
    """
    from apache_beam.runners.runner import PipelineState

    from estimator_fix import beam as fleet_beam

    _check_beam_args(opts.beam_args)
    outputs = fleet_beam.outputs_for(opts.results, num_shards=opts.num_shards)
    jobs = _jobs(opts)
    pipeline = fleet_beam.new_pipeline(
        fleet_beam.with_local_defaults(
            opts.beam_args, workers=fleet.default_workers(), command=opts.template.command
        )
    )
    attempts_dir = fleet_beam.new_attempts_dir(opts.results)
    start = time.monotonic()
    fleet_beam.build_pipeline(pipeline, jobs, outputs, attempts_dir=attempts_dir)
    state = pipeline.run().wait_until_finish()
    seconds = time.monotonic() - start
    if state != PipelineState.DONE:
        raise RuntimeError(f"the pipeline ended in state {state}, not DONE")
    if not opts.keep_attempts:
        _remove_attempts(attempts_dir)
    summary = fleet_beam.fleet_summary(
        fleet_beam.read_summary(outputs),
        seconds=seconds,
        workers=fleet_beam.workers_of(pipeline.options),
    )
    files = {"done": outputs.done, "failed": outputs.failed, "summary": outputs.summary_file}
    if opts.num_shards == 1:
        files.update(done=outputs.done_file, failed=outputs.failed_file)
    if opts.json:
        json.dump({**summary.to_dict(), "outputs": files}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(summary.table() + "\n")
        sys.stdout.write("".join(f"{k}: {v}\n" for k, v in files.items()))
    sys.stdout.flush()
    return summary.exit_code


def main(argv: Sequence[str]) -> None:
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        sys.stderr.write(
            f"{PROG}: error: apache_beam is not installed; pip install 'estimator-fix[beam]'\n"
        )
        sys.exit(errors.EXIT_USAGE)
    try:
        code = run(_options(argv[1:]))
    except errors.Error as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        code = e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(
            f"{PROG}: interrupted; no results were written. Directories already repaired stay "
            "repaired, and a new run finds them healthy\n"
        )
        code = 130
    except Exception as e:  # the runner's failure: one line, the runner logged the details
        message = errors.one_line(e, limit=2000)
        sys.stderr.write(f"{PROG}: error: the pipeline failed: {type(e).__name__}: {message}\n")
        code = errors.EXIT_BAD_INPUT
    sys.exit(code)


if __name__ == "__main__":
    tfenv.quiet_tensorflow()
    # Beam without its [gcp] extra warns on import that BigQuery is unavailable (not used here);
    # it logs every stage at INFO and relays each worker's start-up warnings.
    std_logging.getLogger().addFilter(lambda r: not str(r.msg).startswith("apitools not found"))
    std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)
    std_logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
        std_logging.ERROR
    )
    app.run(main, flags_parser=functools.partial(jobflags.parse_flags, prog=PROG, known_only=True))
