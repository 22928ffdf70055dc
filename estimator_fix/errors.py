"""The one error hierarchy of estimator-fix, each error with its documented exit code.

Every error message is one line that names the file (or flag) at fault and says what to do.
The CLI prints ``str(error)`` to stderr and exits with ``error.exit_code``; nothing else in the
library prints or exits.

Exit codes (also in the CLI's ``--help`` and the README):

==== =========================================================================
code meaning
==== =========================================================================
0    success; for ``scan``: the directory is healthy
1    bad input: a missing, unreadable, truncated or garbage file; nothing written
2    usage error: a wrong or missing flag
3    ``scan`` only: problems found that ``repair`` can fix
4    problems this tool cannot repair (the report says why)
5    step evidence missing or conflicting: pass ``--step``
6    another repair holds the directory's lock
7    a write failed (disk full, permission); originals untouched, temporaries removed
8    export or verification failed (the user's model code, or a parity mismatch)
==== =========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_REPAIRABLE = 3
EXIT_UNREPAIRABLE = 4
EXIT_STEP_EVIDENCE = 5
EXIT_LOCKED = 6
EXIT_WRITE_FAILED = 7
EXIT_EXPORT_FAILED = 8
EXIT_FLEET_FAILED = 9


class Error(Exception):
    """Base of every error estimator-fix raises on purpose.

    Attributes:
      path: the file or directory at fault, when there is one.
      exit_code: the CLI's exit code for this error.
    """

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, message: str, *, path: str | None = None) -> None:
        # One line, always: a multi-line message would break the one-line promise.
        super().__init__(" ".join(message.split()))
        self.path = path


class UsageError(Error, ValueError):
    """A flag is missing, malformed or contradicts another."""

    exit_code = EXIT_USAGE


class InputError(Error, ValueError):
    """The input on disk cannot be read as what it claims to be."""


class PathNotFoundError(InputError, FileNotFoundError):
    """A path the user named does not exist."""


class NotAModelDirError(InputError):
    """The path exists but holds no checkpoint (or is a file)."""


class CorruptIndexError(InputError):
    """A checkpoint ``.index`` file is truncated, garbage or fails its checksums."""


class MissingShardError(InputError, FileNotFoundError):
    """A data shard referenced by an index is missing or shorter than the index says."""


class CorruptDataError(InputError):
    """Bytes read from a data shard do not match the checksum in the index."""


class StateFileError(InputError):
    """The ``checkpoint`` state file is not a valid CheckpointState text proto."""


class UnreadableError(InputError, PermissionError):
    """A file exists but cannot be read."""


class NotRepairableError(Error):
    """The directory has a problem this tool cannot fix; the message says which."""

    exit_code = EXIT_UNREPAIRABLE


class StepEvidenceError(Error, ValueError):
    """No step evidence, or evidence that disagrees: the user must pass ``--step``."""

    exit_code = EXIT_STEP_EVIDENCE


class LockedError(Error):
    """Another repair holds the model directory's lock."""

    exit_code = EXIT_LOCKED


class WriteError(Error, OSError):
    """A write failed; temporaries were removed and the originals are untouched."""

    exit_code = EXIT_WRITE_FAILED


class ExportError(Error):
    """Exporting or verifying the SavedModel failed."""

    exit_code = EXIT_EXPORT_FAILED


class UserCodeError(ExportError):
    """The user's own code (model_fn, serving input function, estimator factory) raised."""


class ModelMismatchError(ExportError):
    """The model code's variables do not match the checkpoint (pre-flight check)."""


class ParityError(ExportError):
    """The SavedModel's predictions differ from the checkpoint's."""


def tf_reason(e: BaseException) -> str:
    """The one line of an exception (a TensorFlow one above all) that says what went wrong.

    Graph-mode errors start with "Graph execution error:" and a traceback of the graph's
    construction; the cause (``<file>; No space left on device``) is the line before the
    ``[[{{node ...}}]]`` marker, and a "Hint:" about OOM may follow it. Other errors give their
    first non-empty line. Never empty: the exception's type name is the last resort.
    """
    message = getattr(e, "message", None)
    text = message if isinstance(message, str) else str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Hint:")]
    for i, line in enumerate(lines):
        if line.startswith("[[") and i > 0:
            return lines[i - 1]
    if any(ln.startswith("Graph execution error") for ln in lines[:1]):
        return lines[-1]
    return lines[0] if lines else type(e).__name__


def one_line(e: BaseException, *, limit: int = 500) -> str:
    """``e`` as one line of at most ``limit`` characters (for result journals and summaries)."""
    text = " ".join(str(e).split())
    return (text[:limit] + "...") if len(text) > limit else (text or type(e).__name__)
