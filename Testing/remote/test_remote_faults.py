"""Faults that take a server down, each with its own real server process: none listening, killed mid-job, restarted
mid-job. The client always ends in a clear error, ``poll()`` never blocks meanwhile (the panel's timer stays
responsive: it never waits on the network), and a restarted server sweeps the dead one's temp folder."""

import os
import socket
import time

import pytest

from remote_fixtures import Server, long_volume, make_models, wait_for_stage
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions
from UNetSigmoidSegLib.errors import RemoteError
from UNetSigmoidSegLib.runners.remote import RemoteRunner

pytestmark = pytest.mark.skipif(os.name != "posix", reason="servers are killed with POSIX signals")

LONG = SegmentOptions(device="cpu", roi_size=[16, 16, 16], overlap=0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_to_the_end(job, timeout=180.0):
    """Poll like the panel's timer; returns the longest single ``poll()`` in seconds."""
    longest = 0.0
    deadline = time.time() + timeout
    while not job.done:
        t0 = time.perf_counter()
        job.poll()
        longest = max(longest, time.perf_counter() - t0)
        assert time.time() < deadline, "the job did not end"
        time.sleep(0.02)
    job.poll()
    return longest


def test_no_server_listening_is_a_clear_error_at_once():
    runner = RemoteRunner(f"http://127.0.0.1:{free_port()}", token="t")
    with pytest.raises(
        RemoteError, match="Cannot reach the server at http://127.0.0.1:\\d+: connection refused"
    ) as err:
        runner.submit(long_volume(), ModelSpec(name="tiny"), LONG).wait(30)
    assert err.value.reason == "down" and "unetsigmoidseg serve" in err.value.hint
    assert runner.describe() is None
    deadline = time.time() + 10
    while runner.refreshing:
        assert time.time() < deadline
        time.sleep(0.05)
    assert runner.connection_error.reason == "down"


def test_plain_http_to_another_computer_is_refused_unless_allowed():
    with pytest.raises(RemoteError, match="unencrypted") as err:
        RemoteRunner("http://gpu-server.example:8765", token="t")
    assert "SSH tunnel" in err.value.hint and err.value.reason == "url"
    assert RemoteRunner("http://gpu-server.example:8765", token="t", allow_http=True).url.startswith("http://gpu")
    for bad in ("ftp://x", "http://user:pw@127.0.0.1:1", "http://127.0.0.1:1/?q=1", "http://127.0.0.1:99999"):
        with pytest.raises(RemoteError, match="URL"):
            RemoteRunner(bad, token="t")


def test_a_server_killed_mid_job_is_a_clear_error_and_poll_never_blocks(tmp_path):
    server = Server(make_models(tmp_path / "models"), tmp_path)
    try:
        server.wait_ready()
        job = server.runner(reconnect_s=3.0).submit(long_volume(), ModelSpec(name="tiny"), LONG)
        wait_for_stage(job)
        server.kill()
        longest = poll_to_the_end(job)
        with pytest.raises(RemoteError, match="Lost the connection to the server .* during the run") as err:
            job.wait(0)
        assert err.value.reason == "connection" and "Nothing was written" in err.value.hint
        assert longest < 1.0, f"poll() blocked for {longest:.3f} s"  # a network wait would take seconds
    finally:
        server.stop()


def test_a_server_restarted_mid_job_is_reported_as_a_restart(tmp_path):
    models = make_models(tmp_path / "models")
    first = Server(models, tmp_path)
    second = None
    try:
        first.wait_ready()
        job = first.runner(reconnect_s=120.0).submit(long_volume(), ModelSpec(name="tiny"), LONG)
        wait_for_stage(job)
        first.kill()
        second = Server(models, tmp_path, port=first.port, token_file=first.token_file)
        longest = poll_to_the_end(job, timeout=240)
        with pytest.raises(RemoteError, match="restarted during the run: the job was lost") as err:
            job.wait(0)
        assert err.value.reason == "restarted" and longest < 1.0
        assert not any(first.token in line for line in second.banner)  # the token is printed once, at creation
        assert any("not shown" in line for line in second.banner)
        second.wait_ready()
        assert second.temp_entries() == []  # and temp_dir() found one folder: the killed server's was swept
        assert second.runner().health()["busy"] is False
    finally:
        first.stop()
        if second is not None:
            second.stop()
