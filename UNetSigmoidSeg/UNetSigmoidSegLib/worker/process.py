"""The worker process as the client sees it: its state, how it ended, and killing its whole tree."""

import os
import signal
import subprocess
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional


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
    """One worker process and what the client knows about it."""

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
