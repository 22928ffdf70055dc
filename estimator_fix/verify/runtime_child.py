"""The far side of ``verify --runtime=PYTHON``: load and run a SavedModel in that interpreter.

Run by the other interpreter as ``PYTHON -c SOURCE REQUEST.json`` (this file's source, in a
scratch working directory, so that no folder of estimator-fix lands on that interpreter's
``sys.path``); it imports only the standard library, NumPy and TensorFlow, so the interpreter a
serving stack uses (a TensorFlow 2.21 one without estimator-fix, say) can run it. The request
names the SavedModel, its tags and, per signature, the feed (tensor name -> array) and the
fetches (output key -> tensor name) that ``verify`` used here; the SavedModel is loaded as
``verify`` loads it (``tf.compat.v1.saved_model.loader.load`` in a fresh graph, soft placement
on, as TensorFlow Serving does), every signature is run on that same feed, and the response
file gets the outputs, the exported ``global_step`` and the interpreter's versions. Whatever
fails is one line in the response (``error``); this process always exits 0 once it could write
the response, and TensorFlow's own lines stay on its stderr, which the caller keeps from the
user.

``encode``/``decode`` are the arrays' JSON form, shared with ``verify/elsewhere.py``: numbers as
base64 of their bytes (dtype and shape beside), strings as base64 per element, so that
serialized ``tf.Example`` protos survive byte for byte between NumPy 1 and 2.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np


def encode(value: Any) -> dict[str, Any]:
    """An array (or anything ``np.asarray`` takes) as JSON. Does not perform I/O."""
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        items = [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)]
        return {
            "kind": "bytes",
            "shape": list(array.shape),
            "items": [base64.b64encode(v).decode("ascii") for v in items],
        }
    array = np.ascontiguousarray(array)
    return {
        "kind": "numeric",
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "data": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def decode(doc: dict[str, Any]) -> np.ndarray:
    """The array ``encode`` gave: bytes elements as an object array. Does not perform I/O."""
    shape = tuple(int(d) for d in doc["shape"])
    if doc["kind"] == "bytes":
        flat = np.empty(len(doc["items"]), dtype=object)
        flat[:] = [base64.b64decode(v) for v in doc["items"]]
        return flat.reshape(shape)
    data = base64.b64decode(doc["data"])
    return np.frombuffer(data, dtype=np.dtype(doc["dtype"])).reshape(shape).copy()


def _run(request: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    export_path, tags = request["export_path"], list(request["tags"])
    outputs: dict[str, dict[str, Any]] = {}
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    with graph.as_default(), tf.compat.v1.Session(graph=graph, config=config) as sess:
        tf.compat.v1.saved_model.loader.load(sess, tags, export_path)
        step = tf.compat.v1.train.get_global_step(graph)
        exported_step = None if step is None else int(sess.run(step))
        for signature, job in request["signatures"].items():
            feed = {name: decode(value) for name, value in job["feed"].items()}
            values = sess.run(dict(job["fetch"]), feed_dict=feed)
            outputs[signature] = {key: encode(v) for key, v in values.items()}
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "exported_step": exported_step,
        "outputs": outputs,
    }


def _one_line(e: BaseException) -> str:
    message = getattr(e, "message", None)
    text = message if isinstance(message, str) else str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:400]


def main(argv: list[str]) -> int:
    """Reads the request named by ``argv[1]``, writes the response it names; exit 0 or 2."""
    if len(argv) != 2:
        sys.stderr.write("usage: PYTHON -c SOURCE REQUEST.json\n")
        return 2
    request = json.loads(Path(argv[1]).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        response = _run(request)
    except Exception as e:  # every failure becomes the response's one line
        response = {"python": platform.python_version(), "error": _one_line(e)}
    Path(request["response"]).write_text(json.dumps(response))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
