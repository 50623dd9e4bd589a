"""The outside attack run's means (``test_attack_run.py`` holds its cases): the ``Target`` — a server with TLS, client
certificates (mutual TLS), named tokens and uploads on — reached the way an attacker on the network would, with raw
TLS connections and hand-made request bodies; each case returns the ``Outcome`` it got (an HTTP status and its
reason, or what happened to the connection). Everything goes to 127.0.0.1; nothing is mocked."""

import http.client
import io
import json
import os
import select
import socket
import ssl
import struct
import sys
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from hostile import REPO, make_bundle, tiny_unet

sys.path.insert(0, str(REPO / "Testing" / "remote"))
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, wire  # noqa: E402

HEAD_S = 1.0  # the server's --head-timeout
BODY_S = 1.0  # its --body-timeout
MARGIN_S = 4.0  # how much later than its timeout a connection may be closed (a loaded test machine)


@dataclass
class Outcome:
    status: Any  # an HTTP status, or "closed" / "refused" / "served" / "client-refused" / "job:error" / …
    reason: str  # the one-line reason the attacker got (or what the test saw)
    raw: str = ""  # everything the server sent, checked for reprs, paths and tracebacks


@dataclass
class Case:
    name: str
    kind: str
    run: Callable[["Target"], Outcome]
    expect: Tuple[Any, ...]
    pattern: str


CASES: List[Case] = []


def case(name: str, kind: str, expect: Any, pattern: str = "", run: Optional[Callable] = None):
    """Register a case (as a decorator, or directly with ``run``)."""

    def register(fn: Callable) -> Callable:
        expected = expect if isinstance(expect, tuple) else (expect,)
        CASES.append(Case(name, kind, fn, expected, pattern))
        return fn

    return register(run) if run is not None else register


class Target:
    """The server under attack and the attacker's means: TLS connections with a certificate of ``pki`` (``alice``
    by default: the server's CA signed it) and the tokens ``owner``, ``alice``, ``bob``, ``carol`` (revoked),
    ``dave`` (expired)."""

    def __init__(self, server: Any, pki: Dict[str, Any], root: Any, tokens: Dict[str, str]) -> None:
        self.server = server
        self.pki = pki
        self.root = root
        self.tokens = tokens
        self.port = server.port
        self.markers = root / "markers"
        self.markers.mkdir(exist_ok=True)
        self._alice_job: Optional[str] = None

    def context(self, who: Optional[str] = "alice", trust: str = "ca") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki[trust][0]))
        if who is not None:
            context.load_cert_chain(*(str(p) for p in self.pki[who]))
        return context

    def tls(self, who: Optional[str] = "alice", timeout: float = 10.0) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return self.context(who).wrap_socket(raw, server_hostname="127.0.0.1")

    def request(self, method: str, path: str, body: Optional[bytes] = None, headers=None, token="owner") -> Outcome:
        """One HTTPS request with alice's certificate; ``token``: a name of ``tokens``, a secret, or None (none)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=self.context())
        sent = {"Content-Type": "application/octet-stream"} if body is not None else {}
        sent.update(headers or {})
        if token is not None:
            sent["Authorization"] = "Bearer " + self.tokens.get(token, token)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return answer(response.status, response.read())
        except OSError:  # answered before the body was read, then closed (a broken pipe, a reset, TLS's EOF)
            try:
                response = conn.getresponse()
                return answer(response.status, response.read())
            except (OSError, http.client.HTTPException):
                return Outcome("closed", "closed while the body was sent, without a readable answer")
        finally:
            conn.close()

    def exchange(self, data: bytes, wait: float = 5.0, who: Optional[str] = "alice", first: bool = True) -> Outcome:
        """``data`` over a fresh TLS connection (sent while the answer is read: the server may answer and close
        before all of it is sent); the server's first answer — or all it sent, with ``first=False`` — until it
        closes, or ``wait`` s."""
        sock = self.tls(who)
        try:
            received, _seconds, closed = pump(sock, [(0.0, data)], wait)
        finally:
            sock.close()
        if received.startswith(b"HTTP/1.1 ") and first:
            return first_answer(received)
        return Outcome("closed" if closed else "open", "no HTTP answer", received.decode("latin-1"))

    def alice_job(self) -> str:
        """A finished job of alice's, its result kept (for bob, carol and the owner to try to reach)."""
        alive = self._alice_job and self.request("GET", f"/v1/jobs/{self._alice_job}/result", token="alice").status
        if alive != 200:
            got = self.request("POST", "/v1/jobs", frame(), token="alice")
            assert got.status == 202, got
            self._alice_job = json.loads(got.raw)["job"]
            follow(self, self._alice_job, "alice")
        return self._alice_job


