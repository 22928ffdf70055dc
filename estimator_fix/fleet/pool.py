"""The fleet's worker pool: ``spawn``-ed processes that survive a worker that dies.

``Runner`` sends jobs to a ``ProcessPoolExecutor`` (scans in batches, the rest one per task,
a bounded number in flight) and records each ``JobResult`` as it arrives. When a worker dies,
the jobs in flight are suspects; each is run again alone, so that only the one that kills its
worker again is recorded as failed (``WorkerCrashError``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool

from absl import logging

from estimator_fix import errors, tfenv
from estimator_fix.fleet.result import WORKER_CRASH, ErrorInfo, JobResult, failed_result
from estimator_fix.fleet.work import run_jobs
from estimator_fix.options import Job
from estimator_fix.storage import fs

_IN_FLIGHT_PER_WORKER = 2  # tasks queued per worker: keeps workers busy, bounds crash suspects
_MAX_SCAN_CHUNK = 32  # scans per task


def default_workers() -> int:
    """The CPUs this process may run on (affinity-aware in containers), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _worker_init() -> None:
    """Quiets TensorFlow in a fresh worker, as ``cli.run`` does in the main process."""
    tfenv.quiet_tensorflow()
    # The parent handles Ctrl-C: it cancels what is queued; a running repair is crash-safe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _new_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    # spawn: a fresh interpreter per worker. fork would copy a parent that may hold
    # TensorFlow's threads and locks (a fork after TF was imported can deadlock).
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
    )


def _exit_codes(pool: concurrent.futures.ProcessPoolExecutor) -> list[int]:
    """Exit codes of the pool's dead workers, best effort (the executor keeps them private)."""
    processes = getattr(pool, "_processes", None) or {}
    codes = []
    for p in list(processes.values()):
        p.join(timeout=5)
        if p.exitcode not in (None, 0, -signal.SIGTERM):
            codes.append(int(p.exitcode))
    return codes


def _describe_exit(codes: Iterable[int]) -> str:
    parts = []
    for code in codes:
        if code < 0:
            try:
                parts.append(f"killed by {signal.Signals(-code).name}")
            except ValueError:
                parts.append(f"killed by signal {-code}")
        else:
            parts.append(f"exit code {code}")
    return f" ({', '.join(parts)})" if parts else ""


def _chunk_size(jobs: Sequence[Job], workers: int) -> int:
    """Jobs per task: scans take milliseconds, so they travel in batches; the rest one by one.

    Does not perform I/O.
    """
    if any(j.command != "scan" for j in jobs):
        return 1
    return max(1, min(_MAX_SCAN_CHUNK, len(jobs) // (workers * 8)))


_Futures = dict[concurrent.futures.Future[list[JobResult]], list[Job]]


class Runner:
    """Runs jobs on a process pool; survives workers that die.

    When a worker dies, the executor fails every task in flight: their jobs are suspects. They
    are run again one at a time, each alone in a one-worker pool, so that the job that kills its
    worker again is recorded as failed (``WorkerCrashError``) and the innocent ones complete.
    """

    def __init__(self, workers: int, record: Callable[[JobResult], None]) -> None:
        self._workers = workers
        self._record = record
        self.restarts = 0

    def run(self, jobs: Sequence[Job]) -> None:
        size = _chunk_size(jobs, self._workers)
        pending = collections.deque(list(jobs[i : i + size]) for i in range(0, len(jobs), size))
        while pending:
            suspects = self._run_batch(pending)
            if suspects:
                self._run_alone(suspects)

    def _record_all(
        self, future: concurrent.futures.Future[list[JobResult]], chunk: list[Job]
    ) -> None:
        error = future.exception()
        if error is None:
            for result in future.result():
                self._record(result)
            return
        # run_job never raises: this is a job or a result failing to cross the process boundary.
        for job in chunk:
            model_dir = fs.normalize(job.model_dir)
            message = f"{job.model_dir}: {errors.one_line(error)}"
            info = ErrorInfo(type(error).__name__, message, model_dir)
            self._record(failed_result(job, model_dir, info, errors.EXIT_BAD_INPUT))

    def _run_batch(self, pending: collections.deque[list[Job]]) -> list[Job]:
        """Runs ``pending`` until it is empty or the pool breaks; returns the jobs in flight."""
        pool = _new_pool(self._workers)
        in_flight: _Futures = {}
        limit = self._workers * _IN_FLIGHT_PER_WORKER
        broken = False
        try:
            try:
                while (pending or in_flight) and not broken:
                    while pending and len(in_flight) < limit:
                        chunk = pending.popleft()
                        in_flight[pool.submit(run_jobs, chunk)] = chunk
                    finished, _ = concurrent.futures.wait(
                        in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in finished:
                        if isinstance(future.exception(), BrokenProcessPool):
                            broken = True
                        else:
                            self._record_all(future, in_flight.pop(future))
            except KeyboardInterrupt:
                self._finish_running(in_flight)
                raise
            if not broken:
                return []
            # Tasks that finished before the break still have their results.
            for future in [f for f in in_flight if f.done()]:
                if not isinstance(future.exception(), BrokenProcessPool):
                    self._record_all(future, in_flight.pop(future))
            suspects = [job for chunk in in_flight.values() for job in chunk]
            self.restarts += 1
            logging.warning(
                "fleet: a worker process died%s; running the %d director%s in flight again, "
                "one at a time",
                _describe_exit(_exit_codes(pool)),
                len(suspects),
                "y" if len(suspects) == 1 else "ies",
            )
            return suspects
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _finish_running(self, in_flight: _Futures) -> None:
        """Ctrl-C: drop what has not started, record what is running (workers ignore SIGINT)."""
        running = {f: chunk for f, chunk in in_flight.items() if not f.cancel()}
        logging.warning(
            "fleet: interrupted; waiting for the %d task%s in progress to finish "
            "(Ctrl-C again to stop waiting; an interrupted repair is crash-safe)",
            len(running),
            "" if len(running) == 1 else "s",
        )
        for future in concurrent.futures.as_completed(running):
            if not isinstance(future.exception(), BrokenProcessPool):
                self._record_all(future, running[future])

    def _run_alone(self, suspects: Sequence[Job]) -> None:
        pool: concurrent.futures.ProcessPoolExecutor | None = None
        try:
            for job in suspects:
                if pool is None:
                    pool = _new_pool(1)
                future = pool.submit(run_jobs, [job])
                concurrent.futures.wait([future])
                if not isinstance(future.exception(), BrokenProcessPool):
                    self._record_all(future, [job])
                    continue
                how = _describe_exit(_exit_codes(pool))
                pool.shutdown(wait=True)
                pool = None
                self.restarts += 1
                model_dir = fs.normalize(job.model_dir)
                message = (
                    f"{job.model_dir}: the worker process died{how} while working on this "
                    "directory, twice (the second time alone): a crash in native code, os._exit "
                    "in user code, or the out-of-memory killer; run it alone with --workers=1 "
                    "to see"
                )
                info = ErrorInfo(WORKER_CRASH, message, model_dir)
                self._record(failed_result(job, model_dir, info, errors.EXIT_BAD_INPUT))
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
