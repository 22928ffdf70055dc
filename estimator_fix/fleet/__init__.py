"""Many model directories in one run: parallel workers, a results journal, resume, a summary.

A migration pipeline runs ``scan``, ``repair`` or ``fix`` over thousands of legacy model
directories, unattended. This module is the library under ``--model_dirs=GLOB|@list.txt``,
``--manifest=jobs.jsonl``, ``--workers``, ``--results`` and ``--resume``:

- ``expand_model_dirs`` and ``jobs_for_dirs`` turn a glob or a list file into jobs
  (``Job``); ``read_manifest`` turns a JSON-lines manifest into jobs and ``BadLine``;
- ``run_job`` does one directory's work. It is a plain top-level function over a frozen
  dataclass of plain data, returns a JSON-able dict (``RESULT_SCHEMA``, every field documented
  there) and never raises, so that a worker process, this module's pool or an Apache Beam
  ``DoFn`` can call it alike;
- ``run_fleet`` runs the jobs in ``spawn``-ed worker processes (never ``fork`` after
  TensorFlow was imported), appends one JSON line per directory to the results file as each
  completes (the file is the resume journal), reports progress, survives a worker that dies,
  and returns a ``FleetSummary``.

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

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TextIO

from absl import logging

from estimator_fix import errors
from estimator_fix.checkpoint import state_file
from estimator_fix.storage import atomic, fs

RESULT_SCHEMA = "estimator-fix.result/1"
# Any directory failed. To move to errors.py beside the other exit codes.
EXIT_FLEET_FAILED = errors.EXIT_FLEET_FAILED

COMMANDS = ("scan", "repair", "fix")
STATUS_DONE = "done"
STATUS_FAILED = "failed"
NAME_PLACEHOLDER = "{name}"
WORKER_CRASH = "WorkerCrashError"

_MODES = ("predict", "eval", "train")
_SERVING_FORMATS = ("example", "raw")
_IN_FLIGHT_PER_WORKER = 2  # tasks queued per worker: keeps workers busy, bounds crash suspects
_MAX_SCAN_CHUNK = 32  # scans per task
_STATE_BACKUP = f"{state_file.STATE_FILENAME}.bak-"  # as repair names the state file's backup

ProgressFn = Callable[[int, int, dict[str, Any]], None]


# --- jobs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One directory's work: the options of one ``scan``, ``repair`` or ``fix`` invocation.

    Plain data only (picklable, JSON-able through ``to_dict``). The fields mean what the CLI
    flags of the same name mean; ``export_dir`` and ``output_dir`` may contain ``{name}``,
    replaced by the model directory's basename (``jobs_for_dirs``, ``read_manifest``).
    """

    command: str  # "scan" | "repair" | "fix"
    model_dir: str
    checkpoint: str | None = None
    step: int | None = None
    output_dir: str | None = None
    drop_renamed: bool = False
    dry_run: bool = False
    estimator: str | None = None
    model_fn: str | None = None
    params: dict[str, Any] | None = None
    serving_input_fn: str | None = None
    serving_features: str | None = None
    serving_format: str = "example"
    export_dir: str | None = None
    mode: str = "predict"
    as_text: bool = False
    assets_extra: dict[str, str] | None = None
    inputs: str | None = None
    tolerance: float = 1e-5
    line: int | None = None  # manifest line number, for messages

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def attempt_key(self) -> str:
        """A digest of everything that determines the work (not ``line``): equal jobs, equal keys.

        Does not perform I/O.
        """
        doc = {k: v for k, v in self.to_dict().items() if k != "line"}
        doc["model_dir"] = fs.normalize(self.model_dir)
        text = json.dumps(doc, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A manifest line that is not a job; ``run_fleet`` turns it into a failed result."""

    line: int
    model_dir: str | None  # when the line named one
    message: str  # one line, naming the manifest file and line
    command: str | None = None  # the command the manifest was read for


def default_workers() -> int:
    """The CPUs this process may run on (affinity-aware in containers), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def expand_model_dirs(spec: str) -> list[str]:
    """``--model_dirs``: a glob, or ``@list.txt`` with one directory per line.

    Matches are not checked to be model directories: one that is not (a file, an empty or
    unreadable directory) gets its own failed result from ``run_job``. End a glob with ``/`` to
    match directories only. A list file skips blank lines and ``#`` comments; its relative
    paths, like a glob's, are relative to the working directory.

    Args:
      spec: ``/models/*/run*``, ``gs://bucket/models/*`` (``tf.io.gfile.glob``, which imports
        TensorFlow) or ``@dirs.txt``.

    Returns:
      Normalised (absolute) paths, sorted, without duplicates.

    Raises:
      errors.UsageError: the glob matches nothing, or the list file is missing, unreadable or
        lists nothing.
    """
    if not spec:
        raise errors.UsageError("--model_dirs: empty; pass a glob or @file listing directories")
    if spec.startswith("@"):
        path = spec[1:]
        try:
            text = fs.read_text(fs.normalize(path))
        except errors.Error as e:
            raise errors.UsageError(
                f"--model_dirs=@{path}: cannot read the list file ({e}); pass an existing file "
                "with one model directory per line",
                path=path,
            ) from e
        found = [
            s for s in (raw.strip() for raw in text.splitlines()) if s and not s.startswith("#")
        ]
        if not found:
            raise errors.UsageError(
                f"--model_dirs=@{path}: lists no directories (only blank lines and # comments)",
                path=path,
            )
    else:
        if fs.has_scheme(spec):
            import tensorflow as tf

            found = list(tf.io.gfile.glob(spec))
        else:
            found = glob.glob(os.path.expanduser(spec))
        if not found:
            raise errors.UsageError(
                f"--model_dirs={spec}: matches nothing; check the pattern (and quote it, so that "
                "the shell does not expand it)"
            )
    return sorted({fs.normalize(d) for d in found})


def _with_name(value: str | None, model_dir: str) -> str | None:
    """Replaces ``{name}`` by the model directory's basename. Does not perform I/O."""
    if value is None or NAME_PLACEHOLDER not in value:
        return value
    return value.replace(NAME_PLACEHOLDER, fs.basename(fs.normalize(model_dir)))


def _expand_names(job: Job) -> Job:
    return dataclasses.replace(
        job,
        export_dir=_with_name(job.export_dir, job.model_dir),
        output_dir=_with_name(job.output_dir, job.model_dir),
    )


def _check_shared(targets: Mapping[str, str | None], count: int, where: str) -> None:
    """A directory flag shared by several jobs must say ``{name}``: they cannot share a target."""
    if count < 2:
        return
    for flag, value in targets.items():
        if value is not None and NAME_PLACEHOLDER not in value:
            raise errors.UsageError(
                f"--{flag}={value}: would be shared by {count} {where}; put {NAME_PLACEHOLDER} "
                f"in it (e.g. --{flag}={value.rstrip('/')}/{NAME_PLACEHOLDER}: the model "
                "directory's name)"
            )


def jobs_for_dirs(model_dirs: Sequence[str], template: Job) -> list[Job]:
    """One job per directory, each ``template`` with its ``model_dir`` (and ``{name}``) filled in.

    Raises:
      errors.UsageError: more than one directory and an ``export_dir`` or ``output_dir``
        without ``{name}`` (every directory would write to the same place).
    """
    targets = {"export_dir": template.export_dir, "output_dir": template.output_dir}
    _check_shared(targets, len(model_dirs), "directories")
    return [
        _expand_names(dataclasses.replace(template, model_dir=fs.normalize(d))) for d in model_dirs
    ]


# --- the manifest -----------------------------------------------------------------------------

_STR_KEYS = frozenset(
    {
        "model_dir",
        "checkpoint",
        "output_dir",
        "estimator",
        "model_fn",
        "serving_input_fn",
        "serving_features",
        "export_dir",
        "inputs",
    }
)
_BOOL_KEYS = frozenset({"drop_renamed", "dry_run", "as_text"})
_MANIFEST_KEYS = frozenset(
    _STR_KEYS
    | _BOOL_KEYS
    | {"step", "params", "serving_format", "mode", "tolerance", "assets_extra"}
)
# A line that names one of an exclusive pair drops the defaults of the other.
_ALTERNATIVES = {
    "estimator": ("model_fn", "params"),
    "model_fn": ("estimator",),
    "serving_input_fn": ("serving_features", "serving_format"),
    "serving_features": ("serving_input_fn",),
}
_JOB_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Job)}


