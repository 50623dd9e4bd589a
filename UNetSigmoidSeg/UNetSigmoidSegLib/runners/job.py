"""The one ``Job`` of every runner: a queue of typed messages, filled by the runner (any thread), read by the caller.

``put`` hands a ``Progress`` / ``Log``, ``finish`` the terminal message (once; after the runner freed the job's
files). ``poll`` (a Qt timer) and ``wait`` (scripts) run in the caller's thread, so callbacks and the rebuilt
result never cross threads and the GUI never waits on a process or the network. A job may instead be ``run_here``:
its work runs in the caller's thread on the first ``poll`` / ``wait`` (the in-process runner). No Qt import.
"""

import itertools
import queue
import threading
import time
from typing import Any, Callable, List, Optional

from ..contract.messages import TERMINAL, Cancelled, Error, Message, Progress, Result, message_for
from ..contract.runner import JobInfo, LogFn, ProgressFn, deliver

_IDS = itertools.count(1)


class QueueJob:
    """One run or model inspection. ``id``: the runner's name for it (a server's job id once known). ``info``: how it
    ran. ``on_cancel(job)``: how the runner stops it (called once). ``rebuild(result)``: its value from a ``Result``
    that travelled (called in the caller's thread). ``interrupt_s``: how long ``wait`` gives a cancel after Ctrl-C."""

    def __init__(
        self,
        prefix: str,
        on_cancel: Callable[["QueueJob"], None],
        rebuild: Optional[Callable[[Result], Any]] = None,
        section: str = "",
        interrupt_s: float = 10.0,
    ) -> None:
        self.id = f"{prefix}-{next(_IDS)}"
        self.info = JobInfo(section=section)
        self.cancel_requested = threading.Event()
        self._on_cancel = on_cancel
        self._rebuild = rebuild
        self._interrupt_s = interrupt_s
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._done = threading.Event()
        self._finish_lock = threading.Lock()
        self._settled = False
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._here: Optional[Callable[[QueueJob], Any]] = None
        self._live: Optional[tuple] = None  # (progress, log) while a run_here job runs inside wait()

    # ---------------------------------------------------------------- the runner's side (any thread)
    def put(self, message: Message) -> None:
        """A ``Progress`` or ``Log`` message for the caller."""
        if self._live is not None:
            deliver(message, *self._live)
        else:
            self._inbox.put(message)

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        self.put(Progress(stage, float(fraction), message))

    def finish(self, message: Message) -> None:
        """End the job with its terminal message (the first one counts)."""
        with self._finish_lock:
            if self._done.is_set():
                return
            self._inbox.put(message)
            self._done.set()

    def run(self, work: Callable[["QueueJob"], Any]) -> None:
        """Run ``work(job)`` here and finish with its value as the ``Result`` or its exception's message."""
        try:
            terminal: Message = Result(value=work(self))
        except BaseException as exc:  # noqa: BLE001 - handed to wait() / poll()
            terminal = message_for(exc)
            self._error = exc  # the very exception (traceback included) for wait()
            if isinstance(exc, KeyboardInterrupt):
                self.finish(terminal)
                raise
        self.finish(terminal)

    def run_here(self, work: Callable[["QueueJob"], Any]) -> "QueueJob":
        """Run ``work`` in the caller's thread on the first ``poll`` / ``wait``."""
        self._here = work
        return self

    def start_thread(self, work: Callable[["QueueJob"], Any], name: str) -> "QueueJob":
        """Run ``work`` in a daemon thread of its own now."""
        threading.Thread(target=self.run, args=(work,), name=name, daemon=True).start()
        return self

    # ---------------------------------------------------------------- the caller's side
    @property
    def done(self) -> bool:
        """True once the job ended (result, error or cancelled) and its temporary files are gone."""
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop the job; nothing partial is returned."""
        if self.done or self.cancel_requested.is_set():
            return
        self.cancel_requested.set()
        self._on_cancel(self)

    def should_cancel(self) -> bool:
        return self.cancel_requested.is_set()

    def poll(self) -> List[Message]:
        """New messages (progress, log, then the terminal one) without blocking."""
        self._start_here(None, None)
        return self._drain(0.0)

    def wait(
        self, timeout: Optional[float] = None, progress: Optional[ProgressFn] = None, log: Optional[LogFn] = None
    ) -> Any:
        """Block until the job ends; return its value (a ``SegmentResult``; an inspection: its ``ModelInfo``). Raises
        the job's ``UserError`` / ``WorkerError`` / ``RemoteError``, ``CancelledError``, or ``TimeoutError`` when
        ``timeout`` passes (the job goes on). ``progress`` and ``log`` are called in this thread."""
        self._start_here(progress, log)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._settled:
                remaining = None if deadline is None else deadline - time.monotonic()
                for message in self._drain(0.25 if remaining is None else max(0.0, min(0.25, remaining))):
                    deliver(message, progress, log)
                if not self._settled and deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.id} still running after {timeout} s")
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait(self._interrupt_s)
            raise
        if self._error is not None:
            raise self._error
        return self._value

    def _start_here(self, progress: Optional[ProgressFn], log: Optional[LogFn]) -> None:
        work, self._here = self._here, None
        if work is None:
            return
        self._live = (progress, log) if progress is not None or log is not None else None
        try:
            self.run(work)
        finally:
            self._live = None

    def _drain(self, block_s: float) -> List[Message]:
        out: List[Message] = []
        try:
            out.append(self._inbox.get(timeout=block_s) if block_s > 0 else self._inbox.get_nowait())
            while True:
                out.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        for message in out:
            if isinstance(message, TERMINAL) and not self._settled:
                self._settle(message)
        return out

    def _settle(self, message: Message) -> None:
        self._settled = True
        if isinstance(message, (Error, Cancelled)):
            if self._error is None:
                self._error = message.exception()
            return
        self.info.update(message.info)
        if message.value is not None or self._rebuild is None:
            self._value = message.value
            return
        try:
            self._value = self._rebuild(message)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be rebuilt is a transport fault
            self._error = Error(
                "worker" if self.info.section == "worker" else "remote",
                f"Cannot read the job's result: {type(exc).__name__}: {exc}",
                "Use the client and server (or worker) of the same UNetSigmoidSeg version; else this is a bug.",
                reason="protocol",
            ).exception()
