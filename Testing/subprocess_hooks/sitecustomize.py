"""Tests only, for every Python subprocess the tests start (this folder is on their ``PYTHONPATH``; Python imports
this file as its ``sitecustomize`` before anything else). Nothing of this is in the product.

1. With ``UNETSEG_NET_AUDIT=FILE``: every connection or name lookup off this computer is recorded there
   (``netaudit``); the test session fails on any.
2. Worker faults: a worker with ``UNETSEG_WORKER_FAULT=KIND@STAGE`` in its environment carries out
the fault at start-up, right after the hello (wrapping ``Server.serve``) or in every job that reaches the stage (as
the worker ``Server``'s ``on_stage`` hook). Any other process (the CLI that starts the worker, say) is left alone.

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


def install(spec: str) -> None:
    """Arm the fault ``spec`` in this worker process."""
    kind, stage = parse(spec)
    if stage == "start":  # as early as the worker's own start: its fault handler is on by then
        import faulthandler

        faulthandler.enable(file=sys.stderr, all_threads=True)
        inject(spec)
        return
    from UNetSigmoidSegLib.worker import server as worker_server

    serve = worker_server.Server.serve

    def serve_after_hello(self):
        if stage == "hello":
            inject(spec, self)
        return serve(self)

    def on_stage(self, reached: str, job: Optional[str] = None) -> None:
        if reached == stage:
            self.log(f"test hook: injecting fault {spec}", job)
            inject(spec, self)

    worker_server.Server.serve = serve_after_hello
    worker_server.Server.on_stage = on_stage


if os.environ.get("UNETSEG_NET_AUDIT"):
    import netaudit

    netaudit.install(os.environ["UNETSEG_NET_AUDIT"])

if os.environ.get(ENV_VAR) and "UNetSigmoidSegLib.worker" in getattr(sys, "orig_argv", sys.argv):
    install(os.environ[ENV_VAR])