def _line_value(key: str, value: Any) -> Any:
    """Checks one manifest value; returns it converted. Raises ValueError saying what is wrong."""
    if value is None:
        if key in _BOOL_KEYS or key in ("serving_format", "mode", "tolerance", "model_dir"):
            raise ValueError(f"{key!r} must not be null")
        return None
    if key in _STR_KEYS:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key!r} must be a non-empty string, got {json.dumps(value)}")
        return value
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise ValueError(f"{key!r} must be true or false, got {json.dumps(value)}")
        return value
    if key == "step":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise ValueError(
                f"'step' must be an integer from 0 to 2**63-1, got {json.dumps(value)}"
            )
        return value
    if key == "tolerance":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"'tolerance' must be a number >= 0, got {json.dumps(value)}")
        return float(value)
    if key == "serving_format" and value not in _SERVING_FORMATS:
        raise ValueError(f"'serving_format' must be one of {', '.join(_SERVING_FORMATS)}")
    if key == "mode" and value not in _MODES:
        raise ValueError(f"'mode' must be one of {', '.join(_MODES)}")
    if key == "params":
        if isinstance(value, str):  # JSON text or @file.json, as --params takes
            from estimator_fix.model_code.userspec import parse_params

            try:
                return parse_params(value)
            except errors.UsageError as e:
                raise ValueError(f"'params': {e}") from e
        if not isinstance(value, dict):
            raise ValueError("'params' must be a JSON object (or @file.json)")
    if key == "assets_extra" and (
        not isinstance(value, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise ValueError("'assets_extra' must be an object of DEST: SOURCE_FILE strings")
    return value


def _job_from_line(doc: dict[str, Any], defaults: Job, lineno: int) -> Job:
    """Merges a checked manifest object over ``defaults``. Raises ValueError."""
    changes: dict[str, Any] = {}
    for a, b in (("estimator", "model_fn"), ("serving_input_fn", "serving_features")):
        if doc.get(a) is not None and doc.get(b) is not None:
            raise ValueError(f"{a!r} and {b!r} exclude each other")
    for key, dropped in _ALTERNATIVES.items():
        if key in doc:
            changes.update({d: _JOB_DEFAULTS[d] for d in dropped})
    changes.update({key: _line_value(key, value) for key, value in doc.items()})
    changes["model_dir"] = fs.normalize(changes["model_dir"])
    changes["line"] = lineno
    return _expand_names(dataclasses.replace(defaults, **changes))


def read_manifest(path: str, defaults: Job) -> list[Job | BadLine]:
    """``--manifest=jobs.jsonl``: one JSON object per line, one job per line.

    Each object has ``model_dir`` and any of the flags of ``defaults.command`` as keys (the
    ``Job`` field names: ``estimator`` or ``model_fn`` + ``params``, ``serving_input_fn`` or
    ``serving_features`` + ``serving_format``, ``export_dir``, ``step``, ``output_dir``, ...).
    A line's values override ``defaults`` (the flags given on the command line); naming one of
    ``estimator``/``model_fn`` (or ``serving_input_fn``/``serving_features``) drops the default
    of the other. Blank lines and lines starting with ``#`` are skipped. Relative paths are
    relative to the working directory.

    Args:
      path: the manifest file.
      defaults: the job every line starts from (its ``model_dir`` is ignored).

    Returns:
      In file order: a ``Job`` per valid line, a ``BadLine`` per line that is not valid JSON,
      not an object, has no ``model_dir``, has unknown keys or values of the wrong type.

    Raises:
      errors.UsageError: the manifest cannot be read or holds no line; a default
        ``export_dir``/``output_dir`` without ``{name}`` inherited by more than one line.
    """
    norm = fs.normalize(path)
    try:
        text = fs.read_text(norm)
    except errors.Error as e:
        raise errors.UsageError(
            f"--manifest={path}: cannot read the manifest ({e}); pass a JSON-lines file",
            path=path,
        ) from e
    out: list[Job | BadLine] = []
    inheriting = {"export_dir": 0, "output_dir": 0}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as e:
            out.append(
                BadLine(
                    lineno,
                    None,
                    f"{where}: not valid JSON (column {e.colno}: {e.msg})",
                    defaults.command,
                )
            )
            continue
        if not isinstance(doc, dict):
            out.append(
                BadLine(
                    lineno,
                    None,
                    f"{where}: expected a JSON object, got {type(doc).__name__}",
                    defaults.command,
                )
            )
            continue
        model_dir = doc.get("model_dir")
        named = fs.normalize(model_dir) if isinstance(model_dir, str) and model_dir else None
        if named is None:
            out.append(
                BadLine(
                    lineno,
                    None,
                    f'{where}: needs "model_dir" (a non-empty string)',
                    defaults.command,
                )
            )
            continue
        unknown = sorted(set(doc) - _MANIFEST_KEYS)
        if unknown:
            out.append(
                BadLine(
                    lineno,
                    named,
                    f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(map(repr, unknown))}; known: {', '.join(sorted(_MANIFEST_KEYS))}",
                    defaults.command,
                )
            )
            continue
        try:
            job = _job_from_line(doc, defaults, lineno)
        except ValueError as e:
            out.append(BadLine(lineno, named, f"{where}: {e}", defaults.command))
            continue
        for key in inheriting:
            inheriting[key] += key not in doc
        out.append(job)
    if not out:
        raise errors.UsageError(f"--manifest={path}: holds no job (every line blank or #)")
    for key, count in inheriting.items():
        if count > 1:
            target = {key: getattr(defaults, key)}
            _check_shared(target, count, f"manifest lines without their own {key!r}")
    return out


# --- one directory ----------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:500] + "...") if len(text) > 500 else (text or type(e).__name__)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _blank_result(job: Job, model_dir: str | None) -> dict[str, Any]:
    return {
        "schema": RESULT_SCHEMA,
        "command": job.command,
        "model_dir": model_dir,
        "line": job.line,
        "status": STATUS_FAILED,
        "exit_code": errors.EXIT_BAD_INPUT,
        "verdict": None,
        "problems": [],
        "repaired": False,
        "step": None,
        "changed": [],
        "export_path": None,
        "dry_run": job.dry_run,
        "error": None,
        "seconds": 0.0,
        "attempt_key": job.attempt_key,
        "worker_pid": os.getpid(),
        "finished_at": None,
    }


def _error_doc(type_name: str, message: str, path: str | None) -> dict[str, Any]:
    return {"type": type_name, "message": message, "path": path}


def _check_job(job: Job) -> None:
    """The options one command needs (the CLI checks its flags; a manifest line may not)."""
    if job.command not in COMMANDS:
        raise errors.UsageError(f"unknown command {job.command!r}; one of {', '.join(COMMANDS)}")
    if job.command != "fix":
        return
    if not job.export_dir:
        raise errors.UsageError("`fix` needs export_dir")
    if (job.estimator is None) == (job.model_fn is None):
        raise errors.UsageError("`fix` needs exactly one of estimator and model_fn")
    if (job.serving_input_fn is None) == (job.serving_features is None):
        raise errors.UsageError("`fix` needs exactly one of serving_input_fn and serving_features")
    if job.params is not None and job.model_fn is None:
        raise errors.UsageError("params go with model_fn")
    if job.serving_format not in _SERVING_FORMATS:
        raise errors.UsageError(f"serving_format must be one of {', '.join(_SERVING_FORMATS)}")
    if job.mode not in _MODES:
        raise errors.UsageError(f"mode must be one of {', '.join(_MODES)}")


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

    def added(self) -> list[str]:
        out = []
        for d in self._dirs:
            new = {
                n
                for n in self._names(d) - self._before[d]
                if n != atomic.LOCK_NAME and not atomic.is_temporary(n)
            }
            if any(n.startswith(_STATE_BACKUP) for n in new):
                new.add(state_file.STATE_FILENAME)  # backed up, so replaced
            out += [fs.join(d, n) for n in sorted(new)]
        return out


def _scan_outcome(verdict: str) -> dict[str, Any]:
    code = {
        "healthy": errors.EXIT_OK,
        "repairable": errors.EXIT_REPAIRABLE,
        "unrepairable": errors.EXIT_UNREPAIRABLE,
    }[verdict]
    return {"status": STATUS_DONE, "exit_code": code}


def _repair_outcome(job: Job, report: Any) -> dict[str, Any]:
    from estimator_fix import plan as plan_lib
    from estimator_fix import repair as repair_lib

    the_plan = plan_lib.plan(
        report, step=job.step, output_dir=job.output_dir, drop_renamed=job.drop_renamed
    )
    if job.dry_run or the_plan.is_noop:
        return {"status": STATUS_DONE, "exit_code": errors.EXIT_OK, "step": the_plan.step}
    result = repair_lib.repair(the_plan)
    return {
        "status": STATUS_DONE,
        "exit_code": errors.EXIT_OK,
        "repaired": True,
        "step": result.step,
        "changed": list(result.files_added),
    }


def _fix_outcome(job: Job) -> dict[str, Any]:
    from estimator_fix import fix as fix_lib
    from estimator_fix.model_code.serving import ServingSpec
    from estimator_fix.model_code.userspec import ModelSpec

    assert job.export_dir is not None
    result = fix_lib.fix(
        fix_lib.FixOptions(
            model_dir=job.model_dir,
            model=ModelSpec(estimator=job.estimator, model_fn=job.model_fn, params=job.params),
            serving=ServingSpec(
                input_fn=job.serving_input_fn,
                features=job.serving_features,
                format=job.serving_format,
            ),
            export_dir=job.export_dir,
            checkpoint=job.checkpoint,
            step=job.step,
            output_dir=job.output_dir,
            drop_renamed=job.drop_renamed,
            dry_run=job.dry_run,
            mode=job.mode,
            as_text=job.as_text,
            assets_extra=job.assets_extra,
            inputs=job.inputs,
            tolerance=job.tolerance,
        )
    )
    repaired = result.repair
    out: dict[str, Any] = {
        "repaired": repaired is not None,
        "step": repaired["step"] if repaired else result.plan.get("step"),
        "changed": list(repaired["files_added"]) if repaired else [],
        "export_path": result.export_path,
    }
    if result.ok or job.dry_run:
        return {**out, "status": STATUS_DONE, "exit_code": errors.EXIT_OK}
    # fix raises ParityError when verification fails; this is the belt to those braces.
    return {
        **out,
        "status": STATUS_FAILED,
        "exit_code": errors.EXIT_EXPORT_FAILED,
        "error": _error_doc("ExportError", f"{job.model_dir}: the export was not verified", None),
    }


def run_job(job: Job) -> dict[str, Any]:
    """Does one directory's work; never raises (one bad directory must not stop the others).

    Safe to retry: the same job on the same directory gives the same result, and a repaired
    directory is never repaired twice (its retry reports ``repaired: false``).

    Args:
      job: the directory and the command's options.

    Returns:
      A JSON-able dict, schema ``estimator-fix.result/1``:

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
    out = _blank_result(job, model_dir)
    listing: _Listing | None = None
    try:
        _check_job(job)
        if job.command != "scan" and not job.dry_run:
            listing = _Listing(job)
        from estimator_fix.scan import scan

        report = scan(job.model_dir, checkpoint=job.checkpoint)
        out["verdict"] = report.verdict.value
        out["problems"] = [p.code for p in report.problems]
        if job.command == "scan":
            out.update(_scan_outcome(report.verdict.value))
        elif job.command == "repair":
            out.update(_repair_outcome(job, report))
        else:
            out.update(_fix_outcome(job))
    except errors.Error as e:
        out["exit_code"] = e.exit_code
        out["error"] = _error_doc(type(e).__name__, str(e), e.path)
    except Exception as e:  # a bug of ours or TensorFlow's: still one line, never a traceback
        out["exit_code"] = errors.EXIT_BAD_INPUT
        out["error"] = _error_doc(type(e).__name__, f"{job.model_dir}: {_one_line(e)}", None)
    except SystemExit as e:  # user code calling sys.exit() must not end the whole fleet
        out["exit_code"] = errors.EXIT_BAD_INPUT
        out["error"] = _error_doc(
            "SystemExit", f"{job.model_dir}: the user's code called sys.exit({e.code!r})", None
        )
    if out["status"] == STATUS_FAILED and listing is not None:
        out["changed"] = listing.added()
    out["seconds"] = round(time.monotonic() - start, 3)
    out["finished_at"] = _now()
    return out


def _failed_result(
    job: Job, model_dir: str | None, type_name: str, message: str, exit_code: int
) -> dict[str, Any]:
    out = _blank_result(job, model_dir)
    out.update(
        exit_code=exit_code,
        error=_error_doc(type_name, message, model_dir),
        finished_at=_now(),
    )
    return out


def _bad_line_result(bad: BadLine, command: str) -> dict[str, Any]:
    job = Job(command=bad.command or command, model_dir=bad.model_dir or "", line=bad.line)
    out = _failed_result(job, bad.model_dir, "ManifestError", bad.message, errors.EXIT_USAGE)
    out["error"]["path"] = None
    return out


# --- many directories -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FleetSummary:
    """Counts over one ``run_fleet``; ``table()`` for people, ``to_dict()`` for pipelines."""

    command: str  # the jobs' command ("mixed" if they differ)
    total: int  # jobs given: run + skipped + bad manifest lines
    done: int
    failed: int
    skipped: int  # already done according to the results file (--resume)
    by_verdict: dict[str, int]  # the scan verdict before any change, over the results of this run
    by_exit_code: dict[int, int]
    seconds: float
    dirs_per_second: float  # results of this run per second of wall time
    workers: int
    worker_restarts: int  # process pools replaced after a worker died
    failures: tuple[str, ...] = ()  # one line each, naming the directory (or manifest line)

    @property
    def exit_code(self) -> int:
        """The fleet's exit code.

        ``EXIT_FLEET_FAILED`` (9) if any directory failed (bad manifest lines included). Else,
        for ``scan``: 4 if any directory is unrepairable, else 3 if any is repairable, else 0
        (the single-directory codes, worst first). Else 0. Skipped directories do not count.
        """
        if self.failed:
            return EXIT_FLEET_FAILED
        if self.command == "scan":
            if self.by_verdict.get("unrepairable"):
                return errors.EXIT_UNREPAIRABLE
            if self.by_verdict.get("repairable"):
                return errors.EXIT_REPAIRABLE
        return errors.EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["by_exit_code"] = {str(k): v for k, v in self.by_exit_code.items()}
        doc["failures"] = list(self.failures)
        doc["exit_code"] = self.exit_code
        return doc

    def table(self, *, max_failures: int = 10) -> str:
        """A small fixed-width summary; the first ``max_failures`` failures listed under it."""
        rows = [
            f"estimator-fix {self.command}: {self.total} directories in {self.seconds:.1f} s "
            f"({self.dirs_per_second:.1f}/s, {self.workers} worker"
            f"{'s' if self.workers != 1 else ''}"
            + (f", {self.worker_restarts} restarted" if self.worker_restarts else "")
            + ")",
            f"  {'status':<16}{'count':>8}",
            f"  {'done':<16}{self.done:>8}",
            f"  {'failed':<16}{self.failed:>8}",
            f"  {'skipped':<16}{self.skipped:>8}",
        ]
        if self.by_verdict:
            rows.append(f"  {'verdict':<16}{'count':>8}")
            order = ["healthy", "repairable", "unrepairable"]
            order += sorted(set(self.by_verdict) - set(order))
            rows += [f"  {v:<16}{self.by_verdict[v]:>8}" for v in order if v in self.by_verdict]
        if self.by_exit_code:
            rows.append(f"  {'exit code':<16}{'count':>8}")
            for code in sorted(self.by_exit_code):
                rows.append(f"  {code:<16}{self.by_exit_code[code]:>8}")
        if self.failures:
            rows.append("failed:")
            rows += [f"  {line}" for line in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                rows.append(
                    f"  ... and {len(self.failures) - max_failures} more (see the results file)"
                )
        rows.append(f"exit code {self.exit_code}")
        return "\n".join(rows)


def where(result: Mapping[str, Any]) -> str:
    """The model directory of a result, or its manifest line. Does not perform I/O."""
    if result.get("model_dir"):
        return str(result["model_dir"])
    return f"manifest line {result.get('line')}"


def failure_line(result: Mapping[str, Any]) -> str:
    """``<model_dir>: <message>`` for a failed result, the directory named once."""
    error = result.get("error") or {}
    message = str(error.get("message") or result.get("status"))
    place = where(result)
    if message.startswith(place) or error.get("type") == "ManifestError":
        return message  # it names the directory, or the manifest file and line, already
    return f"{place}: {message}"


class _Journal:
    """The results file: one JSON line per result, appended and flushed as each completes.

    A line cut short by a crash is ended before the next is appended, so it costs only itself.
    """

    def __init__(self, path: str | None) -> None:
        self._file: TextIO | None = None
        self._path = path
        if path is None:
            return
        torn = False
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
        except FileNotFoundError:
            pass
        except OSError as e:
            raise errors.UsageError(f"--results={path}: cannot read ({e.strerror})") from e
        try:
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        except OSError as e:
            raise errors.UsageError(
                f"--results={path}: cannot open for appending ({e.strerror}); pass a writable path"
            ) from e
        if torn:
            self._file.write("\n")

    def write(self, result: Mapping[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(result, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as e:
            raise errors.WriteError(
                f"--results={self._path}: write failed ({e.strerror}); the directories done so "
                "far are recorded, free space and run again with --resume",
                path=self._path,
            ) from e

    def close(self) -> None:
        if self._file is not None:
            # Every line was flushed; only a failed write (already raised) can leave a buffer.
            with contextlib.suppress(OSError):
                self._file.close()


def read_results(path: str) -> list[dict[str, Any]]:
    """Every result in a results file, in file order; torn or foreign lines are skipped."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("schema") == RESULT_SCHEMA:
                out.append(doc)
    return out


def _done_keys(path: str) -> set[tuple[str, str]]:
    """(command, model_dir) whose last non-dry-run result in the journal says done."""
    try:
        results = read_results(path)
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise errors.UsageError(f"--results={path}: cannot read ({e.strerror})") from e
    last: dict[tuple[str, str], str] = {}
    for r in results:
        if r.get("dry_run") or not r.get("model_dir"):
            continue
        last[(str(r.get("command")), str(r["model_dir"]))] = str(r.get("status"))
    return {k for k, status in last.items() if status == STATUS_DONE}


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


def _worker_init() -> None:
    """Quiets TensorFlow in a fresh worker, as ``cli.run`` does in the main process."""
    import logging as std_logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow).*")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*is deprecated")
    # The parent handles Ctrl-C: it cancels what is queued; a running repair is crash-safe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _new_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    # spawn: a fresh interpreter per worker. fork would copy a parent that may hold
    # TensorFlow's threads and locks (a fork after TF was imported can deadlock).
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
    )


