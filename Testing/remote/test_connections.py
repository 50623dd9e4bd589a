"""Connection hygiene on a real server (issue #20): sockets that send nothing, request heads that never end and a
flood of idle connections never keep an authenticated client from its run, and each is closed by the server
(``remote/connections.py``). The attacker here needs no token; everything runs on 127.0.0.1."""

import socket
import time

import pytest

from remote_fixtures import Server, ct_volume, make_models
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions

HEAD_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = make_models(tmp_path_factory.mktemp("models"))
    srv = Server(models, tmp_path_factory.mktemp("server"), "--head-timeout", str(HEAD_TIMEOUT))
    srv.wait_ready()
    yield srv
    srv.stop()


def _open(server, count, first_bytes=b""):
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if first_bytes:
            s.sendall(first_bytes)
        socks.append(s)
    return socks


def _closed_by_server(sock, within):
    """The server closed ``sock`` (recv gives end of stream or a reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _health_s(server):
    t0 = time.perf_counter()
    health = server.runner().health()
    assert health["ready"]
    return time.perf_counter() - t0


def test_silent_and_slow_header_connections_are_closed_after_the_head_timeout(server):
    silent = _open(server, 3)
    slow = _open(server, 3, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    t0 = time.perf_counter()
    assert all(_closed_by_server(s, HEAD_TIMEOUT + 5) for s in silent + slow)
    assert time.perf_counter() - t0 < HEAD_TIMEOUT + 5
    for s in silent + slow:
        s.close()


def test_a_flood_of_idle_connections_does_not_lock_out_a_client_with_the_token(server):
    before = _health_s(server)
    flood = _open(server, 300) + _open(server, 40, b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Le")
    try:
        during = _health_s(server)  # a fresh connection: the oldest idle ones make room for it
        volume = ct_volume()
        options = SegmentOptions(device="cpu", roi_size=[32, 32, 16])
        runner = server.runner()
        try:
            result = runner.submit(volume, ModelSpec(name="tiny"), options).wait(timeout=300)
        finally:
            runner.close()
        assert result.masks.shape[1:] == volume.spatial_shape and result.masks.any()
        assert during < 5.0, f"health took {during:.2f} s under the flood ({before:.2f} s without)"
        open_now = sum(not _closed_by_server(s, 0.01) for s in flood)
        assert open_now <= 256, f"{open_now} idle connections are still held"  # the evicted ones are closed
    finally:
        for s in flood:
            s.close()


def test_a_request_in_progress_is_never_evicted_by_newer_idle_connections(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = f"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n\r\n".encode()
    sock.sendall(head)
    assert b"200" in sock.recv(4096).split(b"\r\n", 1)[0]
    flood = _open(server, 300)  # the keep-alive connection above is waiting again: it may go, a request may not
    try:
        fresh = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        fresh.sendall(head)
        assert b"200" in fresh.recv(4096).split(b"\r\n", 1)[0]
        fresh.close()
    finally:
        for s in flood:
            s.close()
        sock.close()
