"""Temporary path -> validate -> finalize by rename: the write helpers of every stage.

Temporary files and directories carry ``TEMP_MARKER`` in their names (``storage.names``) so
that a crashed run's leftovers are recognisable: ``scan`` reports them and ``repair`` removes
them (never reuses them). A crash (even SIGKILL) at any instant therefore leaves: the original
files as they were, the ``checkpoint`` state file either old or new (``os.replace`` is
atomic), and at most some marked temporaries or unreferenced new files that the next run
cleans up.

On filesystems with a scheme (``gs://``, ``ram://``) what is atomic is less: a single file
rename (on GCS a server-side copy then delete: the destination object appears whole or not at
all), never a directory rename. So an ``--output_dir`` there is built file by file under
``INCOMPLETE_MARKER`` (see ``repair``). With the ``gcs`` extra (``storage.gcs``), ``gs://``
gets a lock object and server-side copies of data files; without it, and on other schemes,
``lock`` is a no-op (run one repair of a directory at a time) and data files are streamed
through this process by ``tf.io.gfile.copy``.

``ESTIMATOR_FIX_KILL_AT`` (tests only): the name of a failpoint at which the process sends
itself SIGKILL, so the fault-injection test can stop a repair at every step of its commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import time
from collections.abc import Iterator

from estimator_fix import errors
from estimator_fix.storage import fs, gcs
from estimator_fix.storage.names import (  # the names this module writes
    HOST,
    LOCK_NAME,
    temp_name,
    temp_owner,
)

_KILL_ENV = "ESTIMATOR_FIX_KILL_AT"


def failpoint(name: str) -> None:
    """Kills the process here if the fault-injection test asked for it."""
    if os.environ.get(_KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _owner_is_gone(host: str, pid: int) -> bool:
    if host != HOST:
        return False  # another machine's run: it may still be going; never ours to remove
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_dead_temporaries(parent: str, final_name: str) -> tuple[str, ...]:
    """Removes temporaries for ``final_name`` in ``parent`` whose owning process has died.

    Used where no lock can be held (the parent of an ``--output_dir``): a temporary whose
    owner is alive, or ran on another host, is left alone.
    """
    if not fs.exists(parent):
        return ()
    removed = []
    for name in fs.listdir(parent):
        owner = temp_owner(name, final_name)
        if owner is not None and _owner_is_gone(*owner):
            path = fs.join(parent, name)
            remove_path(path)
            removed.append(path)
    return tuple(removed)


@contextlib.contextmanager
def write_errors(path: str) -> Iterator[None]:
    """Turns OS errors raised while writing ``path`` into ``errors.WriteError``."""
    try:
        yield
    except errors.Error:
        raise
    except Exception as e:
        if not isinstance(e, OSError):
            if not _is_tf_error(e):
                raise
            # gfile writes (gs://, ram://) raise TensorFlow's errors, not OSError.
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise errors.WriteError(
                f"{path}: write failed: {first}; nothing was committed and the original files "
                "are untouched",
                path=path,
            ) from e
        where = e.filename or path
        reason = {
            errno.ENOSPC: "no space left on device",
            errno.EFBIG: "file too large (size limit reached)",
            errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
        }.get(e.errno or 0, e.strerror or str(e))
        raise errors.WriteError(
            f"{where}: write failed: {reason}; nothing was committed and the original files are "
            "untouched",
            path=str(where),
        ) from e


def _is_tf_error(e: BaseException) -> bool:
    """A ``tf.errors.OpError`` (checked by name: TensorFlow need not be imported)."""
    return any(
        c.__name__ == "OpError" and c.__module__.startswith("tensorflow") for c in type(e).__mro__
    )


@contextlib.contextmanager
def lock(model_dir: str) -> Iterator[None]:
    """Holds an exclusive lock on ``model_dir`` (released by the OS if the process dies).

    On ``gs://`` with the ``gcs`` extra, a lock object (``gcs.lock``: created only if absent,
    refreshed while held, deleted at the end; an expired one is taken over with a warning).
    On other scheme paths (``ram://``, or ``gs://`` without the extra) this is a no-op: object
    stores have no advisory locks, and two concurrent repairs of one directory there are not
    kept apart (the state file rename is still the commit point).

    Raises:
      errors.LockedError: another process holds it.
      errors.Error: on ``gs://``, the lock object could not be written (see ``gcs.lock``).
    """
    if fs.has_scheme(model_dir):
        if gcs.is_gcs(model_dir) and gcs.client() is not None:
            with gcs.lock(model_dir):
                yield
        else:
            yield
        return
    import fcntl

    path = os.path.join(model_dir, LOCK_NAME)
    with write_errors(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise errors.LockedError(
                f"{model_dir}: another estimator-fix repair holds {LOCK_NAME}; wait for it to "
                "finish and run again",
                path=path,
            ) from e
        # Who holds it, for a human: best effort. The flock is the lock; a full disk must not
        # turn into a traceback here (the repair's own writes report it properly).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(
                fd,
                f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode(),
            )
        yield
    finally:
        os.close(fd)  # closing releases the flock; the file stays (removing it would race)


def make_temp_dir(parent: str, final_name: str) -> str:
    path = fs.join(parent, temp_name(final_name))
    with write_errors(path):
        fs.makedirs(path)
    return path


def remove_tree(path: str) -> None:
    """Removes a temporary directory of ours; missing is fine."""
    if fs.has_scheme(path):
        with contextlib.suppress(Exception):
            fs.rmtree(path)
        return
    shutil.rmtree(path, ignore_errors=True)


def remove_path(path: str) -> None:
    """Removes a file, or a directory tree, of ours."""
    if fs.isdir(path):
        remove_tree(path)
    else:
        with write_errors(path):
            fs.remove(path)


# How a data file got its new name (``Carried.method``), cheapest first.
NOTHING_CARRIED = "none"  # no data file linked or copied (adopted, or nothing to carry)
HARD_LINK = "hard_link"
SERVER_SIDE = "server_side"  # copied inside the object store (gs:// with the gcs extra)
LOCAL_COPY = "local_copy"  # local files that cannot be linked (another device)
STREAM = "stream"  # tf.io.gfile.copy: every byte read and written again by this process
REWRITTEN = "rewritten"  # new data files written tensor by tensor (V1 -> V2); not counted
_METHOD_ORDER = (NOTHING_CARRIED, HARD_LINK, SERVER_SIDE, LOCAL_COPY, STREAM, REWRITTEN)


@dataclasses.dataclass(frozen=True)
class Carried:
    """How data files were carried to their new names, and what that moved through us.

    Attributes:
      method: the costliest method used (``_METHOD_ORDER``), or ``NOTHING_CARRIED``.
      data_bytes: the size of the data files linked or copied.
      worker_bytes: what those copies moved through this process, read plus written (a stream
        copy of N bytes is 2N; a hard link or a server-side copy is 0).
    """

    method: str = NOTHING_CARRIED
    data_bytes: int = 0
    worker_bytes: int = 0

    @property
    def linked(self) -> bool:
        """Nothing was copied (hard links, or nothing to carry)."""
        return self.method in (NOTHING_CARRIED, HARD_LINK)

    def __add__(self, other: Carried) -> Carried:
        """Both: the costlier method, the bytes summed. Does not perform I/O."""
        method = max(self.method, other.method, key=_METHOD_ORDER.index)
        return Carried(
            method, self.data_bytes + other.data_bytes, self.worker_bytes + other.worker_bytes
        )


def carry(src: str, dst: str) -> Carried:
    """Gives ``dst`` the bytes of ``src`` the cheapest way there is; says which.

    Local: a hard link, else a copy. Both on ``gs://`` with the ``gcs`` extra: a copy inside
    the store. Otherwise ``tf.io.gfile.copy``, which streams the bytes through this process.
    """
    with write_errors(dst):
        if not fs.has_scheme(src) and not fs.has_scheme(dst):
            try:
                os.link(src, dst)
                return Carried(HARD_LINK, os.stat(dst).st_size, 0)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
            shutil.copyfile(src, dst)
            size = os.stat(dst).st_size
            return Carried(LOCAL_COPY, size, 2 * size)
        if gcs.is_gcs(src) and gcs.is_gcs(dst) and gcs.client() is not None:
            return Carried(SERVER_SIDE, gcs.copy(src, dst), 0)
        fs.copy(src, dst)
        size = fs.size(dst)
        return Carried(STREAM, size, 2 * size)


def link_or_copy(src: str, dst: str) -> bool:
    """``carry`` for callers that only ask whether nothing was copied. True if linked."""
    return carry(src, dst).linked


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary sibling and an atomic rename; fsyncs."""
    parent, name = fs.dirname(path), fs.basename(path)
    tmp = fs.join(parent, temp_name(name))
    with write_errors(path):
        try:
            fs.write_bytes(tmp, data, sync=True)
            fs.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.remove(tmp)
            raise


def replace(src: str, dst: str) -> None:
    """Atomic rename (POSIX ``rename``) of ``src`` onto ``dst``."""
    with write_errors(dst):
        fs.replace(src, dst)


def fsync_dir(path: str) -> None:
    """Makes renames inside ``path`` durable (no-op where the filesystem has no directories)."""
    if fs.has_scheme(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LineLog:
    """A local append-only log of lines (the fleet's results journal), each flushed as written.

    A log grows by appends and is never replaced, so it cannot go through a temporary and a
    rename. What keeps it readable is that each line is complete once ``append`` returns, and
    that a last line a crash cut short is ended on opening, so that it costs only itself (a
    reader skips it) and not the line appended after it.

    Lines are flushed to the OS, not fsynced: a line survives this process being killed, and a
    crash of the machine may lose the last lines, which costs a ``--resume`` only redoing them
    (safe: every fleet job may be retried); an fsync per line would cost more than a scan.
    """

    def __init__(self, path: str) -> None:
        """Opens ``path`` for appending (creating it), ending a torn last line first.

        On an object store (``gs://``) there is no append: the log is held in memory and the
        whole object written at most every ``OBJECT_FLUSH_SECONDS`` and at ``close`` (each
        write replaces the object whole), so a killed run loses at most that much of its tail.

        Raises:
          OSError: the file exists but cannot be read, or cannot be opened for appending.
        """
        self._remote = fs.has_scheme(path)
        if self._remote:
            self._init_remote(path)
            return
        torn = False
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
        except FileNotFoundError:
            pass
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if torn:
            self.append("")

    OBJECT_FLUSH_SECONDS = 30.0

    def _init_remote(self, path: str) -> None:
        self._path = path
        try:
            text = fs.read_text(path) if fs.exists(path) else ""
        except errors.Error as e:
            raise OSError(errno.EIO, str(e)) from e
        self._text = text if not text or text.endswith("\n") else text + "\n"
        self._written = time.monotonic()
        self._write_remote()  # an unwritable place stops the run before any work

    def _write_remote(self) -> None:
        try:
            write_bytes(self._path, self._text.encode("utf-8"))
        except errors.Error as e:
            raise OSError(errno.EIO, str(e)) from e
        self._written = time.monotonic()

    def append(self, line: str) -> None:
        """Appends ``line`` and a newline. Raises OSError (the line may then be torn)."""
        if self._remote:
            self._text += line + "\n"
            if time.monotonic() - self._written >= self.OBJECT_FLUSH_SECONDS:
                self._write_remote()
            return
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file; every line was flushed, so only a failed append leaves a buffer.

        Raises:
          OSError: on an object store, the last write of the log failed.
        """
        if self._remote:
            self._write_remote()
            return
        with contextlib.suppress(OSError):
            self._file.close()
