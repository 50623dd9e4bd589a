"""HTTP(S) for the remote client with the standard library only (``http.client``): Slicer needs nothing installed.

``Endpoint`` checks the URL (http / https; plain http only to this computer unless ``allow_http``) and makes
connections; ``Http`` sends one thread's requests over a kept-alive connection, streams request bodies in chunks
(progress, cancel between chunks) and turns every network failure into a ``RemoteError`` that says what happened
and what to do.
"""

import http.client
import json
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit

from ..errors import RemoteError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CHUNK = 1 << 20
USER_AGENT = "unetsigmoidseg-client/1"


class Endpoint:
    """The server's base URL, the token and TLS settings. ``cafile``: a CA bundle or the server's self-signed
    certificate (default: the system's trusted CAs); ``client_cert`` (PEM, with ``client_key`` unless the key is in
    it): this client's certificate for a server that requires one (mutual TLS, ``serve --client-ca``)."""

    def __init__(
        self,
        url: str,
        token: str,
        cafile: Optional[str] = None,
        allow_http: bool = False,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
    ) -> None:
        text = str(url or "").strip()
        parts = urlsplit(text if "://" in text else "http://" + text)
        hint = "Give the server's URL, e.g. https://gpu-server:8765 or http://127.0.0.1:8765 (an SSH tunnel)."
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"Not a server URL: {url!r}", hint, reason="url")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise RemoteError(f"The server URL {url!r} may not hold a user, password, query or fragment", hint, "url")
        try:
            port = parts.port
        except ValueError:
            raise RemoteError(f"The server URL {url!r} has a bad port", hint, reason="url") from None
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS and not allow_http:
            raise RemoteError(
                f"Plain http to {parts.hostname} would send the token and the images unencrypted",
                "Use https (the server started with --certfile/--keyfile), or an SSH tunnel to http://127.0.0.1:PORT; "
                "on a network you trust, allow it explicitly (--allow-http / allow_http=True).",
                reason="url",
            )
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.url = f"{self.scheme}://{parts.netloc}{self.prefix}"
        self.token = token
        self.context: Optional[ssl.SSLContext] = None
        self.client_cert = client_cert
        if (client_cert or client_key) and self.scheme != "https":
            raise RemoteError(
                "A client certificate is presented over https only",
                "Use the server's https:// URL (a server with --client-ca serves TLS), or leave out --client-cert.",
                reason="url",
            )
        if client_key and not client_cert:
            raise RemoteError("--client-key needs --client-cert", "Give the certificate of that key too.", "url")
        if self.scheme == "https":
            self.context = ssl.create_default_context(cafile=cafile)
            if client_cert:
                load_client_certificate(self.context, client_cert, client_key)

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def load_client_certificate(context: ssl.SSLContext, cert: str, key: Optional[str]) -> None:
    """This client's certificate and key into ``context``; a clear ``RemoteError`` when they cannot be used (an
    encrypted key is refused rather than prompting for its password)."""
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:  # before OSError: an SSLError is one
        mismatch = exc.reason == "KEY_VALUES_MISMATCH"
        what = "the key is not this certificate's" if mismatch else "not a PEM certificate with its unencrypted key"
        raise RemoteError(
            f"Cannot use the client certificate {cert}{f' with the key {key}' if key else ''}: {what} "
            f"(OpenSSL: {exc.reason or exc.library or 'error'})",
            "Give the PEM certificate your server's administrator issued (--client-cert) and its unencrypted private "
            "key (--client-key, chmod 600).",
            reason="tls",
        ) from None
    except (OSError, ValueError) as exc:
        raise RemoteError(
            f"Cannot read the client certificate {cert}{f' or the key {key}' if key else ''}: "
            f"{getattr(exc, 'strerror', None) or exc}",
            "Check the --client-cert / --client-key paths.",
            reason="tls",
        ) from None


def handshake_refused(endpoint: "Endpoint", wait_s: float = 0.5) -> bool:
    """Whether the server ends a fresh TLS connection at once, before a request is sent: a server that requires
    a client certificate (mutual TLS) does so when it refuses this client's (or its absence); one that accepted
    the handshake waits for the request head."""
    conn = endpoint.connect(wait_s + 5.0)
    try:
        conn.connect()
    except ssl.SSLCertVerificationError:
        return False
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):  # TLS 1.2 refuses during the handshake itself
        return True
    except OSError:
        return False
    try:
        conn.sock.settimeout(wait_s)
        return conn.sock.recv(1) == b""
    except (socket.timeout, TimeoutError):
        return False
    except OSError:  # reset, or the server's alert
        return True
    finally:
        conn.close()


def tls_refused(endpoint: "Endpoint") -> RemoteError:
    if endpoint.client_cert:
        return RemoteError(
            f"The server at {endpoint.url} refused this client's certificate at the TLS handshake (mutual TLS)",
            "Its CA (serve --client-ca) did not sign it, or it expired: ask the server's administrator for a "
            "client certificate, and give it with --client-cert / --client-key.",
            reason="tls",
        )
    return RemoteError(
        f"The server at {endpoint.url} requires a client certificate (mutual TLS) and ended the TLS handshake",
        "Give the certificate and key its administrator issued you: --client-cert CERT.pem --client-key KEY.pem "
        "(client_cert= / client_key=).",
        reason="tls",
    )