def answer(status: int, data: bytes) -> Outcome:
    """The reason in an answer: an error's ``message`` (and ``hint``), FastAPI's ``detail``, or the text."""
    text = data.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return Outcome(status, text.strip(), text)
    error = body.get("error", body.get("detail")) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return Outcome(status, f"{error.get('message', '')} — {error.get('hint', '')}", text)
    return Outcome(status, error if isinstance(error, str) else json.dumps(error), text)


def first_answer(received: bytes) -> Outcome:
    """The first HTTP answer in ``received`` (its body cut at its Content-Length: pipelined answers follow)."""
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            body = body[: int(value)]
    return answer(int(head[9:12]), body)


def until_closed(sock: socket.socket, within: float) -> Tuple[bytes, float, bool]:
    """(what the server sent, seconds, whether it closed the connection) within ``within`` seconds."""
    t0 = time.perf_counter()
    data = b""
    try:
        while time.perf_counter() - t0 < within:
            sock.settimeout(max(0.01, within - (time.perf_counter() - t0)))
            chunk = sock.recv(65536)
            if not chunk:
                return data, time.perf_counter() - t0, True
            data += chunk
    except (socket.timeout, ssl.SSLWantReadError):
        return data, time.perf_counter() - t0, False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return data, time.perf_counter() - t0, True
    return data, time.perf_counter() - t0, False


def follow(target: Target, job: str, token: str = "owner") -> Outcome:
    """A job's events until its end: ``job:error`` / ``job:cancelled`` with the message, or ``job:result``."""
    after = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = target.request("GET", f"/v1/jobs/{job}/events?after={after}&wait=5", token=token)
        if got.status != 200:
            return got
        for message in json.loads(got.raw)["messages"]:
            after = max(after, message["seq"])
            if message["type"] in ("error", "cancelled", "result"):
                return Outcome("job:" + message["type"], message.get("message", "result"), json.dumps(message))
    return Outcome("job:running", "still running after 120 s")


# ----------------------------------------------------------------------------------------------- request bodies
VOLUME = np.random.default_rng(0).normal(100, 20, (1, 16, 16, 16)).astype(np.int16)
FIELDS = {
    "model": ModelSpec(name="tiny").to_dict(),
    "options": SegmentOptions(device="cpu", roi_size=[16, 16, 16]).to_dict(),
    "affine": np.eye(4).tolist(),
}


def frame(fields=None, arrays=None, edit=None, raw=None, tail: bytes = b"") -> bytes:
    """A run request's frame; ``edit(header)`` changes its decoded header, ``raw(header)`` replaces it by bytes."""
    data = b"".join(wire.encode(FIELDS if fields is None else fields, {"volume": VOLUME} if arrays is None else arrays))
    (length,) = struct.unpack(">I", data[8:12])
    header = json.loads(data[12 : 12 + length])
    if edit is not None:
        edit(header)
    head = raw(header) if raw is not None else json.dumps(header).encode()
    return data[:8] + struct.pack(">I", len(head)) + head + data[12 + length :] + tail


def with_fields(**change: Any) -> bytes:
    return frame(dict(FIELDS, **change))


def with_options(**change: Any) -> bytes:
    return frame(dict(FIELDS, options=dict(FIELDS["options"], **change)))


def array_edit(**change: Any) -> Callable:
    def edit(header: Dict[str, Any]) -> None:
        header["arrays"][0].update(change)

    return edit


def submit(target: Target, body: bytes, token: str = "owner", headers=None) -> Outcome:
    """POST a run; an accepted one is followed to its end (its refusal is then the job's error)."""
    got = target.request("POST", "/v1/jobs", body, headers=headers, token=token)
    if got.status == 202:
        return follow(target, json.loads(got.raw)["job"], token)
    return got


