"""The runtime: which TensorFlow this process has, and what it needs before TensorFlow loads.

Two runtimes are supported (the README's "Runtimes"): Python 3.11 with TensorFlow 2.15, the last
release that ships ``tf.estimator``, and Python 3.12/3.13 with TensorFlow 2.21, where the same
pure-Python ``tensorflow-estimator`` 2.15.0 is made importable by putting back the handful of
private TensorFlow names it imports and 2.16 removed (``estimator_shims``). ``prepare()`` is
called by every entry point (through ``tfenv.quiet_tensorflow``) before anything imports
TensorFlow, and by the test suite's conftest; on TensorFlow 2.15 it changes nothing.

Nothing here imports TensorFlow: the version comes from the installed distribution's metadata.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys

from estimator_fix import errors

# The runtime that runs everything, named in the one line that refuses what needs it.
LEGACY_RUNTIME = "Python 3.11 with TensorFlow 2.15 (`make setup`, the .venv)"
_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly")


class RuntimeUnsupportedError(errors.UsageError):
    """What was asked needs another runtime (exit 2, a usage error: run it with that one)."""


@functools.cache
def tensorflow_version() -> tuple[int, int] | None:
    """(major, minor) of the installed TensorFlow, or None when none is installed.

    Does not import TensorFlow (a distribution's metadata costs a millisecond).
    """
    for name in _DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        major, minor = version.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    return None


def has_builtin_estimator() -> bool:
    """True where TensorFlow itself still wires up ``tf.estimator`` (2.15 and older)."""
    version = tensorflow_version()
    return version is None or version < (2, 16)


def runtime_name() -> str:
    """This process's runtime in words, e.g. ``Python 3.12.1 with TensorFlow 2.21``."""
    version = tensorflow_version()
    tf_text = "no TensorFlow" if version is None else f"TensorFlow {version[0]}.{version[1]}"
    return f"Python {sys.version.split()[0]} with {tf_text}"


def unsupported(what: str) -> RuntimeUnsupportedError:
    """The one-line refusal of ``what`` on this runtime, naming the runtime that can."""
    return RuntimeUnsupportedError(f"{what} does not run on {runtime_name()}; use {LEGACY_RUNTIME}")


def prepare() -> None:
    """Readies this process for TensorFlow; call before anything imports it. Idempotent.

    On TensorFlow >= 2.16: ``TF_USE_LEGACY_KERAS=1`` when ``tf-keras`` is installed (so that
    ``tf.keras`` is Keras 2 and ``tf.compat.v1.layers`` and the canned Estimators work; a value
    already in the environment wins), and an import hook that, when TensorFlow loads, keeps its
    start-up lines off stderr and puts ``tf.estimator`` back (``importhook``). On TensorFlow
    2.15 it does nothing.
    """
    if has_builtin_estimator():
        return
    if importlib.util.find_spec("tf_keras") is not None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from estimator_fix.compat import importhook

    importhook.install()
