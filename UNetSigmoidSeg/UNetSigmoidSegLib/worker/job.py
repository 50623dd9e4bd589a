"""A job submitted to the worker: non-blocking ``poll`` for a Qt timer, blocking ``wait`` for scripts.

Background threads of the client put the job's messages into its inbox (the terminal one only
after its hand-off folder is gone); ``poll`` and ``wait`` run in the caller's thread, so callbacks
and the rebuilt ``SegmentResult`` never cross threads. No Qt import.
"""

import queue
import threading
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..contract.model import ModelInfo
from ..contract.result import SegmentResult
from ..contract.runner import TERMINAL_TYPES, pump, take
from ..errors import (
    CancelledError,
    InputError,
    ModelError,
    OptionError,
    OutputError,
    UserError,
    WorkerError,
    WorkerInternalError,
)
from .handoff import remove_dir
from .protocol import log_tail_text

USER_ERRORS = {
    "input": InputError,
    "model": ModelError,
    "option": OptionError,
    "output": OutputError,
    "error": UserError,
}


def exception_from_message(message: Dict[str, Any]) -> BaseException:
    """The exception an ``error`` / ``cancelled`` / ``busy`` message stands for, carrying ``log_tail``."""
    tail = [str(x) for x in message.get("log_tail") or []]
    kind = message.get("type")
    if kind == "cancelled":
        return CancelledError(message.get("message") or "cancelled")
    if kind == "busy":
        return WorkerError(
            f"The worker is busy with another run (job {message.get('current')}): one run at a time",
            "Wait for the running job to finish, or cancel it first.",
            reason="busy",
        )
    error_kind = message.get("kind", "error")
    text = str(message.get("message", ""))
    hint = str(message.get("hint", ""))
    if error_kind in ("worker", "protocol"):
        return WorkerError(text, hint, reason=str(message.get("reason", error_kind)), log_tail=tail)
    if error_kind == "internal":
        return WorkerInternalError(f"{text}\nWorker log:\n{log_tail_text(tail, 40)}", log_tail=tail)
    exc = USER_ERRORS.get(error_kind, UserError)(text, hint)
    exc.log_tail = tail  # type: ignore[attr-defined]
    return exc


class Job:
    """One ``run`` (or ``load``) in the worker; made by ``WorkerRunner.submit`` / ``inspect``."""

    def __init__(
        self, client: Any, proc: Any, job_id: str, kind: str, folder: Optional[str], command: Dict[str, Any]
    ) -> None:
        self.client = client
        self.proc = proc
        self.id = job_id
        self.kind = kind
        self.folder = folder
        self.command = command
        self.cancel_requested_at: Optional[float] = None
        self.resent = 0
        self.info: Dict[str, Any] = {}  # load_count, cache_hit, pid, peak_rss_bytes, timings of the hand-off
        self._inbox: queue.Queue[Dict[str, Any]] = queue.Queue()
        self._done = threading.Event()
        self._finish_lock = threading.Lock()
        self._settled = False
        self._result: Any = None
        self._error: Optional[BaseException] = None

    @property
    def done(self) -> bool:
        """True once the job ended (result, error or cancelled) and its temp files are gone."""
        return self._done.is_set()

    def cancel(self) -> None:
        """Ask the worker to stop (acknowledged between sliding-window steps); a worker that does not
        acknowledge within ``cancel_timeout_s`` is killed with its whole process tree."""
        self.client._cancel(self)

    def poll(self) -> List[Dict[str, Any]]:
        """New messages (progress, log, warning, then the terminal one) without blocking."""
        return self._drain(0.0)

    def wait(
        self,
        timeout: Optional[float] = None,
        progress: Optional[Callable[[str, float, str], None]] = None,
        log: Optional[Callable[[str], None]] = None,
    ) -> Any:
        """Block until the job ends; return its ``SegmentResult`` (``load``: the ``ModelInfo``).

        Raises the matching ``UserError`` subclass (with ``log_tail``), ``WorkerError`` for worker
        faults, ``CancelledError``, or ``TimeoutError`` when ``timeout`` passes (the job goes on).
        ``progress(stage, fraction, message)`` and ``log(text)`` are called from this thread.
        """
        try:
            pump(self._drain, lambda: self._settled, timeout, progress, log, f"worker job {self.id}")
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(self.client.cancel_timeout_s + 5.0)
            raise
        if self._error is not None:
            raise self._error
        return self._result

    # -- called by the client's threads -------------------------------------------------------------
    def _deliver(self, message: Dict[str, Any]) -> None:
        self._inbox.put(message)

    def _finish(self, message: Dict[str, Any]) -> None:
        """Deliver the terminal message once, after removing the job's hand-off folder."""
        with self._finish_lock:
            if self._done.is_set():
                return
            remove_dir(self.folder)
            self._inbox.put(message)
            self._done.set()

    def _drain(self, block_s: float) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        for message in take(self._inbox, block_s):
            arrays = message.pop("_arrays", None)
            if message["type"] in TERMINAL_TYPES and not self._settled:
                self._settle(message, arrays)
            out.append(message)
        return out

    def _settle(self, message: Dict[str, Any], arrays: Optional[Dict[str, np.ndarray]]) -> None:
        self._settled = True
        info = {
            k: message[k]
            for k in ("load_count", "cache_hit", "pid", "peak_rss_bytes", "worker_timings", "load_s")
            if k in message
        }
        self.info.update(info)
        if message["type"] != "result":
            self._error = exception_from_message(message)
            return
        try:
            if self.kind == "load":
                self._result = ModelInfo.from_dict(message["info"])
            else:
                self._result = SegmentResult.from_wire(message["result"], arrays or {})
        except Exception as exc:  # noqa: BLE001 - a result we cannot rebuild is a worker fault
            self._error = WorkerError(
                f"Cannot rebuild the worker's result: {type(exc).__name__}: {exc}",
                "This is a bug: please report it.",
                reason="handoff",
            )
