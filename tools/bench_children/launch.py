"""Spawns one measured command and reaps it: the launcher of ``benchlib.measure``.

Usage: python tools/bench_children/launch.py RESULT_FILE COMMAND [ARG ...]

Linux carries a process's peak RSS across exec and a forked child starts with its parent's
resident pages, so ``ru_maxrss`` of a child forked straight from a benchmark (which may have
imported TensorFlow and held a generated checkpoint) would be at least the benchmark's own RSS.
So the child is spawned from this ~10 MB process and reaped with ``os.wait4``, which gives the
rusage of that one child and of the children it waited for: ``ru_maxrss`` is the largest process
of its tree, ``ru_utime + ru_stime`` the CPU time of the tree. Runs do not see each other's peaks
either, as a ``RUSAGE_CHILDREN`` delta would.

Writes one line to RESULT_FILE:
"<exit code> <wall seconds> <ru_maxrss KiB> <CPU seconds> <epoch at spawn> <epoch when reaped>".
"""

import os
import sys
import time


def main(argv: list[str]) -> None:
    """Runs ``argv[2:]`` with this process's environment; writes the figures to ``argv[1]``."""
    result, cmd = argv[1], argv[2:]
    epoch_start = time.time()
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    epoch_end = time.time()
    cpu = usage.ru_utime + usage.ru_stime
    with open(result, "w") as f:
        f.write(
            f"{os.waitstatus_to_exitcode(status)} {wall!r} {usage.ru_maxrss} {cpu!r} "
            f"{epoch_start!r} {epoch_end!r}"
        )


if __name__ == "__main__":
    main(sys.argv)
