"""``gs://`` through google-cloud-storage (the ``gcs`` extra): server-side copies and the lock.

TensorFlow's own GCS filesystem reads and writes every object; this module adds the two things
it cannot do, when the optional client is installed (``pip install 'estimator-fix[gcs]'``):

* ``copy``: an object copied inside the store (the rewrite API, followed through its
  continuation token until done), so a data file never passes through this process;
* ``lock``: a lock object created only if absent (``ifGenerationMatch=0``), holding its owner,
  host, pid and an expiry, refreshed while held and deleted at the end (``ifGenerationMatch``
  of our own generation). An expired lock, or one whose process on this host is gone (a
  killed run), is taken over (with ``ifGenerationMatch`` of its generation, so two runs cannot
  both take it), with a warning naming the old holder.

Authentication is the client's default: application default credentials; with
``STORAGE_EMULATOR_HOST`` set the client talks to that emulator, anonymously. ``client()``
returns None when the extra is not installed (or has no credentials: a warning says so), and
callers then fall back to TensorFlow's stream copy and to no lock, as without this module.

Every request has a timeout and a bounded retry. Failures become one-line ``errors.Error``s
naming the path: a missing bucket or object, a refusal, an unreachable server (exit 1), any
other failed write (exit 7).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from absl import logging

from estimator_fix import errors
from estimator_fix.storage.names import HOST, LOCK_NAME

if TYPE_CHECKING:
    from google.cloud import storage

# (connect, read) seconds for one request, and the time the retries of one call may take.
TIMEOUT = (10.0, 60.0)
RETRY_DEADLINE_SECS = 30.0
# A rewrite inside one location finishes in one call; across locations or storage classes
# each call copies a part (GCS documents about 1 GiB a call at most): 10,000 calls is 10 TB.
MAX_REWRITE_CALLS = 10_000
LOCK_TTL_SECS = 120.0  # a lock not refreshed for this long is expired (its run is gone)
LOCK_ACQUIRE_ATTEMPTS = 3
OWNER = "estimator-fix"


def split(path: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ("bucket", "a/b"). Does not perform I/O.

    Raises:
      errors.UsageError: not a ``gs://`` path with a bucket and an object name.
    """
    scheme, _, rest = path.partition("://")
    bucket, _, name = rest.partition("/")
    if scheme != "gs" or not bucket or not name:
        raise errors.UsageError(f"{path}: not a gs://BUCKET/OBJECT path", path=path)
    return bucket, name


def is_gcs(path: str) -> bool:
    """True for ``gs://`` paths. Does not perform I/O."""
    return path.startswith("gs://")


@functools.cache
def client() -> storage.Client | None:
    """The process's client, or None without the extra (or without credentials)."""
    try:
        with warnings.catch_warnings():  # google.api_core's notice about Python versions
            warnings.simplefilter("ignore", FutureWarning)
            from google.auth import exceptions as auth_exceptions
            from google.cloud import storage
    except ImportError:
        return None
    try:
        return storage.Client()
    except (auth_exceptions.DefaultCredentialsError, OSError) as e:
        logging.warning(
            "google-cloud-storage has no credentials (%s): data files on gs:// are streamed "
            "through this process and there is no lock; run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS",
            " ".join(str(e).split())[:200],
        )
        return None


def _retry() -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_DEADLINE_SECS)


def _error(e: Exception, path: str, doing: str) -> errors.Error:
    """A client failure as one line naming ``path``. Does not perform I/O."""
    from google.api_core import exceptions as api

    first = (" ".join(str(e).split()) or type(e).__name__)[:300]
    if isinstance(e, api.NotFound):
        return errors.PathNotFoundError(
            f"{path}: not found while {doing} (no such bucket or object): {first}", path=path
        )
    if isinstance(e, api.Forbidden | api.Unauthorized):
        return errors.UnreadableError(
            f"{path}: access refused while {doing}: {first}; check the credentials' "
            "permissions on the bucket",
            path=path,
        )
    if isinstance(e, api.GoogleAPICallError) and not isinstance(e, api.ServerError):
        return errors.WriteError(
            f"{path}: {doing} failed: {first}; nothing was committed and the original files "
            "are untouched",
            path=path,
        )
    return errors.InputError(
        f"{path}: the storage server did not answer while {doing} ({first}); check the "
        "connection and run again (nothing was committed)",
        path=path,
    )


@contextlib.contextmanager
def _errors(path: str, doing: str) -> Iterator[None]:
    """Turns the client's exceptions (and its transport's) into ``errors.Error``."""
    try:
        yield
    except errors.Error:
        raise
    except Exception as e:
        if not _is_client_error(e):
            raise
        raise _error(e, path, doing) from e


