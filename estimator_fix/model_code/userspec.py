"""Loading the user's code: ``package.module:attr`` or ``path/to/file.py:attr`` SPECs.

Errors in a SPEC itself (malformed, file missing, attribute missing) are usage errors. An
exception raised *inside* the user's code is reported as the user's error, with the file and
line of the user's frame where it was raised, not ours or TensorFlow's. Every call into the
user's code has a time limit (``deadline``), so code that never returns ends in one line too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from estimator_fix import errors
from estimator_fix.model_code import deadline
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS

_TF_FACTS = (
    re.compile(r"Key \S+ not found in checkpoint"),
    re.compile(r"tensor_name = \S+; expected dtype \w+ does not equal original dtype \w+"),
    re.compile(r"Tensor name \"[^\"]+\" not found in checkpoint files"),
    re.compile(r"\S+; No such file or directory"),
)
_OUR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # estimator_fix/
_LIBRARY_MARKERS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build the user's Estimator: exactly one of ``estimator`` and ``model_fn``."""

    estimator: str | None = None
    model_fn: str | None = None
    params: dict[str, Any] | None = None


def _is_user_frame(filename: str) -> bool:
    path = os.path.abspath(filename)
    if path.startswith(_OUR_DIR + os.sep) or any(m in path for m in _LIBRARY_MARKERS):
        return False
    if filename.startswith("<"):
        return False
    stdlib = os.path.dirname(os.__file__)
    return not path.startswith(stdlib + os.sep)


def user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The deepest traceback frame that belongs to the user's code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_frame(f.filename)]
    return frames[-1] if frames else None


def describe_user_error(exc: BaseException, what: str) -> str:
    """One line: ``<what> raised ValueError at file.py:12 in fn: message``."""
    frame = user_frame(exc)
    where = f" at {frame.filename}:{frame.lineno} in {frame.name}" if frame else ""
    message = " ".join(str(exc).split()) or "(no message)"
    if len(message) > 300:
        # TensorFlow's restore errors bury the one fact that matters in a page of text.
        facts = [m.group(0) for m in (p.search(message) for p in _TF_FACTS) if m]
        message = message[:200] + "..." + (" [" + "; ".join(facts) + "]" if facts else "")
    return f"{what} raised {type(exc).__name__}{where}: {message}"


@contextlib.contextmanager
def user_code(what: str, *, timeout: float | None = DEFAULT_TIMEOUT_SECONDS) -> Iterator[None]:
    """Turns an exception raised by the user's code into ``errors.UserCodeError``.

    The block is also bounded to ``timeout`` seconds (None or 0 = no limit): user code that
    loops or waits forever ends in a ``deadline.UserCodeTimeoutError`` naming ``what``.
    """
    with deadline.deadline(timeout, what):
        try:
            yield
        except errors.Error:
            raise
        except Exception as e:
            frame = user_frame(e)
            raise errors.UserCodeError(
                describe_user_error(e, what), path=frame.filename if frame else None
            ) from e


def _load_file(path: str, flag: str, spec: str, timeout: float | None) -> ModuleType:
    if not os.path.isfile(path):
        raise errors.UsageError(f"{flag}={spec}: no such file {path}")
    name = "estimator_fix_user_" + os.path.splitext(os.path.basename(path))[0]
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__file__", None) == os.path.abspath(path):
        return cached
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise errors.UsageError(f"{flag}={spec}: {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    # Let the user's file import its siblings, as it would when run as a script.
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.modules[name] = module
    try:
        with user_code(f"importing {path}", timeout=timeout):
            module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_attr(spec: str, *, flag: str, timeout: float | None = DEFAULT_TIMEOUT_SECONDS) -> Any:
    """Resolves ``module:attr`` / ``file.py:attr`` (``attr`` may be dotted).

    Raises:
      errors.UsageError: the SPEC is malformed, or names a missing module, file or attribute.
      errors.UserCodeError: importing the user's module raised.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise errors.UsageError(
            f"{flag}={spec}: expected package.module:attribute or path/to/file.py:attribute"
        )
    if module_part.endswith(".py") or os.sep in module_part:
        module = _load_file(module_part, flag, spec, timeout)
    else:
        try:
            with user_code(f"importing {module_part}", timeout=timeout):
                module = importlib.import_module(module_part)
        except errors.UserCodeError as e:
            cause = e.__cause__
            if (
                isinstance(cause, ModuleNotFoundError)
                and cause.name
                and module_part.startswith(cause.name)
            ):
                raise errors.UsageError(
                    f"{flag}={spec}: no module named {cause.name!r} (for a file, write "
                    "path/to/file.py:attribute)"
                ) from cause
            raise
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise errors.UsageError(f"{flag}={spec}: {module_part} has no attribute {attr!r}")
        value = getattr(value, part)
    return value


def load_callable(
    spec: str, *, flag: str, timeout: float | None = DEFAULT_TIMEOUT_SECONDS
) -> Callable[..., Any]:
    value = load_attr(spec, flag=flag, timeout=timeout)
    if not callable(value):
        raise errors.UsageError(f"{flag}={spec}: is a {type(value).__name__}, not a function")
    return value


def parse_params(text: str | None) -> dict[str, Any] | None:
    """``--params``: a JSON object, or ``@file.json``.

    Raises:
      errors.UsageError: not valid JSON, not an object, or the file is missing.
    """
    if text is None:
        return None
    source = "--params"
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise errors.UsageError(f"--params=@{path}: cannot read ({e.strerror})") from e
        source = path
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.UsageError(
            f"{source}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})"
        ) from e
    if not isinstance(value, dict):
        raise errors.UsageError(f"{source}: must be a JSON object, got {type(value).__name__}")
    return value


def build_estimator(
    spec: ModelSpec, model_dir: str, *, timeout: float | None = DEFAULT_TIMEOUT_SECONDS
) -> Any:
    """Builds the user's ``tf.estimator.Estimator`` bound to ``model_dir``.

    ``timeout`` bounds the user's factory or the Estimator's constructor (None or 0 = none).

    Raises:
      errors.UsageError: bad SPEC, or it does not give an Estimator.
      errors.UserCodeError: the user's code raised.
    """
    import tensorflow as tf
    from tensorflow_estimator.python.estimator.estimator import Estimator

    estimator_cls = Estimator  # the base of v1, v2, canned and Keras estimators
    if (spec.estimator is None) == (spec.model_fn is None):
        raise errors.UsageError("pass exactly one of --estimator and --model_fn")
    if spec.estimator is not None:
        value = load_attr(spec.estimator, flag="--estimator", timeout=timeout)
        if isinstance(value, estimator_cls):
            return value
        if not callable(value):
            raise errors.UsageError(
                f"--estimator={spec.estimator}: is a {type(value).__name__}, not an Estimator "
                "or a function returning one"
            )
        with user_code(f"--estimator={spec.estimator}", timeout=timeout):
            result = value(model_dir)
        if not isinstance(result, estimator_cls):
            raise errors.UsageError(
                f"--estimator={spec.estimator}: returned a {type(result).__name__}, not a "
                "tf.estimator.Estimator"
            )
        return result
    assert spec.model_fn is not None
    model_fn = load_callable(spec.model_fn, flag="--model_fn", timeout=timeout)
    with user_code(f"--model_fn={spec.model_fn}", timeout=timeout):
        return tf.estimator.Estimator(model_fn=model_fn, model_dir=model_dir, params=spec.params)
