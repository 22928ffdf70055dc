"""What the benchmark scripts in tools/ share: the measured child process, and the fleet's trees.

The scripts are run as ``python tools/bench_<x>.py``, which puts tools/ on ``sys.path``, so they
import this file as the sibling module ``benchlib`` (tools/ is no package). It defines no flags.

Measuring (bench_repair.py, bench_export.py, bench_fleet.py):
  ``measure(cmd, cwd=..., log_stem=...)`` runs ``cmd`` as a whole process through a small
  launcher and returns a ``Measured``: exit code, wall seconds, peak RSS, CPU seconds and the
  wall-clock (epoch) times at spawn and when reaped. ``<log_stem>.out`` and ``.err`` get the
  child's output, ``<log_stem>.rusage`` the launcher's figures.

Model directories (bench_scan.py, bench_fleet.py):
  ``Writer`` writes small V2 checkpoints of Estimator-like tensors and a state file, one per
  ``Case``; ``EXPECTED`` is the verdict and problem code ``estimator_fix.scan`` must give each.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class BenchError(RuntimeError):
    """The benchmark's result cannot be trusted: a run failed, a result did not verify, or the
    subject or the machine is not what the benchmark needs."""


# --- measuring ----------------------------------------------------------------------------------

# A tiny launcher between the benchmark and each measured child. Linux carries a process's peak
# RSS across exec and a forked child starts with its parent's resident pages, so ``ru_maxrss`` of
# a child forked straight from the benchmark (which may have imported TensorFlow and held a
# generated checkpoint) would be at least the benchmark's own RSS. So the child is spawned from
# this ~10 MB process and reaped with ``os.wait4``, which gives the rusage of that one child and
# of the children it waited for: ``ru_maxrss`` is the largest process of its tree, ``ru_utime +
# ru_stime`` the CPU time of the tree. Runs do not see each other's peaks either, as a
# ``RUSAGE_CHILDREN`` delta would. argv: result file, then the command. Writes
# "<exit code> <wall seconds> <ru_maxrss KiB> <CPU seconds> <epoch at spawn> <epoch when reaped>".
_LAUNCHER = """\
import os, sys, time
epoch_start = time.time()
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
epoch_end = time.time()
cpu = usage.ru_utime + usage.ru_stime
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {wall!r} {usage.ru_maxrss} {cpu!r} "
            f"{epoch_start!r} {epoch_end!r}")
