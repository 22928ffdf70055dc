"""``estimator_fix.fix.fix`` in-process, with a timer around each public stage function it calls.

Usage: python tools/bench_children/profile_fix.py MODEL_DIR EXPORT_BASE ESTIMATOR_SPEC
           SERVING_SPEC TIMINGS_JSON

The profile runs of bench_export.py: the same code path as ``estimator-fix fix``, except that
TensorFlow is imported just before ``fix()`` (after estimator_fix, as in the CLI, which imports
it while building the Estimator), so that the import shows as its own line. The timers wrap the
public functions in ``TIMED`` where their callers look them up; a name that is not there is
reported under ``untimed`` rather than failing the run.

Every full (generation 2) garbage collection is charged to the innermost stage running
(``gc.callbacks``): with TensorFlow's heap one takes ~0.15 s and it lands in whichever stage
happens to allocate past the threshold.

Writes to TIMINGS_JSON: ``epoch_start`` and ``epoch_end`` (when the first and last lines ran),
``stages`` (``{"stage", "depth", "seconds", "gc_seconds"}`` in call order, ``depth`` the
nesting), ``ok``, ``export_path``, ``repaired``, ``fix_seconds`` (``FixResult.seconds``) and
``untimed``.
"""

import time

EPOCH_START = time.time()
import contextlib  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, ParamSpec, TypeVar  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")

# (module, function, label), looked up in the module its caller reads it from: fix.py calls
# `scan` and `load_model` by the names it imported, the rest through their modules.
TIMED = (
    ("estimator_fix.fix", "scan", "scan"),
    ("estimator_fix.plan", "plan", "plan"),
    ("estimator_fix.fix", "load_model", "load model code, build the Estimator"),
    ("estimator_fix.export", "preflight", "pre-flight (build graph, compare keys)"),
    ("estimator_fix.repair", "repair", "repair"),
    ("estimator_fix.export", "export", "export (export_saved_model)"),
    ("estimator_fix.verify", "verify", "verify"),
    ("estimator_fix.verify.parity", "read_checkpoint_step", "read the checkpoint's step"),
    ("estimator_fix.verify.savedmodel", "load_and_run", "load the SavedModel, run its signatures"),
    ("estimator_fix.verify.parity", "predict", "Estimator.predict on the checkpoint (parity)"),
)

STAGES: list[dict[str, Any]] = []
_OPEN: list[dict[str, Any]] = []  # the records of the stages running now, innermost last
_GC_START = [0.0]


def _on_gc(phase: str, info: dict[str, int]) -> None:
    """Charges every full (generation 2) collection to the innermost stage running."""
    if info["generation"] != 2:
        return
    if phase == "start":
        _GC_START[0] = time.perf_counter()
    elif _OPEN:
        _OPEN[-1]["gc_seconds"] += time.perf_counter() - _GC_START[0]


def timed(label: str, fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, recording each call's seconds under ``label`` in ``STAGES``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        record: dict[str, Any] = {
            "stage": label,
            "depth": len(_OPEN),
            "seconds": None,
            "gc_seconds": 0.0,
        }
        STAGES.append(record)
        _OPEN.append(record)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record["seconds"] = time.perf_counter() - start
            _OPEN.pop()

    return wrapper


def import_estimator_fix() -> None:
    """Imports every module of ``TIMED`` and the fix options (what the CLI has imported)."""
    for name in sorted({module for module, _, _ in TIMED} | {"estimator_fix.options"}):
        with contextlib.suppress(ImportError):  # reported by install_timers
            importlib.import_module(name)


def import_tensorflow() -> None:
    """What building the user's Estimator imports first thing."""
    importlib.import_module("tensorflow")
    importlib.import_module("tensorflow_estimator.python.estimator.estimator")


def install_timers() -> list[str]:
    """Wraps every function of ``TIMED``; returns the ``module.function`` names not found."""
    untimed = []
    for module_name, attr, label in TIMED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            untimed.append(f"{module_name}.{attr}")
            continue
        fn = getattr(module, attr, None)
        if callable(fn):
            setattr(module, attr, timed(label, fn))
        else:
            untimed.append(f"{module_name}.{attr}")
    return untimed


def main(model_dir: str, export_base: str, estimator: str, serving: str, timings: str) -> None:
    """Runs ``fix`` under the timers; writes the timings."""
    from estimator_fix import tfenv

    tfenv.quiet_tensorflow()  # as every entry point does before TensorFlow is imported
    gc.callbacks.append(_on_gc)
    # The CLI's order: estimator_fix first, TensorFlow later. It matters: one-time set-up
    # (~0.15 s) lands in the pre-flight or in the repair depending on it.
    timed("import estimator_fix", import_estimator_fix)()
    timed("import tensorflow, tensorflow_estimator", import_tensorflow)()
    untimed = install_timers()
    from estimator_fix import fix as fix_lib
    from estimator_fix.options import Job

    job = Job(
        command="fix",
        model_dir=model_dir,
        estimator=estimator,
        serving_input_fn=serving,
        export_dir=export_base,
    )
    result = timed("fix()", fix_lib.fix)(job)
    with open(timings, "w") as f:
        json.dump(
            {
                "epoch_start": EPOCH_START,
                "epoch_end": time.time(),
                "stages": STAGES,
                "ok": result.ok,
                "export_path": result.export_path,
                "repaired": result.repair is not None,
                "fix_seconds": result.seconds,
                "untimed": untimed,
            },
            f,
        )


if __name__ == "__main__":
    main(*sys.argv[1:6])
