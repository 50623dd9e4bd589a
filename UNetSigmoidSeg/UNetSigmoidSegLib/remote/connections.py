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

Once a request head has arrived, its body must keep coming: a request whose body brings less than
``BODY_MIN_BYTES`` (or its end) in a ``body_timeout_s`` window — a client that stopped, or trickles a few bytes at a
time — is answered 408 and closed; the request then sees the client gone (its queue place and spooled body are
freed by the server). A window in which the server itself did not read (flow control) does not count.

Requests in progress are bounded by the job queue (``--max-queue``), not by counting sockets.
"""

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any, Dict, Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
BODY_MIN_BYTES = 64 << 10
LOG = logging.getLogger("unetsigmoidseg.server")
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
    body_timeout_s: float = BODY_TIMEOUT_S,
    max_waiting: int = MAX_WAITING,
    max_waiting_per_client: int = MAX_WAITING_PER_CLIENT,
) -> type:
    """uvicorn's h11 protocol with the limits above (pass it as ``uvicorn.Config(http=…)``)."""
    waiting = _Waiting()

    class GuardedH11Protocol(H11Protocol):
        head_timer: Optional[asyncio.TimerHandle] = None
        body_timer: Optional[asyncio.TimerHandle] = None
        body_bytes = 0  # bytes received in the current body window
        client_key = ""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.client_key = str(self.client[0]) if self.client else "?"
            self.start_waiting()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self.stop_waiting()
            self.stop_body()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            self.body_bytes += len(data)
            super().data_received(data)
            if self.cycle is not cycle:  # a whole request head arrived: the request is in progress
                self.request_began()
            elif self.body_timer is not None and self.conn.their_state is not h11.SEND_BODY:
                self.stop_body()  # the whole body arrived

        def on_response_complete(self) -> None:
            cycle = self.cycle
            self.stop_body()  # answered (early, e.g. 401 / 503: the rest of a body is discarded, head timeout)
            super().on_response_complete()  # may start a pipelined request already received
            if self.cycle is not cycle:
                self.request_began()
            elif not self.transport.is_closing():
                self.start_waiting()

        def request_began(self) -> None:
            self.stop_waiting()
            self.stop_body()
            if self.conn.their_state is h11.SEND_BODY:  # its body is on its way: it must keep coming
                self.body_window()

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

        def body_window(self) -> None:
            self.body_bytes = 0
            self.body_timer = self.loop.call_later(body_timeout_s, self.check_body)

        def stop_body(self) -> None:
            if self.body_timer is not None:
                self.body_timer.cancel()
                self.body_timer = None

        def check_body(self) -> None:
            """(a body window ended) Enough of the body came, or the server did not read: another window; else
            the request is answered 408 (unless its answer began) and the connection closed."""
            self.body_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
                return
            if self.body_bytes >= BODY_MIN_BYTES or self.flow.read_paused:
                return self.body_window()
            LOG.warning(
                "closed a connection from %s: its request body stalled (%d bytes in %g s)",
                self.client_key,
                self.body_bytes,
                body_timeout_s,
            )
            cycle = self.cycle
            if cycle is not None and not cycle.response_started and self.conn.our_state is h11.SEND_RESPONSE:
                self.transport.write(timeout_response(self.conn, body_timeout_s))
            if cycle is not None:
                cycle.disconnected = True  # the request's next read is a disconnect: it frees what it holds
                cycle.message_event.set()
            self.transport.close()

    return GuardedH11Protocol


def timeout_response(conn: Any, body_timeout_s: float) -> bytes:
    """A whole 408 answer (the server's JSON error shape) in ``conn``'s framing."""
    body = json.dumps(
        {
            "error": {
                "kind": "remote",
                "message": f"The request body stopped arriving (less than 64 KiB in {body_timeout_s:g} s)",
                "hint": "Check the network and send again; the server gave its place in the queue to others.",
                "reason": "timeout",
            }
        }
    ).encode("utf-8")
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
        ("cache-control", "no-store"),
    ]
    head = h11.Response(status_code=408, headers=headers, reason=b"Request Timeout")
    return b"".join(conn.send(event) for event in (head, h11.Data(data=body), h11.EndOfMessage()))