"""


@dataclasses.dataclass(frozen=True)
class Measured:
    """What the launcher measured for one child process."""

    exit_code: int
    wall: float  # seconds, spawn to reaped
    peak_rss_bytes: int  # the largest process of the child's tree
    cpu: float  # user + system seconds of the child and the children it waited for
    started: float  # epoch seconds (time.time()) just before the spawn
    ended: float  # epoch seconds just after the child was reaped


def tail(path: str, lines: int = 15) -> str:
    """The last ``lines`` lines of the text file ``path``."""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def measure(
    cmd: Sequence[str], *, cwd: str, log_stem: str, env: Mapping[str, str] | None = None
) -> Measured:
    """Runs ``cmd`` in ``cwd`` through the launcher (see ``_LAUNCHER``) and reaps it.

    ``env`` is the child's environment (None: this process's). The wall time is taken in the
    launcher, around spawn and wait.

    Raises:
      BenchError: the launcher itself failed.
    """
    result = log_stem + ".rusage"
    with open(log_stem + ".out", "wb") as out, open(log_stem + ".err", "wb") as err:
        launcher = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, result, *cmd],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            check=False,
        )
    if launcher.returncode != 0:
        raise BenchError(f"the launcher failed ({launcher.returncode}):\n{tail(log_stem + '.err')}")
    with open(result) as f:
        code, wall, maxrss_kib, cpu, started, ended = f.read().split()
    return Measured(
        exit_code=int(code),
        wall=float(wall),
        peak_rss_bytes=int(maxrss_kib) * 1024,
        cpu=float(cpu),
        started=float(started),
        ended=float(ended),
    )


# --- model directories --------------------------------------------------------------------------

FOREIGN_DIR = "/home/alice/models/run7"  # what a foreign state file names
FIRST_STEP = 1000  # the step of a tree's first directory
RENAMED_KEY = "my_global_step"
_BIG_CHUNK_MIB = 256  # big checkpoints hold tensors of at most this size


class Case(enum.StrEnum):
    HEALTHY = "healthy"
    NO_STEP = "no_step"
    INT32_STEP = "int32_step"
    RENAMED_STEP = "renamed_step"
    FOREIGN = "foreign"


# The verdict each case must get, and the problem code that must be among its problems.
EXPECTED: dict[Case, tuple[str, str | None]] = {
    Case.HEALTHY: ("healthy", None),
    Case.NO_STEP: ("repairable", "step_missing"),
    Case.INT32_STEP: ("repairable", "step_wrong_dtype"),
    Case.RENAMED_STEP: ("repairable", "step_renamed"),
    Case.FOREIGN: ("repairable", "state_foreign_path"),
}

_TEMPLATES = (
    ("dnn/hiddenlayer_{k}/kernel", "float32", (8, 8)),
    ("dnn/hiddenlayer_{k}/bias", "float32", (8,)),
    ("dnn/hiddenlayer_{k}/kernel/t_0/Adagrad", "float32", (8, 8)),
    ("dnn/hiddenlayer_{k}/bias/t_0/Adagrad", "float32", (8,)),
    ("linear/linear_model/feature_{k}/weights", "float32", (4, 1)),
    ("linear/linear_model/feature_{k}/bucket_ids", "int64", (4,)),
    ("dnn/hiddenlayer_{k}/zero_fraction_counts", "int64", (2,)),
)


def tensor_specs(count: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """``count`` Estimator-like (name, dtype, shape); none looks like a step. Pure."""
    out: list[tuple[str, str, tuple[int, ...]]] = []
    for i in range(count):
        name, dtype, shape = _TEMPLATES[i % len(_TEMPLATES)]
        out.append((name.format(k=i // len(_TEMPLATES)), dtype, shape))
    return out


def _state_text(prefix: str) -> str:
    return f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n'


class Writer:
    """Writes model directories with ``tf.raw_ops.SaveV2`` in this (eager) process.

    Every checkpoint holds the same ``tensors - 1`` tensors (seeded random values) plus its step
    key, each value shifted by ``offsets(step)``: (added to int64 tensors, added to float32 ones).
    """

    def __init__(self, tensors: int, *, offsets: Callable[[int], tuple[int, float]]) -> None:
        import numpy as np

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self._np = np
        self._tf = tf
        self._offsets = offsets
        specs = tensor_specs(tensors - 1)
        rng = np.random.default_rng(0)
        self._names = [name for name, _, _ in specs]
        self._base: list[Any] = [
            rng.standard_normal(shape).astype(np.float32)
            if dtype == "float32"
            else rng.integers(0, 1000, shape, dtype=np.int64)
            for _, dtype, shape in specs
        ]

    def write(self, path: str, case: Case, step: int, *, big_mib: int = 0) -> int:
        """Writes ``model.ckpt-<step>`` and a state file into ``path``; returns the key count.

        ``big_mib``: also that many MiB of zeros, in tensors ``embedding/big_<k>``.
        """
        np = self._np
        os.makedirs(path)
        prefix = os.path.join(path, f"model.ckpt-{step}")
        keys = list(self._names)
        int_offset, float_offset = self._offsets(step)
        values: list[Any] = [
            b + (int_offset if b.dtype == np.int64 else float_offset) for b in self._base
        ]
        left, k = big_mib, 0
        while left > 0:
            chunk = min(left, _BIG_CHUNK_MIB)
            keys.append(f"embedding/big_{k}")
            values.append(np.zeros((chunk * 256, 1024), dtype=np.float32))
            left, k = left - chunk, k + 1
        if case is Case.RENAMED_STEP:
            keys.append(RENAMED_KEY)
            values.append(np.int64(step))
        elif case is not Case.NO_STEP:
            keys.append("global_step")
            values.append(np.int32(step) if case is Case.INT32_STEP else np.int64(step))
        self._tf.raw_ops.SaveV2(
            prefix=prefix, tensor_names=keys, shape_and_slices=[""] * len(keys), tensors=values
        )
        named = os.path.basename(prefix)
        if case is Case.FOREIGN:
            named = os.path.join(FOREIGN_DIR, named)
        with open(os.path.join(path, "checkpoint"), "w") as f:
            f.write(_state_text(named))
        return len(keys)
