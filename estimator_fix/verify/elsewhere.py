"""``verify --runtime=PYTHON``: the same SavedModel, the same feeds, run by another interpreter.

A migration exports on one runtime and serves on another (Python 3.11 with TensorFlow 2.15 here,
a TensorFlow 2.21 serving stack there). ``compare`` hands that interpreter
``runtime_child.py``'s source, the SavedModel and, per signature, exactly the feed this
process ran (the given or synthesized rows; serialized ``tf.Example`` protos byte for byte),
then compares every output it returns with this process's: the largest absolute difference for
numbers, equality for strings, and the exported ``global_step``. The other interpreter needs
only TensorFlow and NumPy; its start-up lines stay in its own stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from estimator_fix import errors, serialize
from estimator_fix.verify import runtime_child

_CHILD_SOURCE = Path(runtime_child.__file__)


@dataclasses.dataclass(frozen=True)
class RuntimeOutput(serialize.Serializable):
    """One signature output, here and there.

    Attributes:
      signature: the signature_def key.
      output: the output key.
      compared: ``numeric`` or ``exact`` (strings).
      max_abs_diff: the largest absolute difference (numeric); None for strings, or when the
        shapes differ or a NaN/inf differs (then ``mismatched`` > 0).
      mismatched: elements beyond the tolerance (numeric) or unequal (exact); all of them
        when the shapes differ.
      ok: within the tolerance everywhere, with the same shape and dtype kind.
    """

    signature: str
    output: str
    compared: str
    max_abs_diff: float | None
    mismatched: int
    ok: bool


@dataclasses.dataclass(frozen=True)
class RuntimeParity(serialize.Serializable):
    """What the other interpreter gave.

    Attributes:
      python: the interpreter, as given to ``--runtime``.
      runtime: its versions, e.g. ``Python 3.12.1, TensorFlow 2.21.0``.
      exported_step: the ``global_step`` it read from the SavedModel.
      outputs: one row per output of every signature run here.
      max_abs_diff: the largest numeric difference; None when there was none to take.
      ok: every output within the tolerance and the same exported step.
    """

    python: str
    runtime: str
    exported_step: int | None
    outputs: tuple[RuntimeOutput, ...]
    max_abs_diff: float | None
    ok: bool


def compare(
    python: str,
    export_path: str,
    tags: tuple[str, ...],
    feeds: Mapping[str, Mapping[str, Any]],
    fetches: Mapping[str, Mapping[str, str]],
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    exported_step: int | None,
    tolerance: float,
    timeout: float | None,
) -> tuple[RuntimeParity, list[str]]:
    """Runs the signatures in ``python`` on ``feeds`` and compares with ``outputs``.

    Args:
      python: the other interpreter (a path, or a name on PATH).
      export_path: the SavedModel directory (local: the other process reads it too).
      tags: the MetaGraph tags it was loaded with here.
      feeds: signature -> tensor name -> the value fed here.
      fetches: signature -> output key -> tensor name.
      outputs: signature -> output key -> what this process got.
      exported_step: the ``global_step`` this process read.
      tolerance: the largest absolute difference accepted per element.
      timeout: seconds for the whole child process; None or 0 = no limit.

    Returns:
      The comparison and its check lines (a mismatch is a result, not an error).

    Raises:
      errors.UsageError: ``python`` is not an interpreter that runs.
      errors.ExportError: the SavedModel does not load or run there, or the child timed out.
    """
    flag = f"--runtime={python}"
    found = shutil.which(python)
    executable = os.path.abspath(found) if found else None  # the child runs in a scratch dir
    if executable is None:
        raise errors.UsageError(f"{flag}: no such interpreter (give a path or a name on PATH)")
    with tempfile.TemporaryDirectory(prefix="estimator-fix-runtime-") as scratch:
        request = Path(scratch, "request.json")
        response = Path(scratch, "response.json")
        request.write_text(
            json.dumps(
                {
                    "export_path": os.path.abspath(export_path),
                    "tags": list(tags),
                    "response": str(response),
                    "signatures": {
                        s: {
                            "feed": {k: runtime_child.encode(v) for k, v in feeds[s].items()},
                            "fetch": dict(fetches[s]),
                        }
                        for s in outputs
                    },
                }
            )
        )
        try:
            done = subprocess.run(
                [executable, "-c", _CHILD_SOURCE.read_text(), str(request)],
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=timeout or None,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise errors.ExportError(
                f"{flag}: loading and running {export_path} there took over {timeout:g} s",
                path=export_path,
            ) from e
        except OSError as e:
            raise errors.UsageError(f"{flag}: cannot run it ({e.strerror})") from e
        if not response.exists():
            last = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
            raise errors.UsageError(
                f"{flag}: not a Python with TensorFlow and NumPy (exit {done.returncode}: "
                f"{last[0].strip()[:300]})"
            )
        answer = json.loads(response.read_text())
    if "error" in answer:
        raise errors.ExportError(
            f"{flag} (Python {answer.get('python', '?')}): {export_path} does not load or run "
            f"there: {answer['error']}",
            path=export_path,
        )
    return _compare(python, answer, outputs, exported_step, tolerance)


def _compare(
    python: str,
    answer: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    exported_step: int | None,
    tolerance: float,
) -> tuple[RuntimeParity, list[str]]:
    runtime = f"Python {answer['python']}, TensorFlow {answer['tensorflow']}"
    rows: list[RuntimeOutput] = []
    for signature, here in outputs.items():
        there = answer["outputs"].get(signature, {})
        for key in sorted(here):
            other = runtime_child.decode(there[key]) if key in there else None
            rows.append(_compare_one(signature, key, np.asarray(here[key]), other, tolerance))
    step_ok = answer["exported_step"] == exported_step
    ok = step_ok and all(r.ok for r in rows)
    diffs = [r.max_abs_diff for r in rows if r.max_abs_diff is not None]
    parity = RuntimeParity(
        python=python,
        runtime=runtime,
        exported_step=answer["exported_step"],
        outputs=tuple(rows),
        max_abs_diff=max(diffs) if diffs else None,
        ok=ok,
    )
    within = sum(r.ok for r in rows)
    checks = [
        f"{'OK' if ok else 'FAILED'}: on {runtime} ({python}): {within} of {len(rows)} "
        f"output(s) within {tolerance:g} of this runtime's"
        + (f", max |diff| = {parity.max_abs_diff:.3g}" if diffs else "")
        + (
            ""
            if step_ok
            else f"; global_step {answer['exported_step']} there, {exported_step} here"
        )
    ]
    checks.extend(
        f"  {r.signature}/{r.output}: {r.mismatched} element(s) differ there"
        for r in rows
        if not r.ok
    )
    return parity, checks


def _compare_one(
    signature: str, key: str, here: np.ndarray, there: np.ndarray | None, tolerance: float
) -> RuntimeOutput:
    strings = here.dtype.kind in "OSU"
    compared = "exact" if strings else "numeric"
    if there is None or there.shape != here.shape or (there.dtype.kind in "OSU") != strings:
        return RuntimeOutput(signature, key, compared, None, int(here.size), False)
    if strings:
        pairs = zip(here.reshape(-1), there.reshape(-1), strict=True)
        mismatched = int(sum(a != b for a, b in pairs))
        return RuntimeOutput(signature, key, compared, None, mismatched, mismatched == 0)
    a, b = here.astype(np.float64), there.astype(np.float64)
    same_special = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    diff = np.where(same_special, 0.0, np.abs(a - b))
    bad = ~(diff <= tolerance)
    largest = float(diff.max()) if diff.size and np.isfinite(diff).all() else None
    if not diff.size:
        largest = 0.0
    mismatched = int(bad.sum())
    return RuntimeOutput(signature, key, compared, largest, mismatched, mismatched == 0)