def _is_client_error(e: Exception) -> bool:
    from google.api_core import exceptions as api

    return isinstance(e, api.GoogleAPIError | OSError | ValueError) or type(
        e
    ).__module__.startswith(("requests", "urllib3", "google"))


# --- server-side copy -------------------------------------------------------------------------


def copy(src: str, dst: str) -> int:
    """Copies object ``src`` to ``dst`` inside the store; returns its size in bytes.

    The source generation is pinned (``ifSourceGenerationMatch``), and the copy's size and
    crc32c must equal the source's.

    Raises:
      errors.PathNotFoundError: the source object or a bucket is not there.
      errors.WriteError: the copy failed or differs.
      errors.InputError: the server did not answer.
    """
    c = client()
    assert c is not None, "callers check client() first"
    (src_bucket, src_name), (dst_bucket, dst_name) = split(src), split(dst)
    with _errors(src, "reading its metadata"):
        source = c.bucket(src_bucket).get_blob(src_name, timeout=TIMEOUT, retry=_retry())
    if source is None:
        raise errors.PathNotFoundError(f"{src}: not found; nothing was committed", path=src)
    dest = c.bucket(dst_bucket).blob(dst_name)
    token: str | None = None
    with _errors(dst, f"copying {src} inside the store"):
        for _ in range(MAX_REWRITE_CALLS):
            token, _, _ = dest.rewrite(
                source,
                token=token,
                if_source_generation_match=source.generation,
                timeout=TIMEOUT,
                retry=_retry(),  # same source generation, same destination: safe to repeat
            )
            if token is None:
                break
        else:
            raise errors.WriteError(
                f"{dst}: the copy of {src} did not finish in {MAX_REWRITE_CALLS} rewrite calls",
                path=dst,
            )
    if dest.size != source.size or (source.crc32c and dest.crc32c != source.crc32c):
        raise errors.WriteError(
            f"{dst}: the copy of {src} differs from it (size {dest.size} != {source.size} or "
            "crc32c); nothing was committed",
            path=dst,
        )
    return int(source.size or 0)


