"""``WorkerRunner``: start, feed, watch and stop the worker process; no Qt import (Slicer polls ``Job.poll``).

Per worker process three daemon threads: stdout reader (messages → jobs; loads result arrays and
removes each job's folder before finishing the job), stderr reader (log tail) and a
watchdog (start timeout, heartbeat timeout, unacknowledged cancel → kill the whole process tree).
Any death fails the running jobs with a clear error; the next ``submit`` starts a fresh worker. ``process`` has the
worker process itself: its command line and environment, its state, killing it and the error that explains its death.
"""

import atexit
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..contract.messages import Cancelled, Error, Log, Message, Result, message_from_dict
from ..contract.model import ModelInfo, ModelSpec
from ..contract.options import SegmentOptions
from ..contract.request import RunRequest
from ..contract.result import SegmentResult
from ..contract.volume import Volume
from ..errors import InputError, WorkerError
from ..worker.handoff import make_private_dir, read_array, remove_dir, sweep_stale, write_array, write_pid_file
from ..worker.process import JobEntry, WorkerProcess, death_error, start_worker
from ..worker.protocol import PROTOCOL_VERSION, WORKER_TYPES, ProtocolError, make, read_messages
from .job import QueueJob

WARM_IDLE_S, COLD_IDLE_S = 600.0, 5.0  # how long an idle worker waits for the next run (keep_warm on / off)


