"""Runs through ``RemoteRunner`` on a real server: the same result as a local run (real CT + tiny MONAI UNet, the demo
bundle on the T1 head), cancel, two clients at once, a full queue, the Slicer logic, and the server's temp folder
empty after every job."""

import os
import sys
import threading
import time

import numpy as np
import pytest

from remote_fixtures import (
    T1_HEAD,
    ct_volume,
    long_volume,
    models_dir_fixture,  # noqa: F401 - fixture
    same_result,
    server_fixture,  # noqa: F401 - fixture
    wait_for_stage,
)
from UNetSigmoidSegLib.contract import Cleanup, ModelSpec, SegmentOptions
from UNetSigmoidSegLib.contract.messages import Progress
from UNetSigmoidSegLib.engine.files.volume import read_volume
from UNetSigmoidSegLib.errors import CancelledError, RemoteError
from UNetSigmoidSegLib.runners.inprocess import InProcessRunner

pytestmark = pytest.mark.skipif(os.name != "posix", reason="servers are stopped with POSIX signals")

LONG = SegmentOptions(device="cpu", roi_size=[16, 16, 16], overlap=0.5)  # ~3000 windows: seconds on the CPU


@pytest.fixture(autouse=True)
def nothing_left_on_the_server(server):
    yield
    health = server.wait_idle()
    # a body whose client went away mid-upload is removed when the server's handler sees the disconnect, which can
    # come a moment after the client reported its cancel: allow that moment, not a leak
    deadline = time.time() + 10
    while server.temp_entries() and time.time() < deadline:
        time.sleep(0.1)
    assert server.temp_entries() == [], "the server kept temp files of a finished job"
    assert health["busy"] is False


@pytest.mark.parametrize(
    "name, options",
    [
        ("tiny", SegmentOptions(device="cpu", roi_size=[32, 32, 16])),
        ("tiny2", SegmentOptions(device="cpu", roi_size=[32, 32, 16], threshold=[0.4, 0.6], cleanup=Cleanup(True))),
        ("tiny2", SegmentOptions(device="cpu", roi_size=[32, 32, 16], activation="softmax")),
    ],
    ids=["sigmoid-ct-normalised", "two-segments-cleanup", "softmax"],
)
def test_a_remote_run_equals_a_local_run_on_a_real_ct(server, models_dir, name, options):
    volume = ct_volume()
    local = InProcessRunner().submit(volume, ModelSpec(str(models_dir / f"{name}.pt")), options).wait()
    runner = server.runner()
    job = runner.submit(volume, ModelSpec(name=name), options)
    remote = job.wait(timeout=300)
    same_result(local, remote)
    assert local.masks.any() and (~local.masks).any()  # a real segmentation, not all one value
    assert remote.device.device == "cpu" and remote.warnings == local.warnings
    raw = volume.array.size * 4 + local.probabilities.quantized[0].size * 4 * len(local.labels)
    assert job.info.request_bytes + job.info.result_bytes < 0.5 * raw  # compact on the wire


def test_the_demo_bundle_on_the_t1_head_equals_a_local_run(server, models_dir):
    volume = read_volume(str(T1_HEAD))
    local = InProcessRunner().submit(volume, ModelSpec(str(models_dir / "BrainT1UNet")), SegmentOptions()).wait()
    remote = server.runner().submit(volume, ModelSpec(name="BrainT1UNet"), SegmentOptions()).wait(timeout=300)
    same_result(local, remote)
    assert remote.labels == ["brain"] and 1300 < remote.statistics()[0]["volume_ml"] < 1700


def test_the_server_frees_each_jobs_memory(server):
    """Ten runs of a 120×126×164 CT: the server's resident memory after the last grows by less than one run's arrays
    (~60 MB) over that after the second. Kept arrays would add ~60 MB per run (≈ 480 MB over the eight runs); the
    allocator's own jitter is ~20 MB here. On Linux the server gives the freed heap back after each job
    (``malloc_trim``); elsewhere the allocator may keep up to a job's worth."""
    runner = server.runner()
    volume = long_volume()
    options = SegmentOptions(device="cpu", roi_size=[64, 64, 64])
    rss = []
    for _ in range(10):
        runner.submit(volume, ModelSpec(name="tiny2"), options).wait(timeout=300)
        health = server.wait_idle()
        assert health["held"] == 0  # released by the client once it had the result
        rss.append(health["rss_bytes"])
    assert rss[-1] - rss[1] < (50e6 if sys.platform.startswith("linux") else 150e6), [round(r / 1e6) for r in rss]


