"""Entry point: ``python -m UNetSigmoidSegLib.worker [--idle-timeout S] [--heartbeat S]``.

Run by any interpreter that has torch + MONAI (in 3D Slicer: PythonSlicer). Commands arrive on
stdin, messages leave on stdout — and nothing else may reach that stream: the original stdout is
kept for the protocol and file descriptor 1 (and ``sys.stdout``) is pointed at stderr before
anything is imported, so prints from torch, MONAI or user code land in the log. stdin likewise is
replaced by ``/dev/null`` for everyone else.
"""

import argparse
import faulthandler
import importlib.util
import os
import platform
import sys
from typing import BinaryIO, List, Optional, Tuple

REQUIRED = (("numpy", "numpy"), ("torch", "torch"), ("monai", "monai"), ("SimpleITK", "SimpleITK"))


def protect_streams() -> Tuple[BinaryIO, BinaryIO]:
    """Private copies of stdin/stdout for the protocol; fd 0 ← devnull, fd 1 → stderr. Returns (input, output)."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, encoding="utf-8")
    sys.stdout = sys.stderr
    return proto_in, proto_out


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the worker through ``SystemExit`` in its main thread, so a running job's clean-up runs."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def missing_modules() -> List[Tuple[str, str]]:
    """(import name, pip name) of required modules this interpreter lacks."""
    return [(mod, pip) for mod, pip in REQUIRED if importlib.util.find_spec(mod) is None]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m UNetSigmoidSegLib.worker")
    parser.add_argument("--idle-timeout", type=float, default=600.0, help="exit after this many seconds without a job")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeat messages")
    args = parser.parse_args(argv)
    proto_in, proto_out = protect_streams()
    faulthandler.enable(file=sys.stderr, all_threads=True)

    from ..sysinfo import package_version
    from .protocol import PROTOCOL_VERSION, encode, error_message, make

    def send(message: dict) -> None:
        proto_out.write(encode(message))
        proto_out.flush()

    missing = missing_modules()
    if not missing:
        try:
            import torch
        except Exception as exc:  # noqa: BLE001 - a broken install (missing DLL, ABI mismatch)
            missing = [("torch", f"torch (import failed: {type(exc).__name__}: {exc})")]
    if missing:
        names = ", ".join(m for m, _ in missing)
        packages = " ".join(p.split(" ")[0] for _, p in missing)
        send(
            error_message(
                "worker",
                f"The Python at {sys.executable} cannot run the worker: {names} missing",
                f'Install into that Python: "{sys.executable}" -m pip install {packages} '
                "— in 3D Slicer: install the PyTorch extension (PyTorch Utils), restart, then run "
                "pip_install('monai') in the Python console.",
                reason="missing_dependency",
                missing=[p for _, p in missing],
                python=sys.executable,
            )
        )
        return 3
    cuda = bool(torch.cuda.is_available())
    send(
        make(
            "hello",
            protocol=PROTOCOL_VERSION,
            pid=os.getpid(),
            python=platform.python_version(),
            executable=sys.executable,
            torch=torch.__version__,
            monai=package_version("monai"),
            cuda=cuda,
            cuda_devices=int(torch.cuda.device_count()) if cuda else 0,
            torch_threads=int(torch.get_num_threads()),
        )
    )
    from .server import Server

    server = Server(proto_in, proto_out, idle_timeout_s=args.idle_timeout, heartbeat_s=args.heartbeat)
    stop_on_signals()
    try:
        code = server.serve()
    except SystemExit as exc:  # SIGTERM / SIGHUP: the job's finally blocks ran (temp folders removed)
        code = exc.code if isinstance(exc.code, int) else 1
    try:
        proto_out.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)  # daemon threads may be blocked reading stdin: skip interpreter teardown
    return code


if __name__ == "__main__":
    sys.exit(main())
