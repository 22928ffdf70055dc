"""The bare export of bench_export.py: what a user with a healthy checkpoint runs.

Usage: python tools/bench_children/bare_export.py MODELS_FILE BUILDER SERVING_FN CHECKPOINT
           EXPORT_BASE SCRATCH_MODEL_DIR TIMINGS_JSON

Imports TensorFlow, loads the model code, builds the Estimator over SCRATCH_MODEL_DIR and runs
``export_saved_model(EXPORT_BASE, serving_fn, checkpoint_path=CHECKPOINT)``. Prints the
SavedModel directory; writes ``{"epoch_start", "epoch_end", "stages": [{"stage", "depth",
"seconds"}]}`` to TIMINGS_JSON: when its first and last lines ran, and how long the TensorFlow
import, the build and the export took.
"""

import time

EPOCH_START = time.time()
_T0 = time.perf_counter()
import tensorflow  # noqa: E402, F401

_T1 = time.perf_counter()
import json  # noqa: E402
import sys  # noqa: E402

import modelfile  # noqa: E402


def main(
    models_file: str,
    builder: str,
    serving_fn: str,
    checkpoint: str,
    base: str,
    scratch: str,
    timings: str,
) -> None:
    """Builds and exports; prints the SavedModel path and writes the timings."""
    t1 = time.perf_counter()
    module = modelfile.load(models_file)
    estimator = getattr(module, builder)(scratch)
    t2 = time.perf_counter()
    path = estimator.export_saved_model(
        base, getattr(module, serving_fn), checkpoint_path=checkpoint
    )
    t3 = time.perf_counter()
    stages = [
        {"stage": "import tensorflow", "depth": 0, "seconds": _T1 - _T0},
        {"stage": "load model code, build the Estimator", "depth": 0, "seconds": t2 - t1},
        {"stage": "export_saved_model", "depth": 0, "seconds": t3 - t2},
    ]
    print(path.decode() if isinstance(path, bytes) else path)
    sys.stdout.flush()
    with open(timings, "w") as f:
        json.dump({"epoch_start": EPOCH_START, "epoch_end": time.time(), "stages": stages}, f)


if __name__ == "__main__":
    main(*sys.argv[1:8])