def upload(suffix: str, model: bytes, sidecar: Optional[bytes] = None, extra=None, dtype=np.uint8) -> bytes:
    arrays = {"model": np.frombuffer(model, dtype=np.uint8).astype(dtype)}
    if sidecar is not None:
        arrays["sidecar"] = np.frombuffer(sidecar, dtype=np.uint8)
    arrays.update(extra or {})
    return b"".join(wire.encode({"upload": {"suffix": suffix, "strides": None}}, arrays))


def checkpoint_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def torchscript_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(tiny_unet()), buffer)
    return buffer.getvalue()


def zip_bytes(entries: List[Tuple[Any, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buffer.getvalue()


def bundle_zip(root: Any, extra: List[Tuple[Any, bytes]] = (), drop: Tuple[str, ...] = (), **bundle: Any) -> bytes:
    """A bundle (``hostile.make_bundle``) as a zip (``b/…``), with ``extra`` entries and without ``drop``."""
    folder = make_bundle(root, **bundle)
    entries = []
    for here, _dirs, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(here, name), folder).replace(os.sep, "/")
            if rel not in drop:
                with open(os.path.join(here, name), "rb") as f:
                    entries.append(("b/" + rel, f.read()))
    return zip_bytes(entries + list(extra))


def symlink_entry(name: str, target: str) -> Tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16
    return info, target.encode()


class Evil:
    """A pickle whose loading would run a shell command creating ``marker`` (``weights_only`` refuses it)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def pump(sock: ssl.SSLSocket, schedule: List[Tuple[float, bytes]], wait: float) -> Tuple[bytes, float, bool]:
    """Send each ``(at seconds, bytes)`` of ``schedule`` at its time while reading what the server sends, in this
    one thread (an SSL socket is not for two); (what it sent, seconds, whether it closed) within ``wait`` s. A
    send the server refuses (it answered and closed) ends the sending, not the reading."""
    sock.setblocking(False)
    pending = [(at, memoryview(piece)) for at, piece in schedule]
    received = b""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < wait:
        now = time.perf_counter() - t0
        sending = bool(pending) and pending[0][0] <= now
        readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.02)
        if readable or sock.pending():
            try:
                chunk = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                chunk = None
            except OSError:
                return received, time.perf_counter() - t0, True
            if chunk == b"":
                return received, time.perf_counter() - t0, True
            received += chunk or b""
        if writable and pending:
            at, view = pending[0]
            try:
                done = sock.send(view[: 1 << 16])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                done = 0
            except OSError:
                pending, done = [], 0
            if pending:
                pending[0] = (at, view[done:])
                if not len(pending[0][1]):
                    pending.pop(0)
    return received, time.perf_counter() - t0, False


def send_slowly(target: Target, head: bytes, pieces: List[bytes], every: float, who="alice") -> Tuple[bytes, float]:
    """``head``, then ``pieces`` one every ``every`` s until the server closes; (its answer, seconds after head)."""
    sock = target.tls(who)
    schedule = [(0.0, head)] + [(every * (i + 1), piece) for i, piece in enumerate(pieces)]
    try:
        data, seconds, closed = pump(sock, schedule, 3 * MARGIN_S)
    finally:
        sock.close()
    return (data if closed else b"(still open) " + data), seconds


def get_head(target: "Target", path: str, token: str = "owner", extra: str = "") -> bytes:
    """A whole GET request head with ``token``'s secret (``extra``: raw text after the secret, e.g. a NUL)."""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {target.tokens[token]}{extra}\r\n\r\n".encode()


def post_head(target: Target, path: str, length: Any, extra: str = "", token: str = "owner") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {target.tokens[token]}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def timed_answer(data: bytes, seconds: float, limit: float) -> Outcome:
    """The answer of a connection the server had to cut off within ``limit`` (+ margin) seconds."""
    while data.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue) before the real one
        data = data.partition(b"\r\n\r\n")[2]
    if data.startswith(b"(still open)") or seconds > limit + MARGIN_S:
        return Outcome("open", f"not closed within {limit + MARGIN_S:.0f} s", data.decode("latin-1"))
    if data.startswith(b"HTTP/1.1 "):
        got = first_answer(data)
        return Outcome(got.status, f"{got.reason} (after {seconds:.1f} s)", got.raw)
    return Outcome("closed", f"closed after {seconds:.1f} s", data.decode("latin-1"))
