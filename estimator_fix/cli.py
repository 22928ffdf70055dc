"""estimator-fix: take a broken legacy tf.estimator model directory to a verified SavedModel.

Usage:
  estimator-fix scan   --model_dir=DIR [--checkpoint=PREFIX] [--json]
  estimator-fix repair --model_dir=DIR [--checkpoint=PREFIX] [--step=N] [--output_dir=DIR2]
                       [--drop_renamed] [--dry_run] [--json]
  (also: python -m estimator_fix COMMAND ...; --flagfile=FILE reads flags from a file)

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

Before and after `repair` (the original files are never modified, renamed or deleted):
  model_dir/                           model_dir/
    checkpoint  -> model.ckpt-200        checkpoint  -> model.ckpt-200-fixed-200 (relative)
    model.ckpt-200.index                 checkpoint.estimator-fix-backup-<time>
    model.ckpt-200.data-00000-of-00001   model.ckpt-200.index, .data-00000-of-00001 (as they were)
                                         model.ckpt-200-fixed-200.index (new: + global_step)
                                         model.ckpt-200-fixed-200.data-00000-of-00002 (hard link)
                                         model.ckpt-200-fixed-200.data-00001-of-00002 (the step)
  With --output_dir=DIR2 the repaired checkpoint and its state file go to DIR2 instead and the
  source is not written at all.

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
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from estimator_fix import errors, report
from estimator_fix.scan import scan
from estimator_fix.types import ScanReport, Verdict

PROG = "estimator-fix"
_INT64_MAX = 2**63 - 1

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The model directory to work on.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Checkpoint prefix (basename or path) to use instead of the latest."
)
_JSON = flags.DEFINE_boolean("json", False, "Print one JSON document to stdout instead of text.")
_STEP = flags.DEFINE_integer(
    "step",
    None,
    "The training step to give global_step; overrides all evidence.",
    lower_bound=0,
    upper_bound=_INT64_MAX,
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Write the repaired model directory here; the source is not written."
)
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the plan and stop; write nothing.")
_DROP_RENAMED = flags.DEFINE_boolean(
    "drop_renamed", False, "Leave a renamed step key (e.g. my_global_step) out of the repair."
)

_COMMON = ("model_dir", "checkpoint", "json")
_COMMAND_FLAGS: dict[str, tuple[str, ...]] = {
    "scan": _COMMON,
    "repair": (*_COMMON, "step", "output_dir", "dry_run", "drop_renamed"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {"scan": ("model_dir",), "repair": ("model_dir",)}
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


def _options(command: str) -> Options:
    return Options(
        command=command,
        model_dir=_MODEL_DIR.value,
        checkpoint=_CHECKPOINT.value,
        json=_JSON.value,
        step=_STEP.value,
        output_dir=_OUTPUT_DIR.value,
        dry_run=_DRY_RUN.value,
        drop_renamed=_DROP_RENAMED.value,
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
    for name in _REQUIRED[command]:
        if flags.FLAGS[name].value in (None, ""):
            raise _usage_error(f"`{command}` needs --{name}")
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


_COMMANDS: dict[str, Callable[[Options], int]] = {"scan": _run_scan, "repair": _run_repair}


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
    as_json = bool(_JSON.value)
    try:
        command = _check_flags(argv)
        code = _COMMANDS[command](_options(command))
    except errors.Error as e:
        code = _fail(e, as_json=as_json)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted; nothing was committed\n")
        code = 130
    sys.exit(code)


_HELP_FLAGS = frozenset({"help", "h", "?", "helpshort", "helpfull", "helpxml"})


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad flag is one line and exit code 2, not a help dump."""
    try:
        return flags.FLAGS(argv)
    except SystemExit:
        # absl's --help/--helpfull print the usage and exit 1; asking for help is a success.
        if any(a.split("=")[0].lstrip("-") in _HELP_FLAGS for a in argv[1:]):
            sys.exit(errors.EXIT_OK)
        raise
    except flags.Error as e:
        sys.stderr.write(f"{PROG}: usage error: {e} (see `{PROG} --help`)\n")
        sys.exit(errors.EXIT_USAGE)


def run() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # absl prints the __main__ module's docstring for --help.
    sys.modules["__main__"].__doc__ = __doc__
    app.run(main, flags_parser=_parse_flags)
