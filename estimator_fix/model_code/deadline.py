"""Time limits on calls into the user's model, and sessions configured as Serving's are.

Why: one model directory must never hold a fleet hostage. A ``model_fn`` that loops, a serving
input function that waits on a dead network share, or a model whose predictions never read
their input (``Estimator.predict`` then never reaches the end of it) would otherwise hang the
run with no word on what is stuck.

``deadline(seconds, what)`` bounds a block. What it bounds, measured with TensorFlow 2.15 on
Linux:

- Python code on the main thread (loops, ``time.sleep``, blocking I/O): ``SIGALRM`` from
  ``setitimer`` raises inside it when the time is up.
- Python code on any other thread (Beam runs its work there): an asynchronous exception
  (``PyThreadState_SetAsyncExc``) raised at the next bytecode: loops are bounded, a blocking C
  call (``time.sleep``, a socket read) only once it returns.
- TensorFlow ops cannot be interrupted from Python (a signal waits until ``Session.run``
  returns). ``session_config`` sets ``operation_timeout_in_ms`` on the sessions verify and the
  Estimator open, which cancels a run that does not end (a ``while_loop`` that never stops).
- Not bounded: a ``tf.py_function``/``numpy_function`` that blocks inside a session run (the
  session waits for it).

When the time is up the exception that comes out of the block (ours, or whatever TensorFlow
turned it into) becomes one ``UserCodeTimeoutError`` line naming what timed out, where the
user's code was, and how to raise the limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from estimator_fix import errors

DEFAULT_TIMEOUT_SECONDS = 600.0
TIMEOUT_FLAG = "--timeout"
# Raise again while the code swallows the first one (``except BaseException``): seldom, so that
# TensorFlow's clean-up on the way out (closing a session, leaving a graph) is not cut short.
_REPEAT_SECONDS = 5.0

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_active = threading.local()


class UserCodeTimeoutError(errors.UserCodeError):
    """A call into the user's model did not finish within its time limit (exit code 8)."""


class _Expired(BaseException):
    """Raised into the running code when its time is up.

    A BaseException, so that the user's ``except Exception`` does not swallow it.
    """


def check_timeout(seconds: float | None) -> float | None:
    """``seconds`` as a limit: None or 0 mean none.

    Raises:
      errors.UsageError: a negative or non-numeric value.
    """
    if seconds is None or seconds == 0:
        return None
    if not isinstance(seconds, int | float) or not seconds > 0:
        raise errors.UsageError(
            f"{TIMEOUT_FLAG}={seconds}: must be a number of seconds > 0 (0 = no limit)"
        )
    return float(seconds)


class _Deadline:
    """One armed limit; see ``deadline``."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.fired = False
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread_id = threading.get_ident()
        self.previous_handler: Any = None
        self.watchdog: threading.Thread | None = None

    def arm(self) -> None:
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            self.previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds, _REPEAT_SECONDS)
            return
        self.watchdog = threading.Thread(target=self._watch, name="estimator-fix-deadline")
        self.watchdog.daemon = True
        self.watchdog.start()

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.done.is_set() or (frame is not None and frame.f_code in _DISARM_CODES):
            return
        self.fired = True
        raise _Expired()

    def _watch(self) -> None:
        wait = self.seconds
        while not self.done.wait(wait):
            with self.lock:
                if self.done.is_set():
                    return
                self.fired = True
                _set_async_exc(self.thread_id, _Expired)
            wait = _REPEAT_SECONDS

    def disarm(self) -> None:
        """Stops the timer; retried if the last alarm lands while it runs."""
        while True:
            try:
                self.done.set()
                if self.watchdog is not None:
                    with self.lock:
                        _clear_async_exc(self.thread_id, None)  # drop one not yet delivered
                else:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, self.previous_handler)
                return
            except _Expired:
                continue

    def message(self, error: BaseException | None) -> str:
        from estimator_fix.model_code import userspec

        frame = userspec.user_frame(error) if error is not None else None
        where = f" (it was at {frame.filename}:{frame.lineno} in {frame.name})" if frame else ""
        return (
            f"{self.what} did not finish within {self.seconds:g} s{where}; the model code may "
            "loop forever or wait for something that never comes; fix it, or raise the limit "
            f"with {TIMEOUT_FLAG}=SECONDS (0 = no limit)"
        )


_DISARM_CODES = (_Deadline.disarm.__code__, _Deadline._on_alarm.__code__)


@contextlib.contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[None]:
    """Bounds the block to ``seconds`` (None or 0 = no limit); see the module docstring.

    Inside a block that already has a limit on this thread, the outer limit governs (one timer
    per thread, named after the outermost call).

    Raises:
      UserCodeTimeoutError: the time was up before the block finished; it replaces whatever
        the block raised then (TensorFlow may turn the interruption into its own error).
    """
    limit = check_timeout(seconds)
    if limit is None or getattr(_active, "deadline", None) is not None:
        yield
        return
    armed = _Deadline(limit, what)
    _active.deadline = armed
    armed.arm()
    try:
        yield
    except BaseException as e:
        _finish(armed)
        if armed.fired:
            raise UserCodeTimeoutError(armed.message(e), path=_user_file(e)) from e
        raise
    _finish(armed)


def _finish(armed: _Deadline) -> None:
    armed.disarm()
    _active.deadline = None


def _user_file(error: BaseException) -> str | None:
    from estimator_fix.model_code import userspec

    frame = userspec.user_frame(error)
    return frame.filename if frame else None


def session_config(base: Any | None, timeout: float | None) -> Any:
    """A copy of ``base`` (a ConfigProto or None) with soft placement on, as Serving loads.

    Variables pinned to devices this machine lacks (``/cpu:1``, ``/gpu:0`` from multi-device
    training) are then placed where they can be, as ``tf.saved_model.load`` and TensorFlow
    Serving do, instead of failing with "Restoring from checkpoint failed". ``timeout`` becomes
    ``operation_timeout_in_ms``, the only bound on TensorFlow ops that never end.
    """
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    if base is not None:
        config.CopyFrom(base)
    config.allow_soft_placement = True
    limit = check_timeout(timeout)
    if limit is not None:
        config.operation_timeout_in_ms = max(1, int(limit * 1000))
    return config


@contextlib.contextmanager
def estimator_sessions(estimator: Any, timeout: float | None) -> Iterator[None]:
    """The Estimator's ``predict`` and ``export_saved_model`` sessions, as ``session_config``.

    Both open their session with ``estimator._session_config``; it is replaced for the block
    and restored afterwards, so the user's object is left as it was.
    """
    original = getattr(estimator, "_session_config", None)
    estimator._session_config = session_config(original, timeout)
    try:
        yield
    finally:
        estimator._session_config = original
