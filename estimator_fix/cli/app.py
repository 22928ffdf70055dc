"""estimator-fix: take a broken legacy tf.estimator model directory to a verified SavedModel.

Usage:
  estimator-fix scan   --model_dir=DIR [--checkpoint=PREFIX] [--deep] [--json]
  estimator-fix repair --model_dir=DIR [--checkpoint=PREFIX] [--step=N] [--output_dir=DIR2]
                       [--drop_renamed] [--deep] [--dry_run] [--json]
  estimator-fix export --model_dir=DIR --export_dir=BASE (--serving_input_fn=SPEC |
                       --serving_features=spec.json [--serving_format=example|raw])
                       (--estimator=SPEC | --model_fn=SPEC [--params=JSON|@file.json])
                       [--checkpoint=PREFIX] [--as_text] [--assets_extra=DEST=FILE ...]
                       [--mode=predict|eval|train] [--timeout=600] [--json]
  estimator-fix verify --export_dir=SAVED_MODEL [--inputs=file.json|file.npz]
                       [--model_dir=DIR (--estimator=SPEC | --model_fn=SPEC) [--checkpoint=PREFIX]]
                       [--tolerance=1e-5] [--timeout=600] [--runtime=PYTHON] [--json]
  estimator-fix fix    --model_dir=DIR --export_dir=BASE --serving_input_fn=SPEC
                       (--estimator=SPEC | --model_fn=SPEC) [--step=N] [--output_dir=DIR2]
                       [--inputs=...] [--map=OLD=NEW ... | --map_file=map.json]
                       [--allow_unmatched] [--timeout=600] [--dry_run] [--json]
  estimator-fix rename --model_dir=DIR [--checkpoint=PREFIX] (--map=OLD=NEW ... |
                       --map_file=map.json | --regex=PATTERN --replacement=REPL) [--drop=REGEX]
                       [--allow_unmatched] [--output_dir=DIR2] [--dry_run] [--json]
  estimator-fix migrate --model_dir=DIR --to=v2-canned|ema|tf2-object [--checkpoint=PREFIX]
                       [--output_dir=DIR2] [--dry_run] [--json]
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
          --runtime=PYTHON runs it on the same inputs in that interpreter too (say the
          TensorFlow 2.21 one that serves it) and compares the outputs.
  fix     scan -> plan -> pre-flight -> repair (only if needed) -> export -> verify, one report.
          Everything that can refuse runs before the first write. A SavedModel that fails
          verification is renamed rejected-<version> so that Serving never loads it.
          With --map/--map_file the checkpoint's keys are renamed first (as `rename`), so a
          model whose code was refactored exports in one command; the pre-flight checks the
          model code against the renamed keys. A pre-flight that finds likely renames prints
          them as a ready map.json (never applied unless passed).
  rename  Rename (and --drop) checkpoint keys without reading or copying a tensor byte: a new
          index with the new names pointing at the same data (shard, offset, size, crc32c),
          the data files hard-linked. OLD may be a key or a scope (every key under OLD/); a
          map.json is one JSON object, old key -> new key. A partitioned variable's slices
          follow its full name. Refused, with nothing written: two keys mapped to one, a new
          name another kept key has, an entry that matches nothing (unless
          --allow_unmatched), a slice named apart from its full name, global_step renamed or
          dropped. TensorFlow reads the result back before the state file names it.
  migrate Rename a legacy checkpoint's keys to what newer code restores (--to=v2-canned:
          tf.compat.v1 canned -> tf.estimator canned; ema: serve the moving averages;
          tf2-object: a checkpoint tf.train.Checkpoint restores), with `rename`'s commit.

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

Before and after `rename --map=dnn=tower` (the original files are never modified):
  model_dir/                           model_dir/
    checkpoint -> model.ckpt-200         checkpoint -> model.ckpt-renamed-200
    model.ckpt-200.index                 checkpoint.bak-<UTC time>   (the old state file)
    model.ckpt-200.data-00000-of-00001   model.ckpt-200.index, .data-00000-of-00001 (as they were)
                                         model.ckpt-renamed-200.index (new: dnn/... -> tower/...)
                                         model.ckpt-renamed-200.data-00000-of-00001 (hard link)
  With --output_dir=DIR2: DIR2/model.ckpt-200.* and DIR2/checkpoint; the source is not written.

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

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from estimator_fix import errors, report, tfenv
from estimator_fix.cli import jobflags
from estimator_fix.model_code.deadline import check_timeout
from estimator_fix.options import Job
from estimator_fix.scan import scan

PROG = "estimator-fix"
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
    "scan": (*_COMMON, *_FLEET, "deep"),
    "repair": (*_COMMON, *_FLEET, "deep", "step", "output_dir", "dry_run", "drop_renamed"),
    "export": (
        *_COMMON,
        "export_dir",
        *_SERVING,
        *_MODEL,
        "as_text",
        "assets_extra",
        "mode",
        "timeout",
    ),
    "verify": (*_COMMON, "export_dir", *_MODEL, "inputs", "tolerance", "timeout", "runtime"),
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
        "timeout",
        "map",
        "map_file",
        "allow_unmatched",
    ),
    "rename": (
        *_COMMON,
        "map",
        "map_file",
        "regex",
        "replacement",
        "drop",
        "allow_unmatched",
        "output_dir",
        "dry_run",
    ),
    "migrate": (*_COMMON, "to", "output_dir", "dry_run"),
}
_OUR_FLAGS = tuple(sorted({f for fs in _COMMAND_FLAGS.values() for f in fs}))


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
    return command


def _run_scan(opts: Job) -> int:
    result = scan(opts.model_dir, checkpoint=opts.checkpoint, deep=opts.deep)
    _emit(result.to_dict(), report.scan_text(result))
    return result.verdict.exit_code


def _run_repair(opts: Job) -> int:
    from estimator_fix import repair as repair_lib

    scanned = scan(opts.model_dir, checkpoint=opts.checkpoint, deep=opts.deep)
    the_plan = repair_lib.prepare(scanned, opts)
    if opts.dry_run or the_plan.is_noop:
        _emit(the_plan.to_dict(), report.plan_text(the_plan))
        return errors.EXIT_OK
    result = repair_lib.repair(the_plan)
    _emit(result.to_dict(), report.repair_text(result))
    return errors.EXIT_OK


def _run_export(opts: Job) -> int:
    from estimator_fix import export as export_lib
    from estimator_fix.model_code.build import load_model

    assert opts.export_dir is not None
    base = export_lib.check_export_base(opts.export_dir)
    scanned = scan(opts.model_dir, checkpoint=opts.checkpoint)
    assert scanned.target is not None
    timeout = check_timeout(opts.timeout)
    loaded = load_model(opts.model, opts.serving, timeout=timeout)
    try:
        result = export_lib.export(
            loaded.estimator,
            loaded.serving_input_fn,
            base,
            scanned.target,
            mode=opts.mode,
            as_text=opts.as_text,
            assets_extra=opts.assets_extra,
            timeout=timeout,
        )
    finally:
        loaded.close()
    _emit(result.to_dict(), report.export_text(result))
    return errors.EXIT_OK


def _run_verify(opts: Job) -> int:
    from estimator_fix import verify as verify_lib
    from estimator_fix.model_code.build import LoadedModel, load_model

    assert opts.export_dir is not None
    saved_model = verify_lib.resolve_saved_model(opts.export_dir)
    inputs = verify_lib.load_inputs(opts.inputs) if opts.inputs else None
    estimator = None
    checkpoint = None
    loaded: LoadedModel | None = None
    if opts.model_dir:
        scanned = scan(opts.model_dir, checkpoint=opts.checkpoint)
        checkpoint = scanned.target
        loaded = load_model(opts.model, None, timeout=check_timeout(opts.timeout))
        estimator = loaded.estimator
    try:
        result = verify_lib.verify(
            saved_model,
            inputs=inputs,
            inputs_source=f"file:{opts.inputs}" if opts.inputs else "synthesized",
            estimator=estimator,
            checkpoint_path=checkpoint,
            tolerance=opts.tolerance,
            timeout=check_timeout(opts.timeout),
            runtime=jobflags.RUNTIME.value,
        )
    finally:
        if loaded is not None:
            loaded.close()
    _emit(result.to_dict(), report.verify_text(result))
    return errors.EXIT_OK if result.ok else errors.EXIT_EXPORT_FAILED


def _run_fix(opts: Job) -> int:
    from estimator_fix import fix as fix_lib

    result = fix_lib.fix(opts)
    _emit(result.to_dict(), report.fix_text(result))
    return errors.EXIT_OK


def _run_rename(opts: Job) -> int:
    from estimator_fix import surgery
    from estimator_fix.surgery.rules import edit_from_rules

    scanned = scan(opts.model_dir, checkpoint=opts.checkpoint)
    edit = edit_from_rules(
        surgery.surgery_index(scanned),
        mapping=opts.rename_map,
        regex=opts.rename_regex,
        replacement=opts.rename_replacement,
        drop=opts.drop,
        allow_unmatched=opts.allow_unmatched,
    )
    result = surgery.apply(scanned, edit, output_dir=opts.output_dir, dry_run=opts.dry_run)
    _emit(result.to_dict(), report.surgery_text(result))
    return errors.EXIT_OK


def _run_migrate(opts: Job) -> int:
    from estimator_fix import surgery

    try:
        from estimator_fix.migrate import plan_migration  # type: ignore[import-not-found,attr-defined,unused-ignore]
    except ImportError as e:
        raise errors.UsageError(
            f"`migrate --to={opts.migrate_to}` is not available in this version; rename keys "
            "with `estimator-fix rename --map_file=map.json` instead"
        ) from e
    assert opts.migrate_to is not None  # Job.validate
    scanned = scan(opts.model_dir, checkpoint=opts.checkpoint)
    edit = plan_migration(scanned, to=opts.migrate_to, model_dir=opts.model_dir)
    result = surgery.apply(scanned, edit, output_dir=opts.output_dir, dry_run=opts.dry_run)
    _emit(result.to_dict(), report.surgery_text(result))
    return errors.EXIT_OK


def _run_fleet(template: Job) -> int:
    from estimator_fix import fleet
    from estimator_fix.cli.progress import progress_for

    manifest, model_dirs = jobflags.MANIFEST.value, jobflags.MODEL_DIRS.value
    if manifest is not None:
        jobs: list[Job | fleet.BadLine] = list(fleet.read_manifest(manifest, template))
    else:
        assert model_dirs is not None
        jobs = list(fleet.jobs_for_dirs(fleet.expand_model_dirs(model_dirs), template))
    summary = fleet.run_fleet(
        jobs,
        workers=_WORKERS.value or fleet.default_workers(),
        results_path=_RESULTS.value,
        resume=_RESUME.value,
        progress=progress_for(sys.stderr),
    )
    _emit(summary.to_dict(), summary.table())
    return summary.exit_code


_COMMANDS: dict[str, Callable[[Job], int]] = {
    "scan": _run_scan,
    "repair": _run_repair,
    "export": _run_export,
    "verify": _run_verify,
    "fix": _run_fix,
    "rename": _run_rename,
    "migrate": _run_migrate,
}


def _emit(doc: dict[str, Any], text: str) -> None:
    if jobflags.JSON.value:
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
        fleet_mode = jobflags.MODEL_DIRS.value is not None or jobflags.MANIFEST.value is not None
        job = jobflags.job_template(command, model_dir=_MODEL_DIR.value or "")
        if fleet_mode:
            if jobflags.MANIFEST.value is None:  # else each line brings its own
                job.validate(template=True)
            code = _run_fleet(job)
        else:
            code = _COMMANDS[command](job.validate())
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
    _exit(code)


def _exit(code: int) -> None:
    """Ends the process once everything it wrote is out.

    With TensorFlow loaded, the interpreter's own teardown (module finalizers, TF's thread
    pools) costs about a second after the last line: by now every file is closed (each write
    is a ``with`` block, temporaries are removed in ``finally``), the lock released, a fleet's
    journal closed and its workers joined. So flush the report and the logs and leave.
    Without TensorFlow (a scan) the normal exit is as fast and runs every ``atexit`` hook.
    """
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def run() -> None:
    """Console-script entry point."""
    # TensorFlow's and Keras' deprecation notices would bury the one line that matters.
    tfenv.quiet_tensorflow()
    # absl prints the __main__ module's docstring for --help.
    sys.modules["__main__"].__doc__ = __doc__
    app.run(main, flags_parser=functools.partial(jobflags.parse_flags, prog=PROG))
