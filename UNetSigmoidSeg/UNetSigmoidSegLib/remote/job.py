"""A job on the remote server as the run contract's ``Job``: non-blocking ``poll`` for a Qt timer, ``wait``.

A background thread of the job does the network (upload, long-polling the server's messages, the result's
download); it only ever puts messages into the job's inbox. ``poll`` and ``wait`` run in the caller's thread, so
callbacks and the result never cross threads and the GUI never waits on the network. No Qt import.
"""

import itertools
import queue
import threading
from typing import Any, Callable, Dict, List, Optional

from ..contract.runner import TERMINAL_TYPES, pump, take
from ..errors import CancelledError

_IDS = itertools.count(1)


class RemoteJob:
    """One run or model inspection on a server; made by ``RemoteRunner.submit`` / ``inspect``.

    ``id``: the server's job id once it accepted the run (before: ``remote-N``). ``info``: what is known of how it
    ran (``server_job``, ``ahead`` — jobs in front of it in the server's queue —, ``request_bytes``,
    ``result_bytes``, ``bytes_sent``, ``bytes_received``, ``requests``, ``upload_s``, ``download_s``, ``server_s``,
    ``cache_hit``)."""

    def __init__(self, kind: str, work: Callable[["RemoteJob"], Any], on_cancel: Callable[["RemoteJob"], None]) -> None:
        self.id = f"remote-{next(_IDS)}"
        self.kind = kind
        self.info: Dict[str, Any] = {}
        self.server_id: Optional[str] = None
        self.cancel_requested = threading.Event()
        self.cancel_sent = False
        self.cancel_lock = threading.Lock()
        self._on_cancel = on_cancel
        self._inbox: queue.Queue[Dict[str, Any]] = queue.Queue()
        self._done = threading.Event()
        self._settled = False
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._main, args=(work,), name=f"unetseg-{self.id}", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        """True once the job ended (result, error or cancelled); the server holds nothing of it any more."""
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop the job: an upload stops between chunks, a queued job leaves the queue, a running one stops between
        sliding-window steps on the server. Nothing partial is returned."""
        if self.done or self.cancel_requested.is_set():
            return
        self.cancel_requested.set()
        threading.Thread(target=self._on_cancel, args=(self,), name=f"unetseg-cancel-{self.id}", daemon=True).start()

    def poll(self) -> List[Dict[str, Any]]:
        """New messages (progress — including ``queued`` and ``upload`` / ``download`` stages —, log, warning, then
        the terminal one) without blocking."""
        return self._drain(0.0)

    def wait(
        self,
        timeout: Optional[float] = None,
        progress: Optional[Callable[[str, float, str], None]] = None,
        log: Optional[Callable[[str], None]] = None,
    ) -> Any:
        """Block until the job ends; return its ``SegmentResult`` (an inspection: its ``ModelInfo``). Raises the
        server's ``UserError`` subclass, a ``RemoteError`` for network / server faults, ``CancelledError``, or
        ``TimeoutError`` when ``timeout`` passes (the job goes on)."""
        try:
            pump(self._drain, lambda: self._settled, timeout, progress, log, f"remote job {self.id}")
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(10.0)
            raise
        if self._error is not None:
            raise self._error
        return self._value

    # -- the job's own thread -------------------------------------------------------------------
    def emit(self, message: Dict[str, Any]) -> None:
        self._inbox.put(message)

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        self.emit({"type": "progress", "stage": stage, "fraction": float(fraction), "message": message})

    def _main(self, work: Callable[["RemoteJob"], Any]) -> None:
        try:
            self._value = work(self)
            terminal: Dict[str, Any] = {"type": "result"}
        except CancelledError as exc:
            self._error = exc
            terminal = {"type": "cancelled", "message": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - handed to wait() / poll()
            self._error = exc
            terminal = {"type": "error", "kind": getattr(exc, "kind", "internal"), "message": str(exc)}
        self._inbox.put(terminal)
        self._done.set()

    def _drain(self, block_s: float) -> List[Dict[str, Any]]:
        out = take(self._inbox, block_s)
        if any(m["type"] in TERMINAL_TYPES for m in out):
            self._settled = True
        return out