def test_progress_is_streamed_with_every_stage(server):
    job = server.runner().submit(ct_volume(), ModelSpec(name="tiny"), SegmentOptions(device="cpu", roi_size=[16] * 3))
    stages, logs = [], []
    job.wait(timeout=300, progress=lambda s, f, m: stages.append((s, f)), log=logs.append)
    order = [s for i, (s, _f) in enumerate(stages) if i == 0 or stages[i - 1][0] != s]
    assert order[0] == "upload"
    for stage in ("upload", "load", "preprocess", "inference", "postprocess", "download"):
        assert stage in order, order
    inference = [f for s, f in stages if s == "inference"]
    assert len(inference) >= 3 and inference == sorted(inference)
    assert any(line.startswith("device: cpu") for line in logs)


def test_cancel_stops_the_server_between_windows_and_frees_the_job(server):
    runner = server.runner()
    job = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    seen = wait_for_stage(job)
    job.cancel()
    with pytest.raises(CancelledError, match="cancelled during inference"):  # at a window, not at the end
        job.wait(timeout=60, progress=lambda s, f, m: seen.append(Progress(s, f, m)))
    last = [m for m in seen if m.stage == "inference"][-1]
    assert last.fraction < 0.9 and not any(m.stage == "postprocess" for m in seen)
    health = server.wait_idle()
    assert health["busy"] is False and server.temp_entries() == []
    assert f"job {job.id[:6]} cancelled in" in server.log()


def test_cancel_while_uploading_or_queued(server):
    runner = server.runner()
    first = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    wait_for_stage(first)
    queued = runner.submit(ct_volume(), ModelSpec(name="tiny"), LONG)
    messages = []
    deadline = time.time() + 60
    while not any(isinstance(m, Progress) and m.stage == "queued" for m in messages):
        messages += queued.poll()
        assert time.time() < deadline, messages
        time.sleep(0.02)
    assert "1 job(s) ahead" in [m for m in messages if isinstance(m, Progress) and m.stage == "queued"][0].message
    queued.cancel()
    with pytest.raises(CancelledError):
        queued.wait(timeout=30)
    first.cancel()
    with pytest.raises(CancelledError):
        first.wait(timeout=60)
    early = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    early.cancel()  # before or during the upload
    with pytest.raises(CancelledError):
        early.wait(timeout=60)


def test_two_clients_at_once_see_their_queue_position_and_get_equal_results(server):
    volume = ct_volume()
    options = SegmentOptions(device="cpu", roi_size=[16, 16, 16], overlap=0.4)
    first, second = server.runner(), server.runner()
    job_a = first.submit(volume, ModelSpec(name="tiny"), options)
    wait_for_stage(job_a)  # the first client's job runs on the server: the second one must queue behind it
    job_b = second.submit(volume, ModelSpec(name="tiny"), options)
    results = {}

    def finish(name, job):
        results[name] = (job.wait(timeout=600), job.info)

    threads = [threading.Thread(target=finish, args=item) for item in (("a", job_a), ("b", job_b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    (ra, ia), (rb, ib) = results["a"], results["b"]
    same_result(ra, rb)
    assert np.array_equal(ra.probabilities.quantized, rb.probabilities.quantized)
    assert ia.max_ahead == 0 and ib.max_ahead == 1  # the second waited behind the first


def test_a_full_queue_answers_server_busy_with_the_count(server):
    runner = server.runner()
    running = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    wait_for_stage(running)
    waiting = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)  # the one queue place (--max-queue 1)
    deadline = time.time() + 60
    while waiting.info.server_job is None:
        waiting.poll()
        assert time.time() < deadline
        time.sleep(0.02)
    with pytest.raises(RemoteError, match=r"Server busy, 1 queued") as err:
        runner.submit(ct_volume(), ModelSpec(name="tiny"), LONG).wait(timeout=60)
    assert err.value.reason == "busy"
    for job in (waiting, running):
        job.cancel()
        with pytest.raises(CancelledError):
            job.wait(timeout=60)