# --- the lock object --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Holder:
    """What a lock object says about the run that holds it."""

    owner: str
    user: str
    host: str
    pid: int
    token: str  # unique per acquisition: our own lock is recognised after a retried request
    expires: float  # Unix time, the writer's clock

    def to_bytes(self) -> bytes:
        """The object's content: JSON. Does not perform I/O."""
        doc = dataclasses.asdict(self)
        doc["expires_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))
        return (json.dumps(doc, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder in ``data``, or None if it is not a lock we wrote. Does not perform I/O."""
        try:
            doc = json.loads(data)
            return cls(
                owner=str(doc["owner"]),
                user=str(doc["user"]),
                host=str(doc["host"]),
                pid=int(doc["pid"]),
                token=str(doc["token"]),
                expires=float(doc["expires"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def is_gone(self) -> bool:
        """The holder ran on this host and its process is gone (killed before its release)."""
        if self.host != HOST:
            return False  # another machine's run: only the expiry tells
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        """``user@host pid N``. Does not perform I/O."""
        return f"{self.user}@{self.host} pid {self.pid}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


class _Lease:
    """The generation of the lock object we hold, kept current by the refresher thread."""

    def __init__(self, path: str, blob: storage.Blob, token: str, ttl: float) -> None:
        self.path, self.blob, self.token, self.ttl = path, blob, token, ttl
        self.generation = 0
        self.lost = False
        self.guard = threading.Lock()
        self.stop = threading.Event()

    def holder(self) -> Holder:
        """Our lock's content, expiring ``ttl`` from now."""
        return Holder(OWNER, _user(), HOST, os.getpid(), self.token, time.time() + self.ttl)

    def write(self, if_generation_match: int) -> int:
        """Writes our lock object if its generation is ``if_generation_match``; the new one.

        Small objects go up as multipart uploads, where the precondition is checked.
        """
        self.blob.upload_from_string(
            self.holder().to_bytes(),
            content_type="application/json",
            if_generation_match=if_generation_match,
            timeout=TIMEOUT,
            retry=_retry(),  # a repeat that finds our own token is recognised by the caller
        )
        return int(self.blob.generation or 0)

    def read(self) -> tuple[Holder | None, int] | None:
        """(holder, generation) of the lock object now, or None when there is none."""
        from google.api_core import exceptions as api

        bucket, name = self.blob.bucket, self.blob.name
        try:
            current = bucket.get_blob(name, timeout=TIMEOUT, retry=_retry())
            if current is None:
                return None
            data = current.download_as_bytes(
                if_generation_match=current.generation, timeout=TIMEOUT, retry=_retry()
            )
        except (api.NotFound, api.PreconditionFailed):
            return None  # gone, or replaced, since the listing: look again
        return Holder.parse(data), int(current.generation or 0)

    def refresh_until_stopped(self) -> None:
        """Rewrites the lock every ``ttl / 4`` seconds, each time if it is still ours."""
        from google.api_core import exceptions as api

        while not self.stop.wait(self.ttl / 4):
            with self.guard:
                try:
                    self.generation = self.write(self.generation)
                except api.PreconditionFailed:
                    seen = self.read()
                    if seen is not None and seen[0] is not None and seen[0].token == self.token:
                        self.generation = seen[1]  # our own write, answered late
                        continue
                    self.lost = True
                    logging.warning(
                        "%s: the lock was taken over by another run (ours had expired)", self.path
                    )
                    return
                except Exception as e:  # transient: the next refresh tries again
                    logging.warning("%s: could not refresh the lock: %s", self.path, e)


def _acquire(lease: _Lease, model_dir: str) -> None:
    """Creates our lock object, or takes over an expired one.

    Raises:
      errors.LockedError: another run holds an unexpired lock.
    """
    from google.api_core import exceptions as api

    for _ in range(LOCK_ACQUIRE_ATTEMPTS):
        try:
            lease.generation = lease.write(0)
            return
        except api.PreconditionFailed:
            pass
        seen = lease.read()
        if seen is None:
            continue  # released in between: create it again
        holder, generation = seen
        if holder is not None and holder.token == lease.token:
            lease.generation = generation  # our create succeeded; its answer was lost
            return
        if holder is not None and holder.expires > time.time() and not holder.is_gone():
            raise errors.LockedError(
                f"{model_dir}: another estimator-fix repair holds {LOCK_NAME} "
                f"({holder.describe()}, until "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(holder.expires))}); wait for "
                "it to finish and run again",
                path=lease.path,
            )
        if holder is None:
            what = "unreadable content"
        elif holder.is_gone():
            what = f"held by {holder.describe()}, a process that is gone"
        else:
            expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.expires))
            what = f"held by {holder.describe()}, expired {expired}"
        logging.warning(
            "%s: taking over a stale lock (%s); that run stopped without releasing it",
            lease.path,
            what,
        )
        try:
            lease.generation = lease.write(generation)
            return
        except api.PreconditionFailed:
            continue  # another run took it (or refreshed it) first: look again
    raise errors.LockedError(
        f"{model_dir}: {LOCK_NAME} kept changing while taking it; another repair is starting "
        "there: run again later",
        path=lease.path,
    )


def _release(lease: _Lease) -> None:
    """Deletes the lock object if it is still ours; never raises (an expired lock is harmless)."""
    from google.api_core import exceptions as api

    if lease.lost:
        return
    try:
        lease.blob.delete(if_generation_match=lease.generation, timeout=TIMEOUT, retry=_retry())
    except (api.NotFound, api.PreconditionFailed):
        logging.warning("%s: the lock was taken over by another run before its release", lease.path)
    except Exception as e:
        logging.warning("%s: could not remove the lock (it expires by itself): %s", lease.path, e)


@contextlib.contextmanager
def lock(model_dir: str, *, ttl: float = LOCK_TTL_SECS) -> Iterator[None]:
    """Holds ``<model_dir>/.estimator-fix.lock`` on GCS while the block runs.

    Raises:
      errors.LockedError: another run holds it and it has not expired.
      errors.PathNotFoundError, errors.InputError, errors.WriteError: the lock object could
        not be written (no such bucket, the server did not answer...); nothing was written.
    """
    c = client()
    assert c is not None, "callers check client() first"
    path = model_dir.rstrip("/") + "/" + LOCK_NAME
    bucket, name = split(path)
    lease = _Lease(path, c.bucket(bucket).blob(name), uuid.uuid4().hex, ttl)
    with _errors(path, "creating the lock"):
        _acquire(lease, model_dir)
    refresher = threading.Thread(
        target=lease.refresh_until_stopped, name="estimator-fix-lock", daemon=True
    )
    refresher.start()
    try:
        yield
    finally:
        lease.stop.set()
        refresher.join(timeout=TIMEOUT[0] + TIMEOUT[1])
        with lease.guard:
            _release(lease)
