"""The worker loop: one job at a time, a warm model cache, cooperative cancel, heartbeats.

Threads: the main thread runs jobs; a reader thread reads commands from the protocol input
(so ``cancel`` and a rejected second ``run`` are answered while a job runs); a heartbeat thread
sends ``heartbeat`` every ``heartbeat_s``; a preload thread imports MONAI and the engine right
after ``hello`` so the first job does not pay for it. Every message goes through ``send`` (one
lock, one flush). Knows nothing of MRML, Qt or the client.
"""

import queue
import sys
import threading
import traceback
from collections import deque
from typing import Any, BinaryIO, Deque, Dict, Optional

from ..contract.messages import Cancelled, message_for
from ..runners.host import EngineHost
from .execute import load_job, run_job
from .protocol import CLIENT_TYPES, ProtocolError, clip_text, encode, error_message, make, read_messages

CACHE_SIZE = 2  # networks kept warm


class Server:
    """Serves commands from ``inp`` and writes messages to ``out`` (both binary streams); the ``JobContext``
    of the jobs it runs."""

    def __init__(
        self,
        inp: BinaryIO,
        out: BinaryIO,
        idle_timeout_s: float = 600.0,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.inp, self.out = inp, out
        self.idle_timeout_s, self.heartbeat_s = float(idle_timeout_s), float(heartbeat_s)
        self._send_lock = threading.Lock()
        self._state = threading.Lock()
        self._jobs: queue.Queue[Optional[Dict[str, Any]]] = queue.Queue()
        self._current: Optional[str] = None  # job accepted and not finished
        self._started = False  # whether the main thread began the current job
        self._skipped: set = set()  # jobs cancelled before they started
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._preloaded = threading.Event()
        self._preload_error: Optional[str] = None
        self.tail: Deque[str] = deque(maxlen=60)
        self.host = EngineHost(CACHE_SIZE, log=self.log)

    # -- output ---------------------------------------------------------------------------------
    def send(self, message: Dict[str, Any]) -> None:
        """Write one message; an unencodable one becomes an ``internal`` error; a closed pipe stops the worker."""
        try:
            data = encode(message)
        except ProtocolError as exc:
            data = encode(
                error_message(
                    "internal",
                    f"worker could not send a {message.get('type')} message: {exc}",
                    job=message.get("job"),
                    log_tail=list(self.tail),
                )
            )
        try:
            with self._send_lock:
                self.out.write(data)
                self.out.flush()
        except (OSError, ValueError):
            self._stop.set()  # the client is gone
            self._cancel.set()

    def remember(self, line: str) -> None:
        self.tail.append(clip_text(line))

    def log(self, text: str, job: Optional[str] = None) -> None:
        text = clip_text(text)
        self.tail.append(text)
        fields = {"message": text}
        if job is not None:
            fields["job"] = job
        self.send(make("log", **fields))

    # -- threads --------------------------------------------------------------------------------
    def _reader(self) -> None:
        for item in read_messages(self.inp, CLIENT_TYPES):
            if isinstance(item, ProtocolError):
                self.tail.append(f"protocol error: {item.message}")
                self.send(
                    error_message(
                        "protocol",
                        f"The worker rejected a command: {item.message}",
                        "The client and worker must speak the same protocol; this is a bug in the caller.",
                        line_start=item.line_start.decode("utf-8", "replace"),
                    )
                )
                continue
            kind = item["type"]
            if kind == "cancel":
                self._on_cancel(item["job"])
            elif kind == "shutdown":
                break
            else:
                with self._state:
                    busy = self._current
                    if busy is None:
                        self._current, self._started = item["job"], False
                        self._cancel.clear()
                if busy is not None:
                    self.send(
                        make(
                            "busy",
                            job=item["job"],
                            current=busy,
                            message=f"the worker is busy with job {busy}; one run at a time",
                        )
                    )
                else:
                    self._jobs.put(item)
        self._stop.set()  # shutdown or EOF (the client closed the pipe or died)
        self._cancel.set()
        self._jobs.put(None)

    def _on_cancel(self, job: str) -> None:
        with self._state:
            if job != self._current:
                return  # finished already (its terminal message is on its way) or unknown
            if not self._started:  # still queued: acknowledge now, skip it later
                self._skipped.add(job)
                self._current = None
                ack = True
            else:
                self._cancel.set()
                ack = False
        if ack:
            self.send(make("cancelled", job=job))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._state:
                current = self._current
            self.send(make("heartbeat", busy=current is not None, job=current))

    def _preload(self) -> None:
        try:
            import monai  # noqa: F401
            from monai.inferers import sliding_window_inference  # noqa: F401
            from monai.networks.nets import UNet  # noqa: F401

            from ..engine.loading import model  # noqa: F401
            from ..engine.running import pipeline  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - reported with the first job
            self._preload_error = f"{type(exc).__name__}: {exc}"
            self.tail.append(traceback.format_exc())
            sys.stderr.write(traceback.format_exc())
        finally:
            self._preloaded.set()

    # -- main loop ------------------------------------------------------------------------------
    def serve(self) -> int:
        """Run until shutdown, EOF on the input or ``idle_timeout_s`` without a job. Returns the exit code."""
        for target in (self._reader, self._heartbeat, self._preload):
            threading.Thread(target=target, name=f"worker-{target.__name__.strip('_')}", daemon=True).start()
        while not self._stop.is_set():
            try:
                item = self._jobs.get(timeout=self.idle_timeout_s)
            except queue.Empty:
                self.log(f"idle for {self.idle_timeout_s:g} s: shutting down")
                break
            if item is None:
                break
            with self._state:
                if item["job"] in self._skipped:
                    self._skipped.discard(item["job"])
                    continue
                self._started = True
            message = None
            try:
                message = self._handle(item)
            finally:
                with self._state:  # free before the terminal message: a client may submit the next job at once
                    self._current = None
            if message is not None:
                self.send(message)
        return 0

    def _handle(self, item: Dict[str, Any]) -> Dict[str, Any]:
        """Run one ``load`` / ``run`` command; returns its terminal message (sent after files are released)."""
        job = item["job"]
        try:
            self._preloaded.wait()
            if self._preload_error:
                return error_message(
                    "worker",
                    f"The worker cannot import MONAI / the engine: {self._preload_error}",
                    f'Install them into that Python: "{sys.executable}" -m pip install torch monai SimpleITK',
                    job=job,
                    log_tail=list(self.tail),
                    reason="missing_dependency",
                )
            return load_job(self, item) if item["type"] == "load" else run_job(self, item)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a dead pipe
            return self.error_for(exc, job)

    def error_for(self, exc: BaseException, job: str) -> Dict[str, Any]:
        """The terminal message for an exception raised by a job (``contract.messages.message_for``); a bug's
        traceback goes to stderr and the log tail."""
        terminal = message_for(exc, where=" in the worker")
        if isinstance(terminal, Cancelled):
            self.log(f"cancelled: {exc}", job)
            return make("cancelled", job=job, message=terminal.message)
        if terminal.kind == "internal":
            text = traceback.format_exc()
            sys.stderr.write(text)
            self.tail.extend(text.rstrip().splitlines())
        else:
            self.log(f"{terminal.kind} error: {exc}", job)
        reason = {"reason": terminal.reason} if terminal.reason else {}
        return error_message(
            terminal.kind, terminal.message, terminal.hint, job=job, log_tail=list(self.tail), **reason
        )

    def should_cancel(self) -> bool:
        return self._cancel.is_set()

    def on_stage(self, stage: str, job: Optional[str] = None) -> None:
        """A job reached ``stage`` (``load``, ``preprocess``, ``inference`` after its first window, ``postprocess``,
        ``output``). Nothing happens here: it is where an observer hooks in (the tests inject worker faults)."""