class Response:
    def __init__(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise RemoteError(
                f"The server answered {self.status} with something that is not JSON",
                "Is that URL a UNetSigmoidSeg server (unetsigmoidseg serve)?",
                reason="protocol",
            ) from None


class Counters:
    """Requests made and body bytes sent / received (shared by a runner's threads)."""

    def __init__(self, parent: Optional["Counters"] = None) -> None:
        self.lock = threading.Lock()
        self.parent = parent  # also counted there (a job's counters roll up into its runner's)
        self.requests = 0
        self.sent = 0
        self.received = 0

    def add(self, sent: int, received: int) -> None:
        with self.lock:
            self.requests += 1
            self.sent += sent
            self.received += received
        if self.parent is not None:
            self.parent.add(sent, received)


def network_error(endpoint: Endpoint, exc: BaseException, doing: str) -> RemoteError:
    """A clear ``RemoteError`` for a failure of the network or the server while ``doing`` something."""
    where = endpoint.url
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        return RemoteError(
            f"Cannot reach the server at {where}: connection refused (no server listens there)",
            "Start it (unetsigmoidseg serve --models DIR), check the URL and port, or open the SSH tunnel.",
            reason="down",
        )
    if isinstance(exc, socket.gaierror):
        return RemoteError(f"Cannot find the server {endpoint.host}: {exc}", "Check the host name.", reason="down")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RemoteError(
            f"The server's TLS certificate is not trusted ({exc.verify_message})",
            "Give its certificate or CA (cafile= / --server-ca FILE), or use an SSH tunnel.",
            reason="tls",
        )
    if isinstance(exc, ssl.SSLError):
        return RemoteError(
            f"TLS failed with {where}: {exc}", "Is the server started with TLS? Check the URL's scheme.", reason="tls"
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return RemoteError(
            f"The server at {where} did not answer in time while {doing}",
            "Check the network; a busy server still answers within seconds.",
            reason="timeout",
        )
    if isinstance(exc, (ConnectionError, http.client.HTTPException, OSError)):
        return RemoteError(
            f"The connection to the server at {where} broke while {doing} ({type(exc).__name__}: {exc})",
            "Nothing partial was kept. Check the network and that the server still runs, then run again.",
            reason="connection",
        )
    return RemoteError(f"Unexpected failure talking to {where}: {type(exc).__name__}: {exc}", "", reason="connection")


class Http:
    """One thread's requests to ``endpoint`` over a kept-alive connection (re-opened when the server closed it)."""

    def __init__(self, endpoint: Endpoint, counters: Counters, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.counters = counters
        self.timeout = timeout
        self._conn: Optional[http.client.HTTPConnection] = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: Optional[List[bytes]] = None,
        timeout: Optional[float] = None,
        doing: str = "talking to it",
        on_sent: Optional[Callable[[int, int], None]] = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> Response:
        """Send one request; ``body`` (byte chunks) is streamed with ``on_sent(sent, total)``, and ``should_stop``
        is asked between chunks (True: the connection is dropped and ``None`` … raised as ``InterruptedError``).
        A request on a reused connection that the server had closed is retried once on a new one (GET only)."""
        reused = self._conn is not None and method == "GET"
        try:
            return self._request(method, path, body, timeout, on_sent, should_stop)
        except InterruptedError:
            self.close()
            raise
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            if reused:
                try:
                    return self._request(method, path, body, timeout, on_sent, should_stop)
                except Exception as again:  # noqa: BLE001
                    self.close()
                    raise self._error(again, doing) from None
            raise self._error(exc, doing) from None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a RemoteError
            self.close()
            raise self._error(exc, doing, reused) from None

    def _error(self, exc: BaseException, doing: str, reused: bool = False) -> RemoteError:
        """``network_error``; a fresh TLS connection the server ended without an answer is checked for a refused
        client certificate (mutual TLS), which would otherwise read as a broken connection."""
        dropped = isinstance(exc, (ConnectionError, ssl.SSLError)) and not isinstance(exc, ConnectionRefusedError)
        if self.endpoint.context is not None and dropped and not reused:
            if not isinstance(exc, ssl.SSLCertVerificationError) and handshake_refused(self.endpoint):
                return tls_refused(self.endpoint)
        return network_error(self.endpoint, exc, doing)

    def _request(self, method, path, body, timeout, on_sent, should_stop) -> Response:
        if method != "GET":
            self.close()  # a fresh connection: a request that changes state is never sent twice
        if self._conn is None:
            self._conn = self.endpoint.connect(self.timeout)
        conn = self._conn
        conn.timeout = timeout or self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        total = sum(len(c) for c in body) if body else 0
        conn.putrequest(method, self.endpoint.prefix + path, skip_accept_encoding=True)
        conn.putheader("Authorization", "Bearer " + self.endpoint.token)
        conn.putheader("User-Agent", USER_AGENT)
        if body is not None:
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(total))
        conn.endheaders()
        sent = 0
        for chunk in body or []:
            view = memoryview(chunk)
            for start in range(0, len(view), CHUNK):
                if should_stop is not None and should_stop():
                    raise InterruptedError("stopped while sending")
                try:
                    conn.send(view[start : start + CHUNK])
                except (BrokenPipeError, ConnectionResetError):
                    early = self._early_response(conn)  # e.g. 401 / 413 sent before the body was read
                    if early is not None:
                        self.counters.add(sent, len(early.body))
                        return early
                    raise
                sent += min(CHUNK, len(view) - start)
                if on_sent is not None:
                    on_sent(sent, total)
        raw = conn.getresponse()
        data = raw.read()
        self.counters.add(total, len(data))
        if raw.will_close:
            self.close()
        return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, data)

    def _early_response(self, conn: http.client.HTTPConnection) -> Optional[Response]:
        try:
            conn.sock.settimeout(2.0)
            raw = conn.getresponse()
            return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
        except Exception:  # noqa: BLE001 - nothing readable: the caller reports the broken connection
            return None


def wait_until(deadline: float, step: float = 0.5) -> bool:
    """Sleep one ``step`` (never past ``deadline``); False once the deadline has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    time.sleep(min(step, remaining))
    return True
