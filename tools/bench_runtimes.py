"""The runtimes side by side: importing TensorFlow (and the Estimator) and a repair, per venv.

Usage: python tools/bench_runtimes.py [--repeats=5] [--venvs=.venv,.venv-tf221-py312]

Whole processes, measured through tools/bench_children/launch.py, interleaved (one run of each
runtime in turn, so that the other work on the machine weighs on all alike); medians of
``--repeats`` runs (the fastest in brackets):

  import tf          `python -c "import tensorflow"`, as tfenv.quiet_tensorflow leaves it
  import estimator   the same plus `tensorflow_estimator` (through estimator_fix.compat on 2.21)
  repair             `estimator-fix repair` of a fresh copy of testdata/missing_step

Every repair's exit code is checked (0). Each venv's TensorFlow version and size on disk are
printed beside its figures.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import benchlib
from absl import app, flags

_REPEATS = flags.DEFINE_integer("repeats", 5, "Runs per runtime and case.", lower_bound=1)
_VENVS = flags.DEFINE_list("venvs", [".venv", ".venv-tf221-py312"], "Virtual environments.")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_QUIET = "from estimator_fix import tfenv; tfenv.quiet_tensorflow(); "
_CASES = {
    "import tf": _QUIET + "import tensorflow",
    "import estimator": _QUIET + "import tensorflow, tensorflow_estimator",
}


def _version(python: str) -> str:
    code = "from estimator_fix import compat; print(compat.runtime_name())"
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, cwd=_REPO
    ).stdout.strip()


def _size(venv: str) -> str:
    du = subprocess.run(["du", "-sh", venv], capture_output=True, text=True, check=True, cwd=_REPO)
    return du.stdout.split()[0]


def _run(venv: str, case: str, scratch: str, i: int) -> float:
    python = os.path.join(_REPO, venv, "bin", "python")
    stem = os.path.join(scratch, f"{os.path.basename(venv)}-{case.replace(' ', '_')}-{i}")
    if case == "repair":
        model_dir = stem + "-model"
        shutil.copytree(os.path.join(_REPO, "testdata", "missing_step"), model_dir)
        cmd = [python, "-m", "estimator_fix", "repair", f"--model_dir={model_dir}"]
    else:
        cmd = [python, "-c", _CASES[case]]
    measured = benchlib.measure(cmd, cwd=_REPO, log_stem=stem, env=benchlib.child_env())
    if measured.exit_code != 0:
        raise benchlib.BenchError(
            f"{cmd}: exit {measured.exit_code}\n{benchlib.tail(stem + '.err')}"
        )
    return measured.wall


def main(argv: Sequence[str]) -> None:
    del argv
    venvs = [v for v in _VENVS.value if os.path.exists(os.path.join(_REPO, v, "bin", "python"))]
    if not venvs:
        raise app.UsageError("none of --venvs exists (make setup-all)")
    cases = [*_CASES, "repair"]
    walls: dict[tuple[str, str], list[float]] = {(v, c): [] for v in venvs for c in cases}
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as scratch:
        for i in range(_REPEATS.value):
            for case in cases:
                for venv in venvs:
                    walls[venv, case].append(_run(venv, case, scratch, i))
    print(
        f"medians of {_REPEATS.value} whole processes, interleaved (load {os.getloadavg()[0]:.1f})"
    )
    header = f"{'case':<18}" + "".join(f"{v:>22}" for v in venvs)
    print(header)
    for case in cases:
        row = "".join(
            f"{f'{statistics.median(walls[v, case]):.2f}s (min {min(walls[v, case]):.2f}s)':>22}"
            for v in venvs
        )
        print(f"{case:<18}{row}")
    for venv in venvs:
        python = os.path.join(_REPO, venv, "bin", "python")
        print(f"{venv}: {_version(python)}, {_size(venv)} on disk")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
