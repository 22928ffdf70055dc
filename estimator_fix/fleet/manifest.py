"""``--manifest=jobs.jsonl``: one JSON object per line, read into ``Job``s and ``BadLine``s.

Each line's keys are the ``Job`` field names; every value is checked here, key by key, so that
a wrong value is that line's ``BadLine`` (its own failed result) rather than an error that
stops the run. ``Job.validate`` then checks each job as a whole when it runs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from estimator_fix import errors
from estimator_fix.checkpoint.keys import INT64_MAX
from estimator_fix.fleet.dirs import check_shared, expand_names
from estimator_fix.options import MODES, SERVING_FORMATS, Job
from estimator_fix.storage import fs


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A manifest line that is not a job; ``run_fleet`` turns it into a failed result."""

    line: int
    model_dir: str | None  # when the line named one
    message: str  # one line, naming the manifest file and line
    command: str | None = None  # the command the manifest was read for


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
_BOOL_KEYS = frozenset({"deep", "drop_renamed", "dry_run", "as_text"})
_MANIFEST_KEYS = frozenset(
    _STR_KEYS
    | _BOOL_KEYS
    | {"step", "params", "serving_format", "mode", "tolerance", "timeout", "assets_extra"}
)
# A line that names one of an exclusive pair drops the defaults of the other.
_ALTERNATIVES = {
    "estimator": ("model_fn", "params"),
    "model_fn": ("estimator",),
    "serving_input_fn": ("serving_features", "serving_format"),
    "serving_features": ("serving_input_fn",),
}
_NOT_NULL_KEYS = frozenset({"serving_format", "mode", "tolerance", "timeout", "model_dir"})
_JOB_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Job)}


def _line_value(key: str, value: Any) -> Any:
    """Checks one manifest value; returns it converted. Raises ValueError saying what is wrong."""
    if value is None:
        if key in _BOOL_KEYS or key in _NOT_NULL_KEYS:
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
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
            raise ValueError(
                f"'step' must be an integer from 0 to 2**63-1, got {json.dumps(value)}"
            )
        return value
    if key == "timeout":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"'timeout' must be a number of seconds >= 0, got {json.dumps(value)}")
        return float(value)
    if key == "tolerance":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"'tolerance' must be a number >= 0, got {json.dumps(value)}")
        return float(value)
    if key == "serving_format" and value not in SERVING_FORMATS:
        raise ValueError(f"'serving_format' must be one of {', '.join(SERVING_FORMATS)}")
    if key == "mode" and value not in MODES:
        raise ValueError(f"'mode' must be one of {', '.join(MODES)}")
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
    return expand_names(dataclasses.replace(defaults, **changes))


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
            check_shared(target, count, f"manifest lines without their own {key!r}")
    return out
