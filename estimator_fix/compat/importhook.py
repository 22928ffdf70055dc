"""A post-import hook on ``tensorflow`` (TensorFlow >= 2.16 only; see ``compat.prepare``).

When ``import tensorflow`` runs, wherever it comes from (this tool, the user's model file, a
test), the hook:

1. keeps the process's file descriptor 2 off the terminal while TensorFlow loads and probes for
   GPUs. TensorFlow 2.21's C++ start-up lines ("All log messages before absl::InitializeLog()
   is called are written to STDERR", oneDNN's notice, "Could not find cuda drivers", and at the
   first op "failed call to cuInit") are written before ``TF_CPP_MIN_LOG_LEVEL`` is read, or at
   ERROR level, so no setting hides them all; they would break the one-line error contract.
   ``TF_CPP_MIN_LOG_LEVEL=0`` (or unset) keeps them;
2. installs ``estimator_shims`` (``tf.estimator`` and the private names tensorflow-estimator
   2.15.0 imports).

Only ``tensorflow`` itself is hooked, by wrapping the loader its spec already has: nothing is
imported early, and a process that never imports TensorFlow pays nothing.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import types
from collections.abc import Iterator, Sequence
from typing import Any

_TARGET = "tensorflow"


def install() -> None:
    """Hooks the next ``import tensorflow``, or applies the shims now if it already happened."""
    module = sys.modules.get(_TARGET)
    if module is not None:
        _after_import(module)
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _silencing() -> bool:
    """Whether TensorFlow's start-up lines are to be dropped (``TF_CPP_MIN_LOG_LEVEL`` >= 1)."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    return value.isdigit() and int(value) >= 1


@contextlib.contextmanager
def _stderr_dropped(enabled: bool) -> Iterator[None]:
    """Points file descriptor 2 at a scratch file for the duration, then restores it.

    Everything written there meanwhile (C++ logging included) is discarded. Python's own
    ``sys.stderr`` is flushed first so that nothing written before is lost.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _after_import(module: types.ModuleType) -> None:
    from estimator_fix.compat import estimator_shims

    estimator_shims.install(module)


class _Loader(importlib.abc.Loader):
    """Runs TensorFlow's own loader quietly, then the shims; hands the module back unwrapped."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # The inner loader is put back first, so that nothing can see the wrapper afterwards.
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        with _stderr_dropped(_silencing()):
            self._inner.exec_module(module)
            _probe_devices(module)
        _after_import(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _probe_devices(module: types.ModuleType) -> None:
    """Lists GPUs once while stderr is dropped: the CUDA probe logs its failure at ERROR level.

    Costs milliseconds and does not create the eager context, so sessions configured later
    (``device_count``) are unaffected.
    """
    with contextlib.suppress(Exception):
        module.config.list_physical_devices("GPU")


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the normal way and wraps the loader of the spec found."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        sys.meta_path.remove(self)  # one import of TensorFlow per process
        if spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec
