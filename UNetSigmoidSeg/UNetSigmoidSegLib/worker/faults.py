"""Test hook: make the worker fail on purpose at a given stage.

A fault is ``KIND@STAGE``, given only from outside the product: the environment variable
``UNETSEG_WORKER_FAULT`` of the worker process (tests pass it with ``WorkerRunner(env=...)``). It fires
at start-up or in every job that reaches its stage; nothing in the product's options can trigger it.

KIND: ``raise`` (unexpected exception → ``internal`` error), ``exit`` (exit code 3), ``segfault``
(a real SIGSEGV), ``hang`` (the whole process freezes: SIGSTOP, so heartbeats stop too),
``hangtree`` (start a child process, then hang: for killing the whole tree), ``garbage`` (write a
malformed and an oversized line on the protocol stream), ``noise`` (print to stdout from Python
and at the file-descriptor level: must not reach the protocol stream).
STAGE: ``start`` (before imports), ``hello`` (right after the hello), ``load``, ``preprocess``,
``inference`` (after the first window), ``postprocess``, ``output``.
"""

import os
import signal
import subprocess
import sys
import time
from typing import Any, Optional

ENV_VAR = "UNETSEG_WORKER_FAULT"
KINDS = ("raise", "exit", "segfault", "hang", "hangtree", "garbage", "noise")
STAGES = ("start", "hello", "load", "preprocess", "inference", "postprocess", "output")


def parse(spec: str):
    kind, _, stage = str(spec).partition("@")
    if kind not in KINDS or stage not in STAGES:
        raise ValueError(f"bad fault {spec!r}: use KIND@STAGE with KIND in {KINDS} and STAGE in {STAGES}")
    return kind, stage


def matches(spec: Optional[str], stage: str) -> bool:
    return bool(spec) and parse(str(spec))[1] == stage


def _hang() -> None:
    if hasattr(signal, "SIGSTOP"):
        os.kill(os.getpid(), signal.SIGSTOP)  # every thread stops, like a deadlock in native code
    while True:  # pragma: no cover - non-POSIX fallback (heartbeats would go on there)
        time.sleep(3600)


def inject(spec: str, server: Any = None) -> None:
    """Carry out the fault now (most kinds never return)."""
    kind, stage = parse(spec)
    sys.stderr.write(f"unetseg worker: injected fault {spec}\n")
    sys.stderr.flush()
    if kind == "raise":
        raise RuntimeError(f"injected fault at stage {stage} (test hook)")
    if kind == "exit":
        os._exit(3)
    if kind == "segfault":
        import faulthandler

        faulthandler._sigsegv()
    if kind == "hangtree":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        sys.stderr.write(f"unetseg worker: started child pid {child.pid}\n")
        sys.stderr.flush()
        if server is not None:
            server.log(f"child pid {child.pid}")
        _hang()
    if kind == "hang":
        _hang()
    if kind == "garbage" and server is not None:
        with server._send_lock:
            server.out.write(b"this is not JSON {\n")
            server.out.write(b"x" * (2 << 20) + b"\n")
            server.out.flush()
    if kind == "noise":
        print("noise from print() in the worker")
        os.write(1, b"noise written to file descriptor 1\n")
        sys.stdout.flush()
