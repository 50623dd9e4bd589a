"""A job's messages, typed: ``Progress``, ``Log`` (with a level), then one terminal ``Result`` / ``Error`` /
``Cancelled``. Every host (this process, the worker process, the remote server) makes them from the engine's
callbacks, and every transport carries them as ``to_dict()`` / ``message_from_dict``. ``message_for(exc)`` is the one
mapping from an exception to its terminal message, ``Error.exception()`` the one mapping back. Torch-free.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from ..errors import (
    CancelledError,
    InputError,
    ModelError,
    OptionError,
    OutputError,
    RemoteError,
    UserError,
    WorkerError,
    WorkerInternalError,
)

USER_ERRORS = {cls.kind: cls for cls in (UserError, InputError, ModelError, OptionError, OutputError)}
TRANSPORT_ERRORS = {cls.kind: cls for cls in (WorkerError, RemoteError)}


@dataclass
class Progress:
    """``stage`` (``load`` | ``preprocess`` | ``inference`` | ``postprocess`` | ``queued`` | ``upload`` | …),
    ``fraction`` 0..1 of it, a short ``message``, and the seconds the stage still needs when known."""

    stage: str
    fraction: float
    message: str = ""
    eta: Optional[float] = None
    type = "progress"

    def to_dict(self) -> Dict[str, Any]:
        out = {"type": self.type, "stage": self.stage, "fraction": float(self.fraction), "message": self.message}
        if self.eta is not None:
            out["eta"] = self.eta
        return out


@dataclass
class Log:
    """One log line; ``level`` ``info`` or ``warning`` (a warning is also in the result's ``warnings``)."""

    message: str
    level: str = "info"
    source: str = ""  # "stderr" for a worker's own output
    type = "log"

    def to_dict(self) -> Dict[str, Any]:
        out = {"type": "warning" if self.level == "warning" else "log", "message": self.message}
        if self.source:
            out["source"] = self.source
        return out

    def line(self) -> str:
        """The line a text log shows: ``warning: …`` for a warning."""
        return f"warning: {self.message}" if self.level == "warning" else self.message


@dataclass
class Result:
    """The job succeeded. ``value``: its ``SegmentResult`` or ``ModelInfo`` once rebuilt where the caller is;
    ``fields`` / ``arrays``: what travelled (``SegmentResult.to_wire``), ``info``: how it ran (``JobInfo`` fields)."""

    value: Any = None
    fields: Dict[str, Any] = field(default_factory=dict)
    arrays: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    type = "result"


@dataclass
class Error:
    """The job failed. ``kind``: a ``UserError`` kind (``input`` | ``model`` | ``option`` | ``output`` | ``error``),
    ``worker`` / ``remote`` (the transport failed; ``reason`` says how) or ``internal`` (a bug)."""

    kind: str
    message: str
    hint: str = ""
    reason: str = ""
    log_tail: List[str] = field(default_factory=list)
    type = "error"

    def to_dict(self) -> Dict[str, Any]:
        out = {"type": self.type, "kind": self.kind, "message": self.message, "hint": self.hint}
        if self.reason:
            out["reason"] = self.reason
        if self.log_tail:
            out["log_tail"] = list(self.log_tail)
        return out

    def exception(self) -> BaseException:
        """The exception this error stands for, carrying ``log_tail``."""
        if self.kind in TRANSPORT_ERRORS:
            return TRANSPORT_ERRORS[self.kind](self.message, self.hint, self.reason or self.kind, self.log_tail)
        if self.kind == "internal":
            tail = (
                "\nLog:\n" + "\n".join("    " + ln for ln in self.log_tail[-40:] if ln.strip()) if self.log_tail else ""
            )
            hint = f" — {self.hint}" if self.hint else ""
            return WorkerInternalError(f"{self.message}{hint}{tail}", log_tail=self.log_tail)
        exc = USER_ERRORS.get(self.kind, UserError)(self.message, self.hint)
        exc.log_tail = list(self.log_tail)  # type: ignore[attr-defined]
        return exc


@dataclass
class Cancelled:
    """The job was cancelled; nothing partial is returned."""

    message: str = "cancelled"
    type = "cancelled"

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.type, "message": self.message}

    def exception(self) -> BaseException:
        return CancelledError(self.message)


Message = Union[Progress, Log, Result, Error, Cancelled]
TERMINAL = (Result, Error, Cancelled)


def message_for(exc: BaseException, scrub: Callable[[str], str] = str, where: str = "") -> Message:
    """The terminal message of a job that raised ``exc``: ``Cancelled``, the ``UserError``'s own ``Error`` (its kind,
    message, hint and, for a transport failure, reason and log tail), or an ``internal`` error naming the exception
    (``where``: `` in the worker``…). ``scrub`` removes what a client must not see (a server's paths)."""
    if isinstance(exc, CancelledError):
        return Cancelled(str(exc) or "cancelled")
    if isinstance(exc, UserError):
        reason = str(getattr(exc, "reason", "") or "")
        return Error(exc.kind, scrub(exc.message), scrub(exc.hint), reason, list(getattr(exc, "log_tail", [])))
    return Error(
        "internal",
        scrub(f"Unexpected error{where}: {type(exc).__name__}: {exc}"),
        "This is a bug: please report it with the log below.",
    )


def message_from_dict(data: Dict[str, Any]) -> Message:
    """A message from its ``to_dict()`` form (or a worker protocol / server event dict of the same shape)."""
    kind = data.get("type")
    if kind == "progress":
        eta = data.get("eta")
        return Progress(
            str(data.get("stage", "")),
            float(data.get("fraction", 0.0)),
            str(data.get("message", "")),
            None if eta is None else float(eta),
        )
    if kind in ("log", "warning"):
        level = "warning" if kind == "warning" else "info"
        return Log(str(data.get("message", "")), level, str(data.get("source", "")))
    if kind == "cancelled":
        return Cancelled(str(data.get("message") or "cancelled"))
    if kind == "error":
        tail = [str(x) for x in data.get("log_tail") or []]
        return Error(
            str(data.get("kind", "error")),
            str(data.get("message", "")),
            str(data.get("hint", "")),
            str(data.get("reason") or ""),
            tail,
        )
    if kind == "result":
        return Result(fields={k: v for k, v in data.items() if k != "type"})
    raise ValueError(f"not a job message: {kind!r}")