def _exit_codes(pool: concurrent.futures.ProcessPoolExecutor) -> list[int]:
    """Exit codes of the pool's dead workers, best effort (the executor keeps them private)."""
    processes = getattr(pool, "_processes", None) or {}
    codes = []
    for p in list(processes.values()):
        p.join(timeout=5)
        if p.exitcode not in (None, 0, -signal.SIGTERM):
            codes.append(int(p.exitcode))
    return codes


def _describe_exit(codes: Iterable[int]) -> str:
    parts = []
    for code in codes:
        if code < 0:
            try:
                parts.append(f"killed by {signal.Signals(-code).name}")
            except ValueError:
                parts.append(f"killed by signal {-code}")
        else:
            parts.append(f"exit code {code}")
    return f" ({', '.join(parts)})" if parts else ""


def run_jobs(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """``run_job`` over a batch, in order (one round trip to a worker for many quick scans)."""
    return [run_job(job) for job in jobs]


def _chunk_size(jobs: Sequence[Job], workers: int) -> int:
    """Jobs per task: scans take milliseconds, so they travel in batches; the rest one by one.

    Does not perform I/O.
    """
    if any(j.command != "scan" for j in jobs):
        return 1
    return max(1, min(_MAX_SCAN_CHUNK, len(jobs) // (workers * 8)))


_Futures = dict[concurrent.futures.Future[list[dict[str, Any]]], list[Job]]


class _Runner:
    """Runs jobs on a process pool; survives workers that die.

    When a worker dies, the executor fails every task in flight: their jobs are suspects. They
    are run again one at a time, each alone in a one-worker pool, so that the job that kills its
    worker again is recorded as failed (``WorkerCrashError``) and the innocent ones complete.
    """

    def __init__(self, workers: int, record: Callable[[dict[str, Any]], None]) -> None:
        self._workers = workers
        self._record = record
        self.restarts = 0

    def run(self, jobs: Sequence[Job]) -> None:
        size = _chunk_size(jobs, self._workers)
        pending = collections.deque(list(jobs[i : i + size]) for i in range(0, len(jobs), size))
        while pending:
            suspects = self._run_batch(pending)
            if suspects:
                self._run_alone(suspects)

    def _record_all(
        self, future: concurrent.futures.Future[list[dict[str, Any]]], chunk: list[Job]
    ) -> None:
        error = future.exception()
        if error is None:
            for result in future.result():
                self._record(result)
            return
        # run_job never raises: this is a job or a result failing to cross the process boundary.
        for job in chunk:
            self._record(
                _failed_result(
                    job,
                    fs.normalize(job.model_dir),
                    type(error).__name__,
                    f"{job.model_dir}: {_one_line(error)}",
                    errors.EXIT_BAD_INPUT,
                )
            )

    def _run_batch(self, pending: collections.deque[list[Job]]) -> list[Job]:
        """Runs ``pending`` until it is empty or the pool breaks; returns the jobs in flight."""
        pool = _new_pool(self._workers)
        in_flight: _Futures = {}
        limit = self._workers * _IN_FLIGHT_PER_WORKER
        broken = False
        try:
            try:
                while (pending or in_flight) and not broken:
                    while pending and len(in_flight) < limit:
                        chunk = pending.popleft()
                        in_flight[pool.submit(run_jobs, chunk)] = chunk
                    finished, _ = concurrent.futures.wait(
                        in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in finished:
                        if isinstance(future.exception(), BrokenProcessPool):
                            broken = True
                        else:
                            self._record_all(future, in_flight.pop(future))
            except KeyboardInterrupt:
                self._finish_running(in_flight)
                raise
            if not broken:
                return []
            # Tasks that finished before the break still have their results.
            for future in [f for f in in_flight if f.done()]:
                if not isinstance(future.exception(), BrokenProcessPool):
                    self._record_all(future, in_flight.pop(future))
            suspects = [job for chunk in in_flight.values() for job in chunk]
            self.restarts += 1
            logging.warning(
                "fleet: a worker process died%s; running the %d director%s in flight again, "
                "one at a time",
                _describe_exit(_exit_codes(pool)),
                len(suspects),
                "y" if len(suspects) == 1 else "ies",
            )
            return suspects
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _finish_running(self, in_flight: _Futures) -> None:
        """Ctrl-C: drop what has not started, record what is running (workers ignore SIGINT)."""
        running = {f: chunk for f, chunk in in_flight.items() if not f.cancel()}
        logging.warning(
            "fleet: interrupted; waiting for the %d task%s in progress to finish "
            "(Ctrl-C again to stop waiting; an interrupted repair is crash-safe)",
            len(running),
            "" if len(running) == 1 else "s",
        )
        for future in concurrent.futures.as_completed(running):
            if not isinstance(future.exception(), BrokenProcessPool):
                self._record_all(future, running[future])

    def _run_alone(self, suspects: Sequence[Job]) -> None:
        pool: concurrent.futures.ProcessPoolExecutor | None = None
        try:
            for job in suspects:
                if pool is None:
                    pool = _new_pool(1)
                future = pool.submit(run_jobs, [job])
                concurrent.futures.wait([future])
                if not isinstance(future.exception(), BrokenProcessPool):
                    self._record_all(future, [job])
                    continue
                how = _describe_exit(_exit_codes(pool))
                pool.shutdown(wait=True)
                pool = None
                self.restarts += 1
                self._record(
                    _failed_result(
                        job,
                        fs.normalize(job.model_dir),
                        WORKER_CRASH,
                        f"{job.model_dir}: the worker process died{how} while working on "
                        "this directory, twice (the second time alone): a crash in native "
                        "code, os._exit in user code, or the out-of-memory killer; run it "
                        "alone with --workers=1 to see",
                        errors.EXIT_BAD_INPUT,
                    )
                )
        finally:
            if pool is not None:
                pool.shutdown(wait=True)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The jobs that may run, and the results of those refused before anything ran."""

    command: str  # the one command of the jobs, "mixed" or "none"
    to_run: tuple[Job, ...]
    rejected: tuple[dict[str, Any], ...]


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
    rejected: list[dict[str, Any]] = []
    to_run: list[Job] = []
    claims: dict[tuple[str, str], Job] = {}
    for item in jobs:
        if isinstance(item, BadLine):
            rejected.append(_bad_line_result(item, command))
            continue
        conflict = _claims_conflict(item, claims)
        if conflict is not None:
            rejected.append(
                _failed_result(
                    item, fs.normalize(item.model_dir), "UsageError", conflict, errors.EXIT_USAGE
                )
            )
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
      progress: called ``progress(completed, to_run, result)`` after each result, in this
        process (``TerminalProgress``, ``LogProgress``).

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
    done_before = _done_keys(results_path) if resume and results_path else set()
    immediate: list[dict[str, Any]] = list(prepared.rejected)
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

    journal = _Journal(results_path)
    completed = 0
    verdicts: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[int] = collections.Counter()
    failures: list[str] = []

    def record(result: dict[str, Any]) -> None:
        nonlocal completed
        journal.write(result)
        completed += 1
        if result.get("verdict"):
            verdicts[str(result["verdict"])] += 1
        codes[int(result["exit_code"])] += 1
        if result["status"] != STATUS_DONE:
            failures.append(failure_line(result))
        if progress is not None:
            progress(completed, total, result)

    runner = _Runner(pool_size, record)
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


# --- progress ---------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _Rate:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.failed = 0

    def describe(self, done: int, total: int) -> str:
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
        return f"{self.failed} failed, {rate:.1f}/s{eta}"


class TerminalProgress:
    """A one-line progress bar redrawn on a terminal (stderr); failures printed above it."""

    def __init__(self, stream: TextIO, *, width: int = 30, min_interval: float = 0.1) -> None:
        self._stream = stream
        self._width = width
        self._min_interval = min_interval
        self._last = 0.0
        self._rate = _Rate()

    def __call__(self, done: int, total: int, result: Mapping[str, Any]) -> None:
        if result.get("status") != STATUS_DONE:
            self._rate.failed += 1
            self._stream.write(f"\r\x1b[Kfailed: {failure_line(result)}\n")
        now = time.monotonic()
        if done < total and now - self._last < self._min_interval:
            return
        self._last = now
        filled = self._width * done // total if total else self._width
        bar = "#" * filled + "." * (self._width - filled)
        pct = 100 * done // total if total else 100
        self._stream.write(
            f"\r\x1b[K[{bar}] {done}/{total} {pct}% {self._rate.describe(done, total)}"
        )
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


class LogProgress:
    """Periodic ``absl.logging`` lines for logs that are not a terminal; one per failure.

    A progress line every ``percent_step`` percent or every ``interval_seconds``, whichever
    comes first, and one at the end.
    """

    def __init__(self, *, interval_seconds: float = 30.0, percent_step: float = 5.0) -> None:
        self._interval = interval_seconds
        self._step = percent_step
        self._next_pct = percent_step
        self._last = time.monotonic()
        self._rate = _Rate()

    def __call__(self, done: int, total: int, result: Mapping[str, Any]) -> None:
        if result.get("status") != STATUS_DONE:
            self._rate.failed += 1
            logging.warning("fleet: failed: %s", failure_line(result))
        pct = 100.0 * done / total if total else 100.0
        now = time.monotonic()
        if done < total and pct < self._next_pct and now - self._last < self._interval:
            return
        while self._next_pct <= pct:
            self._next_pct += self._step
        self._last = now
        logging.info(
            "fleet: %d/%d directories (%.0f%%), %s",
            done,
            total,
            pct,
            self._rate.describe(done, total),
        )


def progress_for(stream: TextIO) -> ProgressFn:
    """A ``TerminalProgress`` on ``stream`` if it is a terminal, else a ``LogProgress``."""
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return TerminalProgress(stream)
    return LogProgress()
