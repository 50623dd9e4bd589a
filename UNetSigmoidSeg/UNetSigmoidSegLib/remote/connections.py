"""Connection hygiene for the server: no client that never authenticates can take capacity from one that does.

uvicorn closes a keep-alive connection only after a first response, and its ``limit_concurrency`` counts every open
connection: a few hundred sockets that send nothing (or a request head that never ends) made every valid client get
503, and a connection that never sent a byte stayed open for good. ``guarded_protocol`` gives uvicorn an HTTP
protocol (its own h11 one, subclassed) where a connection that is *waiting* — for its first request head, or for
the next one after a response — is closed

- when its head has not arrived ``head_timeout_s`` after it began waiting (slow or silent clients), and
- when it is the oldest waiting one and a new connection would make more than ``max_waiting`` wait (or more than
  ``max_waiting_per_client`` from the same address): a flood evicts its own idle sockets first, never a request in
  progress.

Requests in progress are bounded by the job queue (``--max-queue``), not by counting sockets.
"""

import asyncio
from collections import OrderedDict
from typing import Any, Dict, Optional

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
MAX_WAITING = 256
MAX_WAITING_PER_CLIENT = 128


class _Waiting:
    """The server's waiting connections, oldest first, overall and per client address."""

    def __init__(self) -> None:
        self.all: OrderedDict[Any, None] = OrderedDict()
        self.by_client: Dict[str, OrderedDict[Any, None]] = {}

    def add(self, conn: Any) -> None:
        self.all[conn] = None
        self.by_client.setdefault(conn.client_key, OrderedDict())[conn] = None

    def discard(self, conn: Any) -> None:
        self.all.pop(conn, None)
        mine = self.by_client.get(conn.client_key)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_client[conn.client_key]


def guarded_protocol(
    head_timeout_s: float = HEAD_TIMEOUT_S,
    max_waiting: int = MAX_WAITING,
    max_waiting_per_client: int = MAX_WAITING_PER_CLIENT,
) -> type:
    """uvicorn's h11 protocol with the limits above (pass it as ``uvicorn.Config(http=…)``)."""
    waiting = _Waiting()

    class GuardedH11Protocol(H11Protocol):
        head_timer: Optional[asyncio.TimerHandle] = None
        client_key = ""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.client_key = str(self.client[0]) if self.client else "?"
            self.start_waiting()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self.stop_waiting()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a whole request head arrived: the request is in progress
                self.stop_waiting()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()  # may start a pipelined request already received: then not waiting
            if self.cycle is cycle and not self.transport.is_closing():
                self.start_waiting()

        def start_waiting(self) -> None:
            self.stop_waiting()
            mine = waiting.by_client.get(self.client_key, {})
            for group, limit in ((mine, max_waiting_per_client), (waiting.all, max_waiting)):
                while len(group) >= limit:  # too many idle: the oldest goes (closing it leaves the group)
                    next(iter(group)).close_waiting()
            waiting.add(self)
            self.head_timer = self.loop.call_later(head_timeout_s, self.close_waiting)  # no request head in time

        def stop_waiting(self) -> None:
            waiting.discard(self)
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def close_waiting(self) -> None:
            self.stop_waiting()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
