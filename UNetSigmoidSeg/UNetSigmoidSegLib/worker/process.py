"""The worker process as the client sees it: starting it, its state, how it ended (and the error that says so), and
killing its whole tree. ``client.WorkerRunner`` owns the processes, their threads and the jobs."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from ..errors import WorkerError
from .handoff import remove_dir
from .protocol import encode, log_tail_text

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLICER_HINT = "in 3D Slicer the worker runs in PythonSlicer: install the PyTorch extension (PyTorch Utils) and restart"


def start_worker(
    python_executable: str, extra_env: Dict[str, str], temp_dir: str, idle_timeout_s: float, heartbeat_s: float
) -> "subprocess.Popen":
    """``python -m UNetSigmoidSegLib.worker`` with ``python_executable`` (a bare name is looked up on PATH), in its own
    session / process group, stdin, stdout and stderr piped; the environment is this one plus ``extra_env``, with
    this package importable and ``temp_dir`` as its temp folder. A missing interpreter or a failed start is a
    ``WorkerError`` (reason ``start``)."""
    exe = python_executable
    if os.path.basename(exe) == exe:  # a bare name such as "python3": look it up on PATH
        exe = shutil.which(exe) or exe
    if not os.path.isfile(exe) or not os.access(exe, os.X_OK):
        raise WorkerError(
            f"Python interpreter not found or not executable: {exe}",
            f"Give the path of a Python ≥ 3.9 with torch and MONAI (e.g. {sys.executable}); {SLICER_HINT}.",
            reason="start",
        )
    env = dict(os.environ, **extra_env)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("TMPDIR", "TEMP", "TMP"):  # the worker's own temp files (an extracted bundle) live in our
        env[name] = temp_dir  # private folder, which close() and the next client's sweep remove
    cmd = [
        exe,
        "-m",
        "UNetSigmoidSegLib.worker",
        "--idle-timeout",
        str(idle_timeout_s),
        "--heartbeat",
        str(heartbeat_s),
    ]
    kwargs: Dict[str, Any] = (
        {"start_new_session": True}
        if os.name == "posix"
        else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
            | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        }
    )
    try:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
            **kwargs,
        )
    except OSError as exc:
        raise WorkerError(
            f"Cannot start the worker with {exe}: {exc}",
            f"Give the path of a Python ≥ 3.9 with torch and MONAI; {SLICER_HINT}.",
            reason="start",
        ) from None
    return popen


def describe_exit(code: Optional[int]) -> str:
    """Human words for a ``Popen.returncode`` (negative: killed by that signal)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def kill_tree(popen: "subprocess.Popen") -> None:
    """SIGKILL the worker and every process it started (psutil when present, else its process group)."""
    children: List[Any] = []
    try:
        import psutil

        children = psutil.Process(popen.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing or the process already gone
        pass
    if os.name == "posix":
        try:
            os.killpg(popen.pid, signal.SIGKILL)  # started with start_new_session: its pid is the group id
        except OSError:
            pass
    for child in children:
        try:
            child.kill()
        except Exception:  # noqa: BLE001
            pass
    try:
        popen.kill()
        popen.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass


class WorkerProcess:
    """One worker process, what the client knows about it, and talking to it or killing it."""

    def __init__(self, popen: "subprocess.Popen") -> None:
        self.popen, self.pid = popen, popen.pid
        self.started = self.last_seen = time.monotonic()
        self.hello: Optional[Dict[str, Any]] = None
        self.hello_event = threading.Event()
        self.dead = threading.Event()
        self.stdout_done = threading.Event()
        self.stderr_done = threading.Event()
        self.kill_reason: Optional[str] = None
        self.kill_detail = ""
        self.fatal: Optional[Dict[str, Any]] = None  # an error the worker sent before dying (e.g. torch missing)
        self.tail: Deque[str] = deque(maxlen=200)
        self.write_lock = threading.Lock()

    def send(self, message: Dict[str, Any]) -> bool:
        """Write ``message`` (a protocol dict) to the worker's stdin; False when the process is gone."""
        try:
            with self.write_lock:
                self.popen.stdin.write(encode(message))
                self.popen.stdin.flush()
            return True
        except (OSError, ValueError):
            return False  # the process is gone: the reader / watchdog report it

    def kill(self, reason: str, detail: str) -> None:
        """Kill the whole process tree; the first ``reason`` / ``detail`` stay (``death_error`` explains them)."""
        if self.kill_reason is None:
            self.kill_reason, self.kill_detail = reason, detail
            self.tail.append(f"client: stopping the worker ({detail})")
        kill_tree(self.popen)


def death_error(proc: WorkerProcess, job_id: Optional[str], python_executable: str) -> WorkerError:
    """The error for job ``job_id`` (None: the start-up) whose worker died or was stopped, with the last log lines;
    ``python_executable`` is the worker's interpreter (named in start-up failures)."""
    tail = list(proc.tail)
    code = proc.popen.poll()
    fatal = proc.fatal if proc.fatal is not None and proc.fatal.get("kind") != "protocol" else None
    if fatal is not None:
        return WorkerError(
            str(fatal["message"]),
            str(fatal.get("hint", "")),
            reason=str(fatal.get("reason", "start")),
            log_tail=tail,
        )
    what = f"job {job_id}" if job_id is not None else "start-up"
    again = "Nothing partial was returned; the next run starts a fresh worker."
    if proc.kill_reason == "hang":
        text = f"The worker stopped responding ({proc.kill_detail}) during {what}; it was killed."
        hint = again
        reason = "hang"
    elif proc.kill_reason == "start_timeout":
        text = f"The worker did not start ({proc.kill_detail})."
        hint = f"Check that {python_executable} imports torch quickly; raise start_timeout_s on slow machines."
        reason = "start"
    elif proc.kill_reason in ("protocol", "version"):
        text = f"Worker protocol failure: {proc.kill_detail}; the worker was stopped."
        hint = again
        reason = "protocol"
    elif proc.hello is None:
        text = f"The worker could not start with {python_executable} ({describe_exit(code)})."
        if any("No module named 'UNetSigmoidSegLib" in ln for ln in tail):
            hint = f"That Python cannot import UNetSigmoidSegLib from {PACKAGE_PARENT}: is it Python ≥ 3.9?"
        else:
            hint = f"Check the log below; the worker needs Python ≥ 3.9 with torch and MONAI ({SLICER_HINT})."
        reason = "start"
    else:
        text = f"The worker process died ({describe_exit(code)}) during {what}."
        hint = again
        reason = "crashed"
    if tail:
        text += "\nLast worker log lines:\n" + log_tail_text(tail, 15)
    return WorkerError(text, hint, reason=reason, log_tail=tail)


class JobEntry:
    """The client's record of one job (a ``runners.job.QueueJob``) in a worker: its process, its command (sent
    again to a fresh worker if the first one went idle as it arrived), its hand-off folder, and when a cancel was
    asked for."""

    def __init__(self, job: Any, proc: WorkerProcess, folder: Optional[str], command: Dict[str, Any]) -> None:
        self.job, self.proc = job, proc
        self.folder, self.command = folder, command
        self.cancel_requested_at: Optional[float] = None
        self.resent = 0

    def finish(self, message: Any) -> None:
        """End the job once, after removing its hand-off folder."""
        remove_dir(self.folder)
        self.job.finish(message)