class WorkerRunner:
    """The ``Runner`` whose jobs run in a warm background worker process (``python -m UNetSigmoidSegLib.worker``).

    python_executable: interpreter with torch + MONAI (Slicer: PythonSlicer). idle_timeout_s: the
    worker exits after this long without a job. heartbeat_timeout_s: no message for this long → hung →
    killed. start_timeout_s: the worker must say hello within this. cancel_timeout_s: an unacknowledged
    cancel kills the process tree. temp_root: where the private hand-off folder goes. env: extra
    environment for the worker.
    """

    runs_here = True

    def __init__(
        self,
        python_executable: Optional[str] = None,
        idle_timeout_s: float = WARM_IDLE_S,
        heartbeat_timeout_s: float = 20.0,
        start_timeout_s: float = 180.0,
        cancel_timeout_s: float = 2.0,
        heartbeat_s: float = 1.0,
        temp_root: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.python_executable = python_executable or sys.executable
        self.idle_timeout_s, self.heartbeat_timeout_s = float(idle_timeout_s), float(heartbeat_timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.cancel_timeout_s = float(cancel_timeout_s)
        self.heartbeat_s = float(heartbeat_s)
        self.temp_root, self.env = temp_root, dict(env or {})
        self.swept = sweep_stale(temp_root)
        self.temp_dir = make_private_dir(temp_root)
        self._lock = threading.RLock()
        self._proc: Optional[WorkerProcess] = None
        self._last: Optional[WorkerProcess] = None  # the latest worker, alive or not (for its log)
        self._jobs: Dict[str, JobEntry] = {}
        self._closed = False
        self.starts = 0  # worker processes started by this client
        atexit.register(self.close)

    # -- public ---------------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        proc = self._proc
        return proc.pid if proc is not None and not proc.dead.is_set() else None

    @property
    def hello(self) -> Optional[Dict[str, Any]]:
        """The latest worker's hello (protocol, pid, Python / torch / MONAI versions, CUDA), also after it died."""
        proc = self._last
        return proc.hello if proc is not None else None

    @property
    def log_tail(self) -> List[str]:
        """The latest worker's last log lines (its stderr and log messages), also after it died."""
        proc = self._last
        return list(proc.tail) if proc is not None else []

    def start(self, wait: bool = True) -> Optional[Dict[str, Any]]:
        """Start the worker now (e.g. when the Slicer module opens); with ``wait``, block until its hello."""
        with self._lock:
            proc = self._ensure_process()
        if not wait:
            return None
        while not proc.hello_event.wait(0.1):
            if proc.dead.is_set():
                raise death_error(proc, None, self.python_executable)
        return proc.hello

    def describe(self) -> Optional[Dict[str, Any]]:
        """The worker's hello once it started (Python / torch / MONAI versions, CUDA devices), else None."""
        return self.hello

    def keep_warm(self, keep: bool) -> None:
        """Keep the worker and its loaded networks for ``WARM_IDLE_S`` between runs (and start it now, so
        torch imports while the user picks inputs), or let it exit seconds after each run (and stop an idle one now)."""
        self.idle_timeout_s = WARM_IDLE_S if keep else COLD_IDLE_S  # used by the next worker process
        if keep:
            self.start(wait=False)
            return
        with self._lock:
            proc = self._proc
            idle = proc is not None and not proc.dead.is_set() and not self._jobs_of(proc)
        if idle:
            proc.send(make("shutdown"))
            if not proc.dead.wait(3.0):
                proc.kill("closed", "stopped while idle")

    def submit(self, volume: Volume, model: ModelSpec, options: SegmentOptions) -> QueueJob:
        """Start segmenting ``volume`` (``(C, I, J, K)`` array + voxel→RAS affine) with ``model``; returns at once."""
        array = np.asarray(volume.array)
        if array.dtype.kind not in "biuf":
            raise InputError(f"Cannot hand a {array.dtype} array to the worker", "Give a numeric (C, I, J, K) array.")
        request = RunRequest(model, options, volume.affine)
        job = self._new_job(_rebuild_result)
        folder = self._new_folder(job.id)
        try:
            t0 = time.perf_counter()
            desc = write_array(folder, "input", array)
            job.info.timings["write_input_s"] = time.perf_counter() - t0
        except Exception as exc:
            remove_dir(folder)
            raise WorkerError(
                f"Cannot write the input for the worker to {folder}: {exc}",
                "Free disk space in the temp folder.",
                reason="handoff",
            ) from None
        command = make("run", job=job.id, input=desc, output_dir=folder, **request.to_wire())
        return self._launch(job, folder, command)

    def inspect(self, model: ModelSpec) -> QueueJob:
        """Load (and cache) ``model`` in the worker; the job's value is its ``ModelInfo``."""
        job = self._new_job(_rebuild_info)
        return self._launch(job, None, make("load", job=job.id, model=model.to_dict()))

    def close(self, timeout: float = 3.0) -> None:
        """Stop the worker (shutdown, then kill), fail running jobs as cancelled, remove the temp folder."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
        if proc is not None and not proc.dead.is_set():
            proc.send(make("shutdown"))
            if not proc.dead.wait(timeout if not self._jobs_of(proc) else 0.5):
                proc.kill("closed", "the client was closed")
            proc.dead.wait(timeout)
        remove_dir(self.temp_dir)
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "WorkerRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- processes ------------------------------------------------------------------------------
    def _new_job(self, rebuild: Any) -> QueueJob:
        if self._closed:
            raise WorkerError("The worker runner is closed", "Create a new WorkerRunner.", reason="closed")
        return QueueJob("worker", self._cancel, rebuild, "worker", self.cancel_timeout_s + 5.0)

    def _new_folder(self, job_id: str) -> str:
        folder = os.path.join(self.temp_dir, f"job-{job_id}")
        os.mkdir(folder, 0o700)
        return folder

    def _launch(self, job: QueueJob, folder: Optional[str], command: Dict[str, Any]) -> QueueJob:
        try:
            with self._lock:
                if self._closed:
                    raise WorkerError("The worker runner is closed", "Create a new WorkerRunner.", reason="closed")
                proc = self._ensure_process()
                entry = self._jobs[job.id] = JobEntry(job, proc, folder, command)
        except BaseException:
            remove_dir(folder)
            raise
        proc.send(entry.command)
        return job

    def _ensure_process(self) -> WorkerProcess:
        if self._proc is not None and not self._proc.dead.is_set() and self._proc.kill_reason is None:
            return self._proc
        if self._closed:
            raise WorkerError("The worker runner is closed", "Create a new WorkerRunner.", reason="closed")
        popen = start_worker(self.python_executable, self.env, self.temp_dir, self.idle_timeout_s, self.heartbeat_s)
        proc = WorkerProcess(popen)
        write_pid_file(os.path.join(self.temp_dir, f"worker-{popen.pid}.pid"), popen.pid)
        self._proc = self._last = proc
        self.starts += 1
        for target in (self._read_stdout, self._read_stderr, self._watch):
            threading.Thread(
                target=target, args=(proc,), name=f"unetseg-worker-{popen.pid}-{target.__name__}", daemon=True
            ).start()
        return proc

    def _jobs_of(self, proc: WorkerProcess) -> List[JobEntry]:
        with self._lock:
            return [e for e in self._jobs.values() if e.proc is proc]

    def _cancel(self, job: QueueJob) -> None:
        with self._lock:
            entry = self._jobs.get(job.id)
        if entry is None or entry.cancel_requested_at is not None:
            return
        entry.cancel_requested_at = time.monotonic()
        entry.proc.send(make("cancel", job=job.id))

    # -- threads --------------------------------------------------------------------------------
    def _read_stdout(self, proc: WorkerProcess) -> None:
        try:
            for item in read_messages(proc.popen.stdout, WORKER_TYPES):
                proc.last_seen = time.monotonic()
                if isinstance(item, ProtocolError):
                    proc.tail.append(f"protocol error: {item.message}: {item.line_start!r}")
                    proc.kill("protocol", f"the worker sent a malformed message ({item.message})")
                    continue
                self._dispatch(proc, item)
        finally:
            proc.stdout_done.set()
            try:
                proc.popen.wait(timeout=self.cancel_timeout_s + 1.0)
            except subprocess.TimeoutExpired:
                proc.kill("protocol", "the worker closed its output but kept running")
            self._on_death(proc)

    def _read_stderr(self, proc: WorkerProcess) -> None:
        try:
            for raw in iter(proc.popen.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    proc.tail.append(line)
                    for entry in self._jobs_of(proc):
                        entry.job.put(Log(line, source="stderr"))
        except (OSError, ValueError):
            pass
        finally:
            proc.stderr_done.set()

    def _watch(self, proc: WorkerProcess) -> None:
        while not proc.dead.wait(0.1):
            now = time.monotonic()
            if proc.popen.poll() is not None:
                if proc.stdout_done.wait(2.0):
                    continue  # the stdout reader handles the death
                self._on_death(proc)
            elif proc.hello is None and now - proc.started > self.start_timeout_s:
                proc.kill("start_timeout", f"no hello within {self.start_timeout_s:g} s")
            elif proc.hello is not None and now - proc.last_seen > self.heartbeat_timeout_s:
                proc.kill("hang", f"no heartbeat for {self.heartbeat_timeout_s:g} s")
            elif any(
                e.cancel_requested_at is not None and now - e.cancel_requested_at > self.cancel_timeout_s
                for e in self._jobs_of(proc)
            ):
                proc.kill("cancel", f"cancel not acknowledged within {self.cancel_timeout_s:g} s")

    def _dispatch(self, proc: WorkerProcess, message: Dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "hello":
            if message["protocol"] != PROTOCOL_VERSION:
                proc.fatal = Error(
                    "worker",
                    f"The worker speaks protocol {message['protocol']}, this client {PROTOCOL_VERSION}",
                    "Use the worker and client of the same UNetSigmoidSeg version.",
                    reason="version",
                ).to_dict()
                proc.kill("version", "protocol version mismatch")
                return
            proc.hello = message
            proc.tail.append(
                f"worker {message['pid']}: Python {message.get('python')}, torch {message.get('torch')}, "
                f"MONAI {message.get('monai')}, CUDA {'yes' if message.get('cuda') else 'no'}"
            )
            proc.hello_event.set()
            return
        if kind == "heartbeat":
            return
        if kind in ("log", "warning", "error"):
            proc.tail.append(("warning: " if kind == "warning" else "") + str(message.get("message", "")))
        with self._lock:
            entry = self._jobs.get(str(message.get("job")))
        if entry is None or entry.proc is not proc:
            if kind == "error" and "job" not in message:
                proc.fatal = message  # start-up failure, or a rejected command: kept for the death report
            return
        if kind == "busy":
            terminal: Message = Error(
                "worker",
                f"The worker is busy with another run (job {message.get('current')}): one run at a time",
                "Wait for the running job to finish, or cancel it first.",
                reason="busy",
            )
        else:
            terminal = message_from_dict(message)
        if not isinstance(terminal, (Result, Error, Cancelled)):
            entry.job.put(terminal)
            return
        if isinstance(terminal, Result):
            terminal.info = message  # JobInfo.update takes the fields it knows (pid, cache_hit, timings …)
            try:
                t0 = time.perf_counter()
                terminal.arrays = {k: read_array(d) for k, d in (message.get("outputs") or {}).items() if d}
                entry.job.info.timings["read_output_s"] = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001
                terminal = Error(
                    "worker",
                    f"Cannot read the worker's results: {exc}",
                    "Check free space in the temp folder.",
                    reason="handoff",
                )
        with self._lock:
            self._jobs.pop(entry.job.id, None)
        entry.finish(terminal)

    def _on_death(self, proc: WorkerProcess) -> None:
        with self._lock:
            if proc.dead.is_set():
                return
            proc.dead.set()
            entries = [e for e in self._jobs.values() if e.proc is proc]
            if self._proc is proc:
                self._proc = None
        proc.stderr_done.wait(0.5)
        code = proc.popen.poll()
        try:
            os.remove(os.path.join(self.temp_dir, f"worker-{proc.pid}.pid"))
        except OSError:
            pass
        for entry in entries:
            if (
                code == 0
                and proc.kill_reason is None
                and entry.resent == 0
                and entry.cancel_requested_at is None
                and not self._closed
            ):
                self._resend(entry)  # the worker went idle just as the job arrived: give it to a fresh one
                continue
            with self._lock:
                self._jobs.pop(entry.job.id, None)
            if (
                proc.kill_reason == "cancel"
                and entry.cancel_requested_at is not None
                or proc.kill_reason == "closed"
                or self._closed
            ):
                entry.finish(Cancelled(f"cancelled ({proc.kill_detail}: the worker was stopped)"))
            else:
                exc = death_error(proc, entry.job.id, self.python_executable)
                entry.finish(Error("worker", exc.message, exc.hint, exc.reason, exc.log_tail))

    def _resend(self, entry: JobEntry) -> None:
        try:
            with self._lock:
                proc = self._ensure_process()
                entry.proc, entry.resent = proc, entry.resent + 1
            proc.send(entry.command)
        except WorkerError as exc:
            with self._lock:
                self._jobs.pop(entry.job.id, None)
            entry.finish(Error("worker", exc.message, exc.hint, exc.reason))


def _rebuild_result(message: Result) -> SegmentResult:
    return SegmentResult.from_wire(message.fields["result"], message.arrays)


def _rebuild_info(message: Result) -> ModelInfo:
    return ModelInfo.from_dict(message.fields["info"])
