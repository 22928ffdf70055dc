"""estimator-fix: take a broken legacy tf.estimator model directory to a verified SavedModel.

Usage:
  estimator-fix scan   --model_dir=DIR [--checkpoint=PREFIX] [--json]
  estimator-fix repair --model_dir=DIR [--checkpoint=PREFIX] [--step=N] [--output_dir=DIR2]
                       [--drop_renamed] [--dry_run] [--json]
  estimator-fix export --model_dir=DIR --export_dir=BASE (--serving_input_fn=SPEC |
                       --serving_features=spec.json [--serving_format=example|raw])
                       (--estimator=SPEC | --model_fn=SPEC [--params=JSON|@file.json])
                       [--checkpoint=PREFIX] [--as_text] [--assets_extra=DEST=FILE ...]
                       [--mode=predict|eval|train] [--json]
  estimator-fix verify --export_dir=SAVED_MODEL [--inputs=file.json|file.npz]
                       [--model_dir=DIR (--estimator=SPEC | --model_fn=SPEC) [--checkpoint=PREFIX]]
                       [--tolerance=1e-5] [--json]
  estimator-fix fix    --model_dir=DIR --export_dir=BASE --serving_input_fn=SPEC
                       (--estimator=SPEC | --model_fn=SPEC) [--step=N] [--output_dir=DIR2]
                       [--inputs=...] [--dry_run] [--json]
  Many directories (scan, repair, fix): --model_dirs=GLOB or --model_dirs=@list.txt instead of
  --model_dir, or for fix --manifest=jobs.jsonl (one JSON object per directory: model_dir,
  estimator, serving_input_fn, export_dir, step, ...; the command line's flags are defaults);
  [--workers=N] [--results=results.jsonl] [--resume]. export_dir and output_dir may contain
  {name}, the model directory's basename.
  (also: python -m estimator_fix COMMAND ...; --flagfile=FILE reads flags from a file)
  SPEC is package.module:attribute or path/to/file.py:attribute. --estimator names an
  Estimator or a function taking model_dir and returning one.

Commands:
  scan    Say what is wrong with the model directory: the `checkpoint` state file, every
          checkpoint on disk (format, tensors, bytes, data shards, index checksums) and the
          global_step with every piece of evidence for its value. Reads files only; never
          imports TensorFlow except for V1-format checkpoints.
  repair  Give the target checkpoint an int64 `global_step` and make the state file name it.
          The step comes from, in order: --step; the value of a renamed or retyped step key;
          an optimizer iteration counter; the -N suffix of the prefix. Evidence that disagrees,
          or none at all, is refused: pass --step. The model's tensors are not copied: the new
          checkpoint hard-links the original data files and gets a new index.
  export  Pre-flight the model code against the checkpoint (every key, dtype and shape the
          export restores), then the real Estimator.export_saved_model with that exact
          checkpoint. The Estimator is built over a scratch model_dir: nothing is written into
          the model directory.
  verify  Load the SavedModel in a fresh graph, check its signatures and global_step, run it
          on the given inputs or on inputs synthesized from its signature and, with the model,
          compare with Estimator.predict on the checkpoint (max abs difference per output).
  fix     scan -> plan -> pre-flight -> repair (only if needed) -> export -> verify, one report.
          Everything that can refuse runs before the first write. A SavedModel that fails
          verification is renamed rejected-<version> so that Serving never loads it.

Before and after `repair` (the original files are never modified, renamed or deleted):
  model_dir/                           model_dir/
    checkpoint -> /home/alice/..-200     checkpoint -> model.ckpt-fixed-200 (relative path)
    model.ckpt-200.index                 checkpoint.bak-<UTC time>   (the old state file)
    model.ckpt-200.data-00000-of-00001   model.ckpt-200.index, .data-00000-of-00001 (as they were)
                                         model.ckpt-fixed-200.index  (new: + int64 global_step)
                                         model.ckpt-fixed-200.data-00000-of-00002 (hard link)
                                         model.ckpt-fixed-200.data-00001-of-00002 (the step)
  With --output_dir=DIR2 the repaired checkpoint (model.ckpt-200) and its state file go to DIR2
  instead and the source is not written at all.

Exit codes:
  0  success; for scan: the directory is healthy
  1  bad input (a missing, unreadable, truncated or garbage file); nothing was written
  2  usage error (a wrong or missing flag)
  3  scan: problems found that `repair` can fix
  4  problems this tool cannot repair (the report says why)
  5  step evidence missing or conflicting: pass --step
  6  another repair holds the directory's lock
  7  a write failed (disk full, permission); originals untouched, temporaries removed
  8  export or verification failed
  9  a fleet run in which some directory failed (each directory's result says why)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from estimator_fix import errors, report
from estimator_fix.cli import jobflags
from estimator_fix.export import parse_assets_extra
from estimator_fix.model_code.serving import ServingSpec
from estimator_fix.model_code.userspec import ModelSpec, parse_params
from estimator_fix.scan import scan
from estimator_fix.types import ScanReport, Verdict

PROG = "estimator-fix"
_INT64_MAX = 2**63 - 1

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The model directory to work on.")
_WORKERS = flags.DEFINE_integer(
    "workers",
    None,
    "Parallel worker processes for many directories (default: the cores).",
    lower_bound=1,
)
_RESULTS = flags.DEFINE_string(
    "results", None, "Append one JSON line per directory here (the --resume journal)."
)
_RESUME = flags.DEFINE_boolean(
    "resume", False, "With --results: skip directories whose last result says done."
)

flags.mark_flags_as_mutual_exclusive(["model_dir", "model_dirs", "manifest"])

_COMMON = ("model_dir", "checkpoint", "json")
_FLEET = ("model_dirs", "workers", "results", "resume")
_MODEL = ("estimator", "model_fn", "params")
_SERVING = ("serving_input_fn", "serving_features", "serving_format")
_COMMAND_FLAGS: dict[str, tuple[str, ...]] = {
    "scan": (*_COMMON, *_FLEET),
    "repair": (*_COMMON, *_FLEET, "step", "output_dir", "dry_run", "drop_renamed"),
    "export": (*_COMMON, "export_dir", *_SERVING, *_MODEL, "as_text", "assets_extra", "mode"),
    "verify": (*_COMMON, "export_dir", *_MODEL, "inputs", "tolerance"),
    "fix": (
        *_COMMON,
        *_FLEET,
        "manifest",
        "export_dir",
        *_SERVING,
        *_MODEL,
        "as_text",
        "assets_extra",
        "mode",
        "step",
        "output_dir",
        "dry_run",
        "drop_renamed",
        "inputs",
        "tolerance",
    ),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "scan": ("model_dir",),
    "repair": ("model_dir",),
    "export": ("model_dir", "export_dir"),
    "verify": ("export_dir",),
    "fix": ("model_dir", "export_dir"),
}
_OUR_FLAGS = tuple(sorted({f for fs in _COMMAND_FLAGS.values() for f in fs}))


@dataclasses.dataclass(frozen=True)
class Options:
    """The flags, read once in ``main``; library code never reads FLAGS."""

    command: str
    model_dir: str | None
    checkpoint: str | None
    json: bool
    step: int | None
    output_dir: str | None
    dry_run: bool
    drop_renamed: bool
    export_dir: str | None
    serving: ServingSpec
    model: ModelSpec
    as_text: bool
    assets_extra: dict[str, str] | None
    mode: str
    inputs: str | None
    tolerance: float
    model_dirs: str | None = None
    manifest: str | None = None
    workers: int | None = None
    results: str | None = None
    resume: bool = False


def _options(command: str) -> Options:
    jobflags.check_pairs()
    return Options(
        command=command,
        model_dir=_MODEL_DIR.value,
        checkpoint=jobflags.CHECKPOINT.value,
        json=jobflags.JSON.value,
        step=jobflags.STEP.value,
        output_dir=jobflags.OUTPUT_DIR.value,
        dry_run=jobflags.DRY_RUN.value,
        drop_renamed=jobflags.DROP_RENAMED.value,
        export_dir=jobflags.EXPORT_DIR.value,
        serving=ServingSpec(
            input_fn=jobflags.SERVING_INPUT_FN.value,
            features=jobflags.SERVING_FEATURES.value,
            format=jobflags.SERVING_FORMAT.value or "example",
        ),
        model=ModelSpec(
            estimator=jobflags.ESTIMATOR.value,
            model_fn=jobflags.MODEL_FN.value,
            params=parse_params(jobflags.PARAMS.value),
        ),
        as_text=jobflags.AS_TEXT.value,
        assets_extra=parse_assets_extra(jobflags.ASSETS_EXTRA.value),
        mode=jobflags.MODE.value or "predict",
        inputs=jobflags.INPUTS.value,
        tolerance=1e-5 if jobflags.TOLERANCE.value is None else jobflags.TOLERANCE.value,
        model_dirs=jobflags.MODEL_DIRS.value,
        manifest=jobflags.MANIFEST.value,
        workers=_WORKERS.value,
        results=_RESULTS.value,
        resume=_RESUME.value,
    )


def _check_model_flags(command: str) -> None:
    has_model = jobflags.ESTIMATOR.value is not None or jobflags.MODEL_FN.value is not None
    has_serving = (
        jobflags.SERVING_INPUT_FN.value is not None or jobflags.SERVING_FEATURES.value is not None
    )
    if command in ("export", "fix"):
        if not has_model:
            raise _usage_error(f"`{command}` needs --estimator or --model_fn")
        if not has_serving:
            raise _usage_error(f"`{command}` needs --serving_input_fn or --serving_features")
    if command == "verify" and has_model != (_MODEL_DIR.value is not None):
        raise _usage_error(
            "`verify` compares with the checkpoint only given both --model_dir and "
            "--estimator/--model_fn"
        )


def _usage_error(message: str) -> errors.UsageError:
    return errors.UsageError(f"{message} (see `{PROG} --help`)")


def _check_flags(argv: Sequence[str]) -> str:
    if len(argv) < 2:
        raise _usage_error(f"name a command: {', '.join(_COMMAND_FLAGS)}")
    command = argv[1]
    if command not in _COMMAND_FLAGS:
        raise _usage_error(f"unknown command {command!r}; commands: {', '.join(_COMMAND_FLAGS)}")
    if len(argv) > 2:
        raise _usage_error(f"unexpected argument {argv[2]!r}; flags take the form --name=value")
    allowed = _COMMAND_FLAGS[command]
    for name in _OUR_FLAGS:
        if flags.FLAGS[name].present and name not in allowed:
            raise _usage_error(f"--{name} is not a flag of `{command}`")
    fleet = jobflags.MODEL_DIRS.value is not None or jobflags.MANIFEST.value is not None
    if not fleet:
        for name in ("workers", "results", "resume"):
            if flags.FLAGS[name].present:
                raise _usage_error(f"--{name} goes with --model_dirs or --manifest")
    elif _RESUME.value and not _RESULTS.value:
        raise _usage_error("--resume needs --results, the file that says what is done")
    for name in _REQUIRED[command]:
        if fleet and (name == "model_dir" or jobflags.MANIFEST.value is not None):
            continue  # each directory (or manifest line) brings its own
        if flags.FLAGS[name].value in (None, ""):
            needs = "--model_dir or --model_dirs" if name == "model_dir" else f"--{name}"
            raise _usage_error(f"`{command}` needs {needs}")
    if jobflags.MANIFEST.value is None:
        _check_model_flags(command)
    return command


def _run_scan(opts: Options) -> int:
    assert opts.model_dir is not None
    result = scan(opts.model_dir, checkpoint=opts.checkpoint)
    _emit(opts, result.to_dict(), report.scan_text(result))
    return _scan_exit_code(result)


def _scan_exit_code(result: ScanReport) -> int:
    return {
        Verdict.HEALTHY: errors.EXIT_OK,
        Verdict.REPAIRABLE: errors.EXIT_REPAIRABLE,
        Verdict.UNREPAIRABLE: errors.EXIT_UNREPAIRABLE,
    }[result.verdict]


def _run_repair(opts: Options) -> int:
    from estimator_fix import plan as plan_lib
    from estimator_fix import repair as repair_lib

    assert opts.model_dir is not None
    scanned = scan(opts.model_dir, checkpoint=opts.checkpoint)
    the_plan = plan_lib.plan(
        scanned, step=opts.step, output_dir=opts.output_dir, drop_renamed=opts.drop_renamed
    )
    if opts.dry_run or the_plan.is_noop:
        _emit(opts, the_plan.to_dict(), report.plan_text(the_plan))
        return errors.EXIT_OK
    result = repair_lib.repair(the_plan)
    _emit(opts, result.to_dict(), report.repair_text(result))
    return errors.EXIT_OK


def _run_export(opts: Options) -> int:
    from estimator_fix import export as export_lib
    from estimator_fix import fix as fix_lib

    assert opts.model_dir is not None and opts.export_dir is not None
    base = export_lib.check_export_base(opts.export_dir)
    scanned = scan(opts.model_dir, checkpoint=opts.checkpoint)
    assert scanned.target is not None
    loaded = fix_lib.load_model(opts.model, opts.serving)
    try:
        result = export_lib.export(
            loaded.estimator,
            loaded.serving_input_fn,
            base,
            scanned.target,
            mode=opts.mode,
            as_text=opts.as_text,
            assets_extra=opts.assets_extra,
        )
    finally:
        shutil.rmtree(loaded.scratch_dir, ignore_errors=True)
    _emit(opts, result.to_dict(), report.export_text(result))
    return errors.EXIT_OK


def _run_verify(opts: Options) -> int:
    from estimator_fix import fix as fix_lib
    from estimator_fix import verify as verify_lib

    assert opts.export_dir is not None
    saved_model = verify_lib.resolve_saved_model(opts.export_dir)
    inputs = verify_lib.load_inputs(opts.inputs) if opts.inputs else None
    estimator = None
    checkpoint = None
    scratch = None
    if opts.model_dir is not None:
        scanned = scan(opts.model_dir, checkpoint=opts.checkpoint)
        checkpoint = scanned.target
        loaded = fix_lib.load_model(opts.model, None)
        estimator, scratch = loaded.estimator, loaded.scratch_dir
    try:
        result = verify_lib.verify(
            saved_model,
            inputs=inputs,
            inputs_source=f"file:{opts.inputs}" if opts.inputs else "synthesized",
            estimator=estimator,
            checkpoint_path=checkpoint,
            tolerance=opts.tolerance,
        )
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    _emit(opts, result.to_dict(), report.verify_text(result))
    return errors.EXIT_OK if result.ok else errors.EXIT_EXPORT_FAILED


def _run_fix(opts: Options) -> int:
    from estimator_fix import fix as fix_lib

    assert opts.model_dir is not None and opts.export_dir is not None
    result = fix_lib.fix(
        fix_lib.FixOptions(
            model_dir=opts.model_dir,
            model=opts.model,
            serving=opts.serving,
            export_dir=opts.export_dir,
            checkpoint=opts.checkpoint,
            step=opts.step,
            output_dir=opts.output_dir,
            drop_renamed=opts.drop_renamed,
            dry_run=opts.dry_run,
            mode=opts.mode,
            as_text=opts.as_text,
            assets_extra=opts.assets_extra,
            inputs=opts.inputs,
            tolerance=opts.tolerance,
        )
    )
    _emit(opts, result.to_dict(), report.fix_text(result))
    return errors.EXIT_OK


def _run_fleet(opts: Options) -> int:
    from estimator_fix import fleet

    template = jobflags.job_template(opts.command)
    if opts.manifest is not None:
        jobs: list[fleet.Job | fleet.BadLine] = list(fleet.read_manifest(opts.manifest, template))
    else:
        assert opts.model_dirs is not None
        jobs = list(fleet.jobs_for_dirs(fleet.expand_model_dirs(opts.model_dirs), template))
    summary = fleet.run_fleet(
        jobs,
        workers=opts.workers or fleet.default_workers(),
        results_path=opts.results,
        resume=opts.resume,
        progress=fleet.progress_for(sys.stderr),
    )
    _emit(opts, summary.to_dict(), summary.table())
    return summary.exit_code


_COMMANDS: dict[str, Callable[[Options], int]] = {
    "scan": _run_scan,
    "repair": _run_repair,
    "export": _run_export,
    "verify": _run_verify,
    "fix": _run_fix,
}


def _emit(opts: Options, doc: dict[str, Any], text: str) -> None:
    if opts.json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _fail(error: errors.Error, *, as_json: bool) -> int:
    if as_json:
        json.dump(
            {
                "error": {
                    "type": type(error).__name__,
                    "exit_code": error.exit_code,
                    "message": str(error),
                    "path": error.path,
                }
            },
            sys.stdout,
        )
        sys.stdout.write("\n")
    sys.stderr.write(f"{PROG}: error: {error}\n")
    return error.exit_code


def main(argv: Sequence[str]) -> None:
    as_json = bool(jobflags.JSON.value)
    try:
        command = _check_flags(argv)
        opts = _options(command)
        fleet_mode = opts.model_dirs is not None or opts.manifest is not None
        code = (_run_fleet if fleet_mode else _COMMANDS[command])(opts)
    except errors.Error as e:
        code = _fail(e, as_json=as_json)
    except KeyboardInterrupt:
        if jobflags.MODEL_DIRS.value is not None or jobflags.MANIFEST.value is not None:
            sys.stderr.write(
                f"{PROG}: interrupted; finished directories are in --results, rerun with --resume\n"
            )
        else:
            sys.stderr.write(f"{PROG}: interrupted; nothing was committed\n")
        code = 130
    sys.exit(code)


def run() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow's and Keras' deprecation notices would bury the one line that matters.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow).*")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*is deprecated")
    # absl prints the __main__ module's docstring for --help.
    sys.modules["__main__"].__doc__ = __doc__
    app.run(main, flags_parser=functools.partial(jobflags.parse_flags, prog=PROG))
