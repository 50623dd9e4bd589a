"""Connection hygiene on a real server (issue #20): sockets that send nothing, request heads that never end and a
flood of idle connections never keep an authenticated client from its run, and each is closed by the server
(``remote/connections.py``). The attacker here needs no token; everything runs on 127.0.0.1. A client with the
token whose request body stops or trickles once its head arrived is cut off after ``--body-timeout`` (408), and its
queue place and spooled body are freed."""

import socket
import threading
import time

import numpy as np
import pytest

from remote_fixtures import Server, ct_volume, make_models
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, wire

HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = make_models(tmp_path_factory.mktemp("models"))
    timeouts = ("--head-timeout", str(HEAD_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT))
    srv = Server(models, tmp_path_factory.mktemp("server"), *timeouts)
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


def _post_head(server, length, first=b""):
    """A socket that sent a whole ``POST /v1/jobs`` head with the token announcing ``length`` body bytes, and
    ``first`` of them."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n".encode()
        + first
    )
    return sock


def _answer_and_close(sock, within):
    """(everything the server sent until it closed ``sock``, seconds until then) — or what came in ``within`` s."""
    t0 = time.perf_counter()
    data = b""
    sock.settimeout(within)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data, time.perf_counter() - t0


def _trickle(sock, stop):
    """Ten bytes every 0.2 s (50 B/s: far below 64 KiB per --body-timeout) until ``stop`` or the server closes."""
    while not stop.is_set():
        try:
            sock.sendall(b"\0" * 10)
        except OSError:
            return
        stop.wait(0.2)


def test_a_stalled_or_trickling_body_is_cut_off_and_frees_its_queue_place_and_spool(server):
    stalled = _post_head(server, 4_000_000, b"\0" * 1000)  # a body begun, then nothing
    trickling = _post_head(server, 4_000_000)
    stop = threading.Event()
    threading.Thread(target=_trickle, args=(trickling, stop), daemon=True).start()
    outcome = {}

    def normal_client():  # runs while the two hold their queue places
        runner = server.runner()
        try:
            options = SegmentOptions(device="cpu", roi_size=[32, 32, 16])
            outcome["result"] = runner.submit(ct_volume(), ModelSpec(name="tiny"), options).wait(timeout=300)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc
        finally:
            runner.close()

    client = threading.Thread(target=normal_client)
    client.start()
    try:
        for sock in (stalled, trickling):
            answer, seconds = _answer_and_close(sock, BODY_TIMEOUT + 8)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
            assert b'"reason": "timeout"' in answer and b"stopped arriving" in answer
            assert seconds < BODY_TIMEOUT + 5, f"cut off after {seconds:.1f} s"
    finally:
        stop.set()
        stalled.close()
        trickling.close()
    client.join(300)
    assert "error" not in outcome and outcome["result"].masks.any(), outcome
    deadline = time.time() + 10
    while server.temp_entries() and time.time() < deadline:
        time.sleep(0.1)
    assert server.temp_entries() == []  # both spooled bodies removed
    server.wait_idle()
    fresh = [_post_head(server, 4_000_000, b"\0" * 1000) for _ in range(4)]  # --max-queue 4: every place is free
    try:
        answers = [_answer_and_close(s, 0.3)[0] for s in fresh]  # 'busy' would be answered at once
        assert not any(b" 503 " in a.split(b"\r\n")[0] for a in answers), answers  # no place leaked
    finally:
        for s in fresh:
            s.close()
    assert server.log().count("its request body stalled") >= 2


def test_a_slow_but_steady_body_is_not_cut_off(server):
    """64 KiB a second for about 5 s (over two --body-timeout windows): the timeout is about a body that stops, not
    a deadline for the whole body."""
    volume = np.random.default_rng(0).normal(size=(1, 48, 48, 40)).astype(np.float32)  # incompressible
    fields = {"model": ModelSpec(name="tiny").to_dict(), "options": SegmentOptions(device="cpu").to_dict()}
    body = b"".join(wire.encode(dict(fields, affine=np.eye(4).tolist()), {"volume": volume}))
    assert len(body) > 2.2 * BODY_TIMEOUT * (64 << 10)
    sock = _post_head(server, len(body))
    t0 = time.perf_counter()
    try:
        for start in range(0, len(body), 64 << 10):
            sock.sendall(body[start : start + (64 << 10)])
            time.sleep(1.0)  # pacing the sender (not an assertion)
        sent_for = time.perf_counter() - t0
        answer, _ = _answer_and_close(sock, 30)
    finally:
        sock.close()
    assert sent_for > 2 * BODY_TIMEOUT
    assert answer.startswith(b"HTTP/1.1 202"), answer
    server.wait_idle(120)
