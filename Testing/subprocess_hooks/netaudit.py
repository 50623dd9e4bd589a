"""Tests only: record every network connection and name lookup a Python process attempts that does not stay on this
computer. ``install(path)`` adds an audit hook (PEP 578) that appends one JSON line per such attempt to ``path``;
``read(path)`` returns them. ``Testing/conftest.py`` installs it in the test process and, through this folder's
``sitecustomize``, in every Python subprocess the tests start (CLI, worker, server), then fails the session on any."""

import json
import os
import socket
import sys
from typing import Any, List

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def _own_addresses() -> frozenset:
    """The addresses of this computer's own network interfaces (a Ray node names itself by one): a packet to them
    is routed back inside this computer, never onto a network."""
    try:
        import psutil

        families = (socket.AF_INET, socket.AF_INET6)
        return frozenset(
            a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs if a.family in families
        )
    except Exception:  # noqa: BLE001 - without psutil only loopback counts
        return frozenset()


OWN = _own_addresses()


def loopback(host: Any) -> bool:
    """Whether ``host`` (a name, an address, a Unix socket path or None) stays on this computer."""
    if host is None or host == "" or isinstance(host, bytes):
        return True
    text = str(host)
    if text.startswith("/") or text.startswith("\0"):  # a Unix socket
        return True
    if text.lower() in LOOPBACK_NAMES or text.startswith("127.") or text in ("::1", "0.0.0.0", "::") or text in OWN:
        return True
    return text.startswith("::ffff:127.")


def install(path: str) -> None:
    """Append each non-loopback ``socket.connect`` / ``sendto`` / ``getaddrinfo`` / ``gethostbyname`` of this process
    to ``path`` (one JSON line: event, host, process id, command line)."""

    def hook(event: str, args: Any) -> None:
        host = None
        if event in ("socket.connect", "socket.sendto"):
            address = args[1] if event == "socket.connect" else args[-1]
            host = address[0] if isinstance(address, tuple) and address else address
        elif event in ("socket.getaddrinfo", "socket.gethostbyname"):
            host = args[0]
        else:
            return
        if loopback(host):
            return
        line = json.dumps({"event": event, "host": str(host), "pid": os.getpid(), "argv": sys.argv[:3]})
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            pass

    sys.addaudithook(hook)


def read(path: str) -> List[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []
