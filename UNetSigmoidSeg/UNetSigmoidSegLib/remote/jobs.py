"""The server's jobs: at most ``max_queue`` waiting in front of one executor thread (one job per GPU at a time).

A job's request body is spooled to ``<temp>/<id>.body`` when it arrives (validated, not decompressed) and read
back when the job starts; an uploaded model gets ``<temp>/<id>/`` for the moment it is loaded. Both are removed
when the job ends, whatever the ending; the result (the compact wire form) stays in memory until the client
acknowledges it. Messages (``progress`` / ``log`` / ``warning`` / ``queue``, then one terminal ``result`` /
``error`` / ``cancelled``) are numbered; clients long-poll for those after the last they saw. A job whose client
stops asking for ``client_timeout_s`` is cancelled and freed. The engine host is the same as the worker's
(``runners.host.EngineHost``, held by the ``ModelStore``) with ``should_cancel`` checked between windows.
"""

import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from ..contract import wire
from ..contract.messages import Error, Log, Message, Progress, message_for
from ..errors import UserError
from ..sysinfo import rss_bytes, trim_heap
from ..worker.handoff import remove_dir, sweep_stale, write_pid_file

DIR_PREFIX = "unetseg-remote-"


class Busy(Exception):
    """The queue is full."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"server busy, {queued} queued")
        self.queued = queued


class ServerJob:
    """One submitted run. ``request``: ``{"run": RunRequest, "upload": dict | None}`` (an upload's model is loaded
    from the body), validated when it arrived."""

    def __init__(self, job_id: str, spool: str, client: str, request: Dict[str, Any], owner: str = "owner") -> None:
        self.id, self.spool = job_id, spool
        self.client = client
        self.owner = owner  # the name of the token that submitted it (remote.identity): only it may see the job
        self.request = request
        self.state = "queued"  # queued | running | done
        self.messages: List[Dict[str, Any]] = []
        self.seq = 0
        self.cancel = threading.Event()
        self.result: Optional[bytes] = None
        self.terminal: Optional[Dict[str, Any]] = None
        self.created = self.last_seen = time.monotonic()
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.event: Any = None  # asyncio.Event, created and replaced in the event loop's thread only

    def wake(self) -> None:
        """(event-loop thread) wake every long-poll waiting on this job."""
        import asyncio

        old, self.event = self.event, asyncio.Event()
        if old is not None:
            old.set()


class JobQueue:
    """The queue, the executor threads and the job registry. ``limits``: ``max_volume_bytes``, ``max_request_bytes``.
    ``pool``: a ``runners.ray_pool.RayPool`` that runs the jobs (``serve --ray``; one executor per replica; uploads
    still run on the store's own host), else ``store.host`` runs them, one at a time."""

    def __init__(
        self,
        store: Any,
        max_queue: int,
        device: str,
        limits: Dict[str, int],
        client_timeout_s: float = 60.0,
        temp_root: Optional[str] = None,
        log: Callable[[str], None] = lambda _m: None,
        pool: Any = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.max_queue = int(max_queue)
        self.device = device
        self.limits = dict(limits)
        self.client_timeout_s = float(client_timeout_s)
        self.log = log
        self.temp_root = temp_root or tempfile.gettempdir()
        self.temp_dir = ""  # created by start(), removed by stop()
        self.swept: List[str] = []
        self._cond = threading.Condition()
        self._queue: Deque[ServerJob] = deque()
        self._reserved = 0  # queue places held by bodies still arriving
        self._jobs: Dict[str, ServerJob] = {}
        self.active: List[ServerJob] = []  # running now, oldest first
        self.loop: Any = None
        self._stop = False
        self.ready = threading.Event()  # set once the engine is imported (set by the server's preload)
        self.done_count = 0
        workers = len(pool.actors) if pool is not None else 1
        self._threads = [
            threading.Thread(target=self._executor, name=f"unetseg-remote-executor-{i}", daemon=True)
            for i in range(workers)
        ]

    @property
    def running(self) -> Optional[ServerJob]:
        return self.active[0] if self.active else None

    # ---------------------------------------------------------------- life
    def start(self, loop: Any) -> None:
        """(server start-up) Sweep dead servers' temp folders, make this one's (0700), start the executor."""
        self.swept = sweep_stale(self.temp_root, prefix=DIR_PREFIX)
        self.temp_dir = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self.temp_root)
        write_pid_file(os.path.join(self.temp_dir, "owner.pid"), os.getpid())
        self.store.temp_roots.append(self.temp_dir)
        self.loop = loop
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Cancel every job, stop the executor, remove the temp folder."""
        with self._cond:
            self._stop = True
            for job in list(self._queue):
                job.cancel.set()
            for job in self.active:
                job.cancel.set()
            self._cond.notify_all()
        deadline = time.monotonic() + 4.0  # a job stuck in a network that never returns is left to the process's end
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        remove_dir(self.temp_dir)

    @property
    def max_decoded_bytes(self) -> int:
        """All arrays of a request, decompressed: the volume, and an uploaded model with its JSON."""
        return self.limits["max_volume_bytes"] + 2 * self.limits["max_request_bytes"]

    def new_spool(self) -> str:
        return os.path.join(self.temp_dir, secrets.token_hex(12) + ".body")

    def temp_entries(self) -> List[str]:
        return sorted(n for n in os.listdir(self.temp_dir) if n != "owner.pid")

    # ---------------------------------------------------------------- requests (event-loop thread)
    def reserve(self) -> None:
        """Hold a queue place for a body about to be read; ``Busy`` when ``max_queue`` jobs wait or arrive already. So
        the spool folder never holds more bodies than the queue takes, however many clients send at once."""
        with self._cond:
            if len(self._queue) + self._reserved >= self.max_queue:
                raise Busy(len(self._queue) + self._reserved)
            self._reserved += 1

    def release(self) -> None:
        """Give back a place ``reserve`` held for a body that did not become a job."""
        with self._cond:
            self._reserved = max(0, self._reserved - 1)

    def add(self, spool: str, client: str, request: Dict[str, Any], owner: str = "owner") -> ServerJob:
        """Queue a job for ``spool`` (renamed to the job's id) in the place ``reserve`` held for it."""
        with self._cond:
            self._reserved = max(0, self._reserved - 1)
            job_id = secrets.token_urlsafe(12)
            path = os.path.join(self.temp_dir, job_id + ".body")
            os.replace(spool, path)
            job = ServerJob(job_id, path, client, request, owner)
            job.wake()
            self._queue.append(job)
            self._jobs[job_id] = job
            self._post(job, {"type": "queue", "ahead": self._ahead(job)})
            self._cond.notify_all()
        self.log(f"job {job_id[:6]} from {client}, token {owner}, queued ({self._ahead(job)} ahead)")
        return job

    def queued(self) -> int:
        return len(self._queue)

    def get(self, job_id: str) -> Optional[ServerJob]:
        job = self._jobs.get(job_id)
        if job is not None:
            job.last_seen = time.monotonic()
        return job

    def ahead(self, job: ServerJob) -> int:
        with self._cond:
            return self._ahead(job)

    def _ahead(self, job: ServerJob) -> int:
        if job.state != "queued":
            return 0
        return list(self._queue).index(job) + (1 if len(self.active) >= len(self._threads) else 0)

    async def wait(self, job: ServerJob, after: int, timeout: float) -> None:
        """Until ``job`` has a message after ``after`` or ``timeout`` seconds passed."""
        import asyncio

        deadline = self.loop.time() + timeout
        while not (job.messages and job.messages[-1]["seq"] > after):
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(job.event.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def events(self, job: ServerJob, after: int) -> Dict[str, Any]:
        """The messages after ``after`` (earlier ones are dropped: the client has them). A job that ended without a
        result is forgotten once its terminal message went out."""
        with self._cond:
            job.messages = [m for m in job.messages if m["seq"] > after]
            out = {"job": job.id, "state": job.state, "ahead": self._ahead(job), "messages": list(job.messages)}
            if job.state == "done" and job.result is None and any(m["seq"] == job.seq for m in job.messages):
                self._jobs.pop(job.id, None)
        job.last_seen = time.monotonic()
        return out

    def cancel(self, job: ServerJob, why: str = "cancelled by the client") -> str:
        """Cancel a queued job now, ask a running one to stop between windows, forget a finished one."""
        with self._cond:
            if job.state == "queued":
                self._queue.remove(job)
                self._finish(job, {"type": "cancelled", "message": why})
                self._requeue_positions()
                return "cancelled"
            if job.state == "running":
                job.cancel.set()
                return "cancelling"
            self._jobs.pop(job.id, None)  # acknowledged: its result (if any) is freed
            job.result = None
            return "released"

    def sweep(self) -> None:
        """Cancel jobs whose client stopped asking; free results nobody fetched."""
        now = time.monotonic()
        for job in list(self._jobs.values()):
            if now - job.last_seen <= self.client_timeout_s:
                continue
            if job.state in ("queued", "running") and not job.cancel.is_set():
                self.log(f"job {job.id[:6]}: no word from {job.client} for {self.client_timeout_s:g} s, cancelling")
                self.cancel(job, f"cancelled: the client stopped asking for {self.client_timeout_s:g} s")
            elif job.state == "done":
                with self._cond:
                    self._jobs.pop(job.id, None)
                    job.result = None
                self.log(f"job {job.id[:6]}: {job.client} did not collect it for {self.client_timeout_s:g} s, freed")

    def health(self) -> Dict[str, Any]:
        with self._cond:
            running = self.running
            return {
                "busy": len(self.active) >= len(self._threads),
                "running_for_s": round(time.monotonic() - (running.started_at or running.created), 1)
                if running is not None
                else None,
                "queued": len(self._queue),
                "max_queue": self.max_queue,
                "jobs_done": self.done_count,
                "held": len(self._jobs),  # jobs known: queued, running, or finished and not yet collected
                "rss_bytes": rss_bytes(),
                "ready": self.ready.is_set(),
            }

    # ---------------------------------------------------------------- messages (any thread)
    def _post(self, job: ServerJob, message: Dict[str, Any]) -> None:
        with self._cond:
            job.seq += 1
            job.messages.append(dict(message, seq=job.seq))
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(job.wake)
            except RuntimeError:  # the loop is closed: the server is stopping
                pass

    def _finish(self, job: ServerJob, terminal: Dict[str, Any]) -> None:
        for path in (job.spool, os.path.join(self.temp_dir, job.id)):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
        with self._cond:
            job.state, job.terminal = "done", terminal
            job.finished_at = time.monotonic()
            self.done_count += 1
        self._post(job, terminal)

    def _requeue_positions(self) -> None:
        for job in list(self._queue):
            self._post(job, {"type": "queue", "ahead": self._ahead(job)})

    # ---------------------------------------------------------------- the executor thread
    def _executor(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._queue.popleft()
                job.state = "running"
                self.active.append(job)
                job.started_at = time.monotonic()
                self._requeue_positions()
            t0 = time.perf_counter()
            terminal = self._execute(job)
            terminal["server_s"] = round(time.perf_counter() - t0, 3)
            try:
                with self._cond:
                    self.active.remove(job)
                    self._requeue_positions()
                self._finish(job, terminal)
                self.log(f"job {job.id[:6]} {terminal['type']} in {terminal['server_s']:.1f} s")
            except Exception:  # noqa: BLE001 - the executor must outlive any job
                sys.stderr.write(traceback.format_exc())

    def _execute(self, job: ServerJob) -> Dict[str, Any]:
        """Run one job through the engine host; returns its terminal message. Frees its files and memory."""
        emit = self._emitter(job)
        try:
            if not self.ready.wait(600.0):
                raise UserError("The server is still starting", "Try again in a minute.")
            emit(Progress("load", 0.0, "reading the request"))
            with open(job.spool, "rb") as f:
                data = f.read()
            os.remove(job.spool)
            fields, arrays = wire.decode(data, self.limits["max_volume_bytes"], self.max_decoded_bytes)
            del data, fields
            request, upload = job.request["run"], job.request["upload"]
            loaded = None
            if upload is not None:
                folder = os.path.join(self.temp_dir, job.id)
                os.mkdir(folder, 0o700)
                sidecar = arrays["sidecar"].tobytes() if "sidecar" in arrays else None
                loaded = self.store.upload(
                    folder, upload["suffix"], arrays["model"].data, sidecar, upload.get("strides")
                )
            array = arrays.pop("volume")
            del arrays
            host = self.pool if self.pool is not None and loaded is None else self.store.host
            result, how = host.run(request, array, emit, job.cancel.is_set, loaded)
            del array
            result_fields, result_arrays = result.to_wire()
            del result
            job.result = b"".join(wire.encode({"result": result_fields}, result_arrays))
            del result_arrays
            return dict(how, type="result", bytes=len(job.result))
        except wire.WireError as exc:
            return {
                "type": "error",
                "kind": "remote",
                "reason": "protocol",
                "message": f"The server could not read the request: {exc}",
                "hint": "Use a client of the same UNetSigmoidSeg version as the server.",
            }
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message; the server keeps serving
            terminal = message_for(exc, self.store.scrub, " on the server")
            if isinstance(terminal, Error) and terminal.kind == "internal":
                sys.stderr.write(traceback.format_exc())
                terminal.hint = "This is a bug: please report it with the server's log."
            return terminal.to_dict()
        finally:  # the job's arrays went with their last reference (``del`` above); a full gc.collect() would hold
            # the GIL ~0.2 s with torch loaded, delaying this very result's download — the test measures RSS instead
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()
            trim_heap()

    def _emitter(self, job: ServerJob) -> Callable[[Message], None]:
        """The host's messages → this job's numbered events; log text without the server's paths."""

        def emit(message: Message) -> None:
            if isinstance(message, Log):
                message = Log(self.store.scrub(message.message), message.level)
            self._post(job, message.to_dict())

        return emit
