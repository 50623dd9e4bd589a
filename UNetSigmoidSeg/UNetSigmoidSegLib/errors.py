"""One small exception family for user-facing failures.

Every error says what went wrong and what to do about it. The CLI prints it without a
traceback (exit 2); the Slicer panel shows it with Slicer's error display.
"""

from typing import List, Optional


class UserError(Exception):
    """A failure the user can fix. ``kind`` groups errors for the worker protocol and tests."""

    kind = "error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class InputError(UserError):
    """The input image cannot be segmented as given."""

    kind = "input"


class ModelError(UserError):
    """The model file, bundle or its configuration cannot be used."""

    kind = "model"


class OptionError(UserError):
    """An option value is out of range or unknown."""

    kind = "option"


class OutputError(UserError):
    """An output cannot be written."""

    kind = "output"


class WorkerError(UserError):
    """The background worker could not run the job: it did not start, crashed, hung, was busy,
    or broke the protocol. ``reason`` says which; ``log_tail`` holds its last log lines."""

    kind = "worker"

    def __init__(
        self, message: str, hint: str = "", reason: str = "crashed", log_tail: Optional[List[str]] = None
    ) -> None:
        super().__init__(message, hint)
        self.reason = reason
        self.log_tail = list(log_tail or [])


class RemoteError(WorkerError):
    """A remote server could not run the job: unreachable, token refused, busy, restarted, connection lost, or a
    request too large. ``reason`` says which (``down`` | ``auth`` | ``busy`` | ``restarted`` | ``connection`` |
    ``timeout`` | ``too_large`` | ``lost`` | ``refused`` | ``protocol`` | ``tls`` | ``url`` | ``server``)."""

    kind = "remote"


class WorkerInternalError(RuntimeError):
    """An unexpected exception inside the worker (a bug); the message holds the worker's traceback."""

    def __init__(self, message: str, log_tail: Optional[List[str]] = None) -> None:
        super().__init__(message)
        self.log_tail = list(log_tail or [])


class CancelledError(Exception):
    """The run was cancelled by the caller; nothing partial is returned."""


def describe(exc: BaseException, hint: Optional[str] = None) -> str:
    """Short one-line description of any exception, for logs."""
    return f"{type(exc).__name__}: {exc}" + (f" ({hint})" if hint else "")
