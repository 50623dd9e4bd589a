"""The run contract's protocols: a ``Runner`` takes runs and model inspections and returns ``Job`` handles.

Implementations: ``runners.inprocess.InProcessRunner`` (this process), ``worker.client.WorkerRunner``
(a warm background process) and ``remote.client.RemoteRunner`` (a GPU server). The CLI, the Slicer logic and
the panel hold a ``Runner`` and never ask which one. A job's messages are dicts with a ``type``: ``progress``
(``stage``, ``fraction`` 0..1, ``message``), ``log`` / ``warning`` (``message``), then one terminal message:
``result``, ``error``, ``cancelled`` or ``busy``.
"""

import queue
import time
from typing import Any, Callable, Dict, List, Optional

try:  # Python ≥ 3.8
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore[assignment]

from .model import ModelInfo, ModelSpec
from .options import SegmentOptions
from .volume import Volume

Message = Dict[str, Any]
ProgressFn = Callable[[str, float, str], None]  # (stage, fraction 0..1, message)
LogFn = Callable[[str], None]
CancelFn = Callable[[], bool]
TERMINAL_TYPES = ("result", "error", "cancelled", "busy")  # the last message of a job


def deliver(message: Message, progress: Optional[ProgressFn], log: Optional[LogFn]) -> None:
    """Hand one ``progress`` / ``log`` / ``warning`` message to the caller's callbacks (a warning as a
    ``"warning: …"`` line); other messages are left alone."""
    kind = message.get("type")
    if kind == "progress" and progress is not None:
        progress(str(message.get("stage", "")), float(message.get("fraction", 0.0)), str(message.get("message", "")))
    elif kind in ("log", "warning") and log is not None:
        log(("warning: " if kind == "warning" else "") + str(message.get("message", "")))


def take(inbox: "queue.Queue[Message]", block_s: float) -> List[Message]:
    """Every message waiting in a job's ``inbox``, in order, after waiting up to ``block_s`` seconds for the first
    (0: no wait); an empty list when none came."""
    out: List[Message] = []
    try:
        out.append(inbox.get(timeout=block_s) if block_s > 0 else inbox.get_nowait())
    except queue.Empty:
        return out
    while True:
        try:
            out.append(inbox.get_nowait())
        except queue.Empty:
            return out


def pump(
    drain: Callable[[float], List[Message]],
    settled: Callable[[], bool],
    timeout: Optional[float],
    progress: Optional[ProgressFn],
    log: Optional[LogFn],
    what: str,
) -> None:
    """The blocking half of a ``Job.wait``: ``drain(seconds)`` the job's messages into the callbacks until
    ``settled()``; a ``TimeoutError`` naming ``what`` after ``timeout`` seconds (the job goes on)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        for message in drain(0.25 if remaining is None else max(0.0, min(0.25, remaining))):
            deliver(message, progress, log)
        if settled():
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what} still running after {timeout} s")


@runtime_checkable
class Job(Protocol):
    """One run or model inspection. ``poll`` from a timer, or ``wait``; ``cancel`` stops it."""

    id: str
    info: Dict[str, Any]  # what the runner knows about how it ran (pid, cache_hit, load_count, timings …)

    @property
    def done(self) -> bool:
        """True once the job ended (result, error or cancelled) and its temporary files are gone."""

    def poll(self) -> List[Message]:
        """New messages without blocking: progress, log and warning, then the terminal one."""

    def wait(
        self, timeout: Optional[float] = None, progress: Optional[ProgressFn] = None, log: Optional[LogFn] = None
    ) -> Any:
        """Block until the job ends and return its value (a ``SegmentResult``, or a ``ModelInfo`` for an
        inspection); raise its ``UserError`` / ``WorkerError`` / ``CancelledError``, or ``TimeoutError``."""

    def cancel(self) -> None:
        """Ask the job to stop; nothing partial is returned."""


@runtime_checkable
class Runner(Protocol):
    """Runs segmentations and model inspections somewhere (this process, a worker process, …)."""

    kind: str  # "in-process" | "worker" | "remote"

    def submit(self, volume: Volume, model: ModelSpec, options: SegmentOptions) -> Job:
        """Start segmenting ``volume`` with ``model``; returns at once."""

    def inspect(self, model: ModelSpec) -> Job:
        """Start loading ``model`` (it stays loaded for the next run); the job's value is its ``ModelInfo``."""

    def describe(self) -> Optional[Dict[str, Any]]:
        """What the runner runs with once known (Python, torch, MONAI versions, CUDA devices), else None."""

    def keep_warm(self, keep: bool) -> None:
        """Keep loaded networks (and a worker process) ready between runs, or free them after each run."""

    def close(self) -> None:
        """Stop background work and free what the runner holds."""


__all__ = ["CancelFn", "Job", "LogFn", "Message", "ModelInfo", "ProgressFn", "Runner", "TERMINAL_TYPES"]
